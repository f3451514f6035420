"""Shared fixtures: small potentials and structures that keep the suite fast on a 2-core CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

import mlff.models._mace  # noqa: F401  (mace before e3nn)


def _cuda_with_cupy() -> bool:
    from mlff.neighbors.cupy_backend import cupy_available

    return torch.cuda.is_available() and cupy_available()


def pytest_collection_modifyitems(config, items):
    if _cuda_with_cupy():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU with CuPy")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


SMALL = {"species": ["H", "C", "N", "O"], "r_max": 4.0, "hidden_irreps": "8x0e+8x1o", "max_ell": 2,
         "correlation": 2, "MLP_irreps": "8x0e", "radial_MLP": [16, 16], "avg_num_neighbors": 8.0,
         "E0s": {"H": -13.6, "C": -1029.0, "N": -1484.0, "O": -2041.0}}


@pytest.fixture(scope="session")
def small_config() -> dict:
    return dict(SMALL)


@pytest.fixture(scope="session")
def small_potential():
    from mlff import build_potential

    return build_potential(SMALL, seed=1)


@pytest.fixture(scope="session")
def committee_potential():
    from mlff import build_potential

    return build_potential(SMALL, committee=3, seed=7)


@pytest.fixture()
def cluster() -> Atoms:
    """An FDH-like molecular cluster (no cell): formic acid, acetamide (Asn side chain), water and pyridine, H-bonded."""
    parts = [(molecule("HCOOH"), (0.0, 0.0, 0.0)), (molecule("CH3CONH2"), (3.2, 0.4, 0.0)),
             (molecule("H2O"), (0.3, 2.9, 0.2)), (molecule("C5H5N"), (0.5, -1.0, 3.4))]
    atoms = Atoms()
    for part, shift in parts:
        part.translate(shift)
        atoms += part
    atoms.rattle(0.05, seed=3)
    return atoms


@pytest.fixture()
def periodic_box() -> Atoms:
    """A skewed triclinic periodic cell of C, N, O and H atoms kept at least 1 Å apart."""
    rng = np.random.default_rng(11)
    cell = np.array([[7.0, 0.0, 0.0], [1.8, 6.5, 0.0], [-1.2, 0.9, 6.8]])
    frac = []
    while len(frac) < 30:
        trial = rng.random(3)
        d = [np.linalg.norm(((trial - f + 0.5) % 1.0 - 0.5) @ cell) for f in frac]
        if not d or min(d) > 1.0:
            frac.append(trial)
    numbers = rng.choice([1, 6, 7, 8], size=len(frac))
    return Atoms(numbers=numbers, scaled_positions=np.array(frac), cell=cell, pbc=True)
