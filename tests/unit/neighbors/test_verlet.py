"""The Verlet list: same pairs as a fresh list at every step, rebuilt only when needed, never overflowing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import mlff.neighbors
from mlff.neighbors import VerletNeighborList, neighbor_list

import host_kernels
from test_neighbor_list import as_set

CELL = np.array([[6.0, 0.0, 0.0], [1.0, 6.0, 0.0], [0.5, -0.7, 6.2]])


def walk(n_steps, step, seed=0):
    rng = np.random.default_rng(seed)
    positions = rng.uniform(0, 6, (40, 3))
    for _ in range(n_steps):
        positions = positions + rng.normal(scale=step, size=positions.shape)
        yield torch.tensor(positions)


@pytest.mark.parametrize("backend", ["vesin", "cupy-host"])
def test_verlet_list_equals_fresh_list_on_a_random_walk(backend):
    launch = None
    if backend == "cupy-host":
        if not host_kernels.have_compiler():
            pytest.skip("needs g++")
        kernels = Path(mlff.neighbors.__file__).parent / "kernels.cu"
        launch = host_kernels.HostLauncher(host_kernels.compile_kernels(kernels), "pair_search")
    verlet = VerletNeighborList(2.5, skin=0.6, backend="cupy" if launch else "vesin", launch=launch)
    for positions in walk(25, 0.03):
        got = verlet.update(positions, CELL[None], np.ones((1, 3), bool))
        assert as_set(*got) == as_set(*neighbor_list(positions.numpy(), CELL, True, 2.5, backend="brute"))
    assert 1 <= verlet.n_builds < 25, "the skin saves rebuilds"


def test_rebuild_only_past_half_the_skin():
    verlet = VerletNeighborList(2.0, skin=1.0, backend="vesin")
    positions = torch.tensor(np.random.default_rng(3).uniform(0, 6, (20, 3)))
    pbc = np.ones((1, 3), bool)
    verlet.update(positions, CELL[None], pbc)
    moved = positions.clone()
    moved[4, 0] += 0.49
    verlet.update(moved, CELL[None], pbc)
    assert verlet.n_builds == 1
    moved[4, 0] += 0.02
    verlet.update(moved, CELL[None], pbc)
    assert verlet.n_builds == 2
    verlet.update(moved, CELL[None] * 1.01, pbc)
    assert verlet.n_builds == 3, "a changed cell always rebuilds"


def test_overflow_grows_the_capacity_and_keeps_every_pair():
    if not host_kernels.have_compiler():
        pytest.skip("needs g++")
    kernels = Path(mlff.neighbors.__file__).parent / "kernels.cu"
    launch = host_kernels.HostLauncher(host_kernels.compile_kernels(kernels), "pair_search")
    verlet = VerletNeighborList(2.0, skin=0.0, backend="cupy", launch=launch)
    pbc = np.ones((1, 3), bool)
    sparse = torch.tensor(np.random.default_rng(0).uniform(0, 6, (10, 3)))
    verlet.update(sparse, CELL[None], pbc)
    first_capacity = verlet.capacity
    dense = torch.tensor(np.random.default_rng(1).uniform(0, 6, (60, 3)))
    got = verlet.update(dense, CELL[None], pbc)
    assert verlet.n_overflows >= 1 and verlet.capacity > first_capacity
    assert as_set(*got) == as_set(*neighbor_list(dense.numpy(), CELL, True, 2.0, backend="brute"))
