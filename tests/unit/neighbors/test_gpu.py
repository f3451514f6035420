"""GPU neighbour lists (CuPy kernels) against the CPU reference; skipped without CUDA and CuPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlff.neighbors import VerletNeighborList, neighbor_list

from test_neighbor_list import as_set

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("seed", range(20))
def test_cupy_matches_vesin_on_random_systems(seed):
    rng = np.random.default_rng(seed)
    cell = rng.normal(size=(3, 3)) + np.eye(3) * rng.uniform(2, 12)
    pbc = rng.random(3) < 0.6
    positions = rng.uniform(-0.3, 1.3, (int(rng.integers(1, 400)), 3)) @ cell
    cutoff = float(rng.uniform(1.0, 6.0))
    expected = as_set(*neighbor_list(positions, cell, pbc, cutoff, backend="vesin"))
    got = neighbor_list(torch.tensor(positions, device="cuda"), cell, pbc, cutoff)
    assert got[0].is_cuda
    assert as_set(*got) == expected


def test_cupy_in_cupy_out_and_float32():
    import cupy

    positions = np.random.default_rng(0).uniform(0, 10, (500, 3))
    got = neighbor_list(cupy.asarray(positions, dtype=cupy.float32), np.eye(3) * 10, True, 4.0)
    assert all(isinstance(x, cupy.ndarray) for x in got)
    assert as_set(*(x.get() for x in got)) == as_set(*neighbor_list(positions, np.eye(3) * 10, True, 4.0))


def test_gpu_batch_matches_cpu_batch():
    rng = np.random.default_rng(4)
    counts = [200, 0, 64, 1]
    positions = rng.uniform(0, 8, (sum(counts), 3))
    system_idx = np.repeat(np.arange(4), counts)
    cells = np.stack([np.eye(3) * 8, np.eye(3) * 3, np.zeros((3, 3)), np.eye(3)])
    pbc = np.array([[1, 1, 1], [1, 1, 1], [0, 0, 0], [1, 0, 1]], bool)
    cpu = neighbor_list(positions, cells, pbc, 3.5, system_idx=system_idx)
    gpu = neighbor_list(torch.tensor(positions, device="cuda"), cells, pbc, 3.5, system_idx=torch.tensor(system_idx, device="cuda"))
    assert as_set(*gpu) == as_set(*cpu)


def test_gpu_verlet_list_on_a_random_walk():
    rng = np.random.default_rng(9)
    cell = np.eye(3) * 12
    positions = rng.uniform(0, 12, (800, 3))
    verlet = VerletNeighborList(4.0, skin=0.5)
    for _ in range(30):
        positions += rng.normal(scale=0.02, size=positions.shape)
        got = verlet.update(torch.tensor(positions, device="cuda"), cell[None], np.ones((1, 3), bool))
        assert as_set(*got) == as_set(*neighbor_list(positions, cell, True, 4.0))
    assert verlet.n_builds < 30
