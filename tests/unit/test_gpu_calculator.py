"""The calculator on CUDA (CuPy lists, cuEquivariance) against the CPU reference; skipped without a GPU."""

from __future__ import annotations

import numpy as np
import pytest

from mlff import MLFFCalculator, build_potential
from mlff.data import water_box

pytestmark = pytest.mark.gpu


def test_cuda_calculator_matches_cpu(small_potential, cluster, periodic_box):
    for atoms in (cluster, periodic_box):
        cpu, gpu = atoms.copy(), atoms.copy()
        cpu.calc = MLFFCalculator(small_potential, device="cpu")
        gpu.calc = MLFFCalculator(small_potential, device="cuda")
        assert gpu.get_potential_energy() == pytest.approx(cpu.get_potential_energy(), rel=1e-10)
        np.testing.assert_allclose(gpu.get_forces(), cpu.get_forces(), atol=1e-9)


def test_cueq_matches_e3nn_in_float64(small_config):
    atoms = water_box(100, seed=1)
    config = small_config | {"species": ["H", "O"], "E0s": None}
    ref, fast = atoms.copy(), atoms.copy()
    ref.calc = MLFFCalculator(build_potential(config, seed=2), device="cuda")
    fast.calc = MLFFCalculator(build_potential(config, seed=2), device="cuda", cueq=True)
    assert fast.get_potential_energy() == pytest.approx(ref.get_potential_energy(), rel=1e-8)
    np.testing.assert_allclose(fast.get_forces(), ref.get_forces(), atol=1e-7)
    np.testing.assert_allclose(fast.get_stress(), ref.get_stress(), atol=1e-8)
