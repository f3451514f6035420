"""The ASE calculator: plugin registration, neighbour-list reuse, committee results, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.md.verlet import VelocityVerlet

from mlff import MLFFCalculator, MLFFError, save_potential


def test_registered_as_an_ase_plugin():
    from ase._4.plugins import PluginCollection

    plugins = {p.name: p for p in PluginCollection.from_entry_points()}
    assert "mlff" in plugins
    assert plugins["mlff"].implementation is MLFFCalculator


def test_loads_a_potential_directory_and_reports_committee_spread(committee_potential, cluster, tmp_path):
    save_potential(committee_potential, tmp_path / "pot")
    cluster.calc = MLFFCalculator(str(tmp_path / "pot"), device="cpu")
    energy = cluster.get_potential_energy()
    results = cluster.calc.results
    assert results["free_energy"] == energy
    assert results["energies"].shape == (3,) and results["energy_std"] == pytest.approx(results["energies"].std())
    assert results["forces_std"].shape == (len(cluster),) and (results["forces_std"] > 0).all()


def test_neighbour_list_is_reused_during_md(small_potential, cluster):
    """Short NVE: the list is rebuilt only after atoms moved more than skin/2, and energy is conserved."""
    cluster.calc = MLFFCalculator(small_potential, device="cpu", skin=1.0)
    cluster.set_velocities(np.random.default_rng(0).normal(scale=0.01, size=(len(cluster), 3)))
    dyn = VelocityVerlet(cluster, timestep=0.25 * 0.09822694788464063)  # 0.25 fs
    start = cluster.get_total_energy()
    dyn.run(20)
    assert cluster.calc.neighbors.n_builds < 10
    assert abs(cluster.get_total_energy() - start) < 1e-3


def test_stress_needs_a_3d_periodic_cell(small_potential, cluster):
    from ase.calculators.calculator import PropertyNotImplementedError

    cluster.calc = MLFFCalculator(small_potential, device="cpu")
    with pytest.raises(PropertyNotImplementedError):
        cluster.get_stress()


def test_bad_device_and_missing_potential_are_clear_errors(small_potential):
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(MLFFError, match="no CUDA GPU"):
            MLFFCalculator(small_potential, device="cuda")
        with pytest.raises(MLFFError, match="cueq=True needs a CUDA device"):
            MLFFCalculator(small_potential, device="cpu", cueq=True)
    with pytest.raises(MLFFError, match="not a potential directory"):
        MLFFCalculator("/no/such/potential", device="cpu")


def test_the_callers_potential_is_never_converted(small_potential, cluster):
    assert small_potential.dtype == torch.float64
    cluster.calc = MLFFCalculator(small_potential, device="cpu", dtype="float32")
    energy32 = cluster.get_potential_energy()
    assert small_potential.dtype == torch.float64 and cluster.calc.potential.dtype == torch.float32
    same = MLFFCalculator(small_potential, device="cpu")
    assert same.potential is small_potential  # nothing to convert: shared, no copy
    atoms = cluster.copy()
    atoms.calc = same
    assert atoms.get_potential_energy() == pytest.approx(energy32, rel=1e-6)  # float32 of ~2e4 eV
