"""Neighbour lists against the brute-force oracle (itself checked against ASE) on random cells."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list as ase_neighbor_list
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mlff.neighbors
from mlff.errors import MLFFError
from mlff.neighbors import neighbor_list
from mlff.neighbors.cell_list import cell_list_pairs

import host_kernels

KERNELS = Path(mlff.neighbors.__file__).parent / "kernels.cu"


def as_set(i, j, s):
    i, j, s = (np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x) for x in (i, j, s))
    out = sorted(zip(i.tolist(), j.tolist(), map(tuple, s.reshape(-1, 3).tolist())))
    assert len(out) == len(set(out)), "duplicate pairs"
    return out


@st.composite
def systems(draw, max_atoms=14):
    """Random triclinic cells (tiny and skewed among them), mixed pbc, atoms inside and outside the cell."""
    n = draw(st.integers(0, max_atoms))
    scale = draw(st.floats(0.8, 6.0))
    cell = np.array(draw(st.lists(st.floats(-1.0, 1.0), min_size=9, max_size=9))).reshape(3, 3)
    cell = scale * (np.eye(3) + 0.9 * cell)
    if abs(np.linalg.det(cell)) < 0.05 * scale**3:
        cell = scale * np.eye(3)
    pbc = np.array(draw(st.lists(st.booleans(), min_size=3, max_size=3)))
    if draw(st.booleans()):
        cell[~pbc] = 0.0  # open directions often come with zero cell vectors
    seed = draw(st.integers(0, 2**31 - 1))
    positions = np.random.default_rng(seed).uniform(-0.5, 1.5, size=(n, 3)) * scale * 1.5
    cutoff = draw(st.floats(0.3, 4.0))
    return positions, cell, pbc, cutoff


@pytest.fixture(scope="module")
def host_launch():
    if not host_kernels.have_compiler():
        pytest.skip("needs g++ to compile the CUDA kernels for the host")
    return host_kernels.HostLauncher(host_kernels.compile_kernels(KERNELS), "pair_search")


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(systems())
def test_brute_force_oracle_matches_ase(system):
    positions, cell, pbc, cutoff = system
    atoms = Atoms(numbers=[1] * len(positions), positions=positions, cell=cell, pbc=pbc)
    expected = as_set(*ase_neighbor_list("ijS", atoms, cutoff))
    assert as_set(*neighbor_list(positions, cell, pbc, cutoff, backend="brute")) == expected


@SETTINGS
@given(systems())
def test_vesin_backend_matches_oracle(system):
    positions, cell, pbc, cutoff = system
    expected = as_set(*neighbor_list(positions, cell, pbc, cutoff, backend="brute"))
    assert as_set(*neighbor_list(positions, cell, pbc, cutoff, backend="vesin")) == expected


@SETTINGS
@given(system=systems(max_atoms=10))
def test_cell_list_kernel_matches_oracle(system, host_launch):
    positions, cell, pbc, cutoff = system
    expected = as_set(*neighbor_list(positions, cell, pbc, cutoff, backend="brute"))
    pairs = cell_list_pairs(torch.tensor(positions), cell[None], pbc[None], torch.zeros(len(positions), dtype=torch.int64),
                            cutoff, host_launch)
    assert int(pairs.n_pairs) == len(expected)
    assert as_set(pairs.i, pairs.j, pairs.S) == expected


def test_cell_list_kernel_many_bins_and_batches(host_launch):
    """A dense periodic box (many bins per direction) next to a cluster and an empty system, in one batch."""
    rng = np.random.default_rng(5)
    cells = np.stack([np.diag([9.0, 8.0, 10.0]), np.zeros((3, 3)), np.eye(3) * 3])
    pbc = np.array([[True, True, True], [False, False, False], [True, False, True]])
    counts = [300, 40, 0]
    positions = np.concatenate([rng.uniform(0, 9, (300, 3)), rng.uniform(-2, 5, (40, 3))])
    system_idx = np.repeat(np.arange(3), counts)
    expected = as_set(*neighbor_list(positions, cells, pbc, 2.2, system_idx=system_idx, backend="brute"))
    pairs = cell_list_pairs(torch.tensor(positions), cells, pbc, torch.tensor(system_idx), 2.2, host_launch)
    assert as_set(pairs.i, pairs.j, pairs.S) == expected
    assert (system_idx[pairs.i.numpy()] == system_idx[pairs.j.numpy()]).all()
    assert torch.all(pairs.i[1:] >= pairs.i[:-1]), "pairs come sorted by i"


def test_cell_list_capacity_reports_overflow(host_launch):
    positions = torch.tensor(np.random.default_rng(0).uniform(0, 4, (30, 3)))
    args = (positions, np.eye(3)[None] * 4, np.ones((1, 3), bool), torch.zeros(30, dtype=torch.int64), 2.5, host_launch)
    full = cell_list_pairs(*args)
    short = cell_list_pairs(*args, capacity=10)
    assert int(short.n_pairs) == int(full.n_pairs) > 10
    assert short.i.shape == (10,)
    assert as_set(short.i, short.j, short.S) == as_set(full.i[:10], full.j[:10], full.S[:10])


def test_batched_never_pairs_across_systems_and_matches_single():
    rng = np.random.default_rng(1)
    cells = np.stack([np.eye(3) * 5, np.eye(3) * 6])
    positions = rng.uniform(0, 5, (50, 3))
    system_idx = np.repeat([0, 1], 25)
    i, j, s = neighbor_list(positions, cells, True, 3.0, system_idx=system_idx)
    assert (system_idx[i] == system_idx[j]).all()
    for k in range(2):
        atoms = np.flatnonzero(system_idx == k)
        single = neighbor_list(positions[atoms], cells[k], True, 3.0)
        mine = i[system_idx[i] == k]
        assert as_set(mine - atoms[0], j[system_idx[i] == k] - atoms[0], s[system_idx[i] == k]) == as_set(*single)


def test_isolated_atoms_and_empty_systems():
    i, j, s = neighbor_list(np.array([[0.0, 0, 0], [10.0, 0, 0]]), np.zeros((3, 3)), False, 3.0)
    assert len(i) == len(j) == len(s) == 0 and s.shape == (0, 3)
    i, j, s = neighbor_list(np.zeros((0, 3)), np.eye(3) * 4, True, 3.0)
    assert len(i) == 0


def test_array_types_follow_the_input():
    positions = np.random.default_rng(2).uniform(0, 4, (12, 3))
    out_np = neighbor_list(positions, np.eye(3) * 4, True, 2.0)
    out_t = neighbor_list(torch.tensor(positions), torch.eye(3) * 4, True, 2.0)
    assert all(isinstance(x, np.ndarray) and x.dtype == np.int64 for x in out_np)
    assert all(isinstance(x, torch.Tensor) and x.dtype == torch.int64 for x in out_t)
    assert as_set(*out_np) == as_set(*out_t)


@pytest.mark.parametrize("kwargs, message", [
    (dict(positions=np.zeros((3, 2))), "positions must have shape"),
    (dict(cell=np.zeros((2, 3))), "cell must have shape"),
    (dict(cutoff=-1.0), "cutoff must be positive"),
    (dict(cell=np.zeros((3, 3)), pbc=True), "degenerate"),
    (dict(positions=np.full((3, 3), np.nan)), "NaN"),
    (dict(backend="magic"), "unknown neighbour-list backend"),
])
def test_bad_input_gives_one_clear_error(kwargs, message):
    args = dict(positions=np.zeros((3, 3)), cell=np.eye(3) * 5, pbc=True, cutoff=2.0) | kwargs
    backend = args.pop("backend", "auto")
    with pytest.raises(MLFFError, match=message):
        neighbor_list(args["positions"], args["cell"], args["pbc"], args["cutoff"], backend=backend)
