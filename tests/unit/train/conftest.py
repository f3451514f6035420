"""Tiny labelled datasets for the training tests: small molecules rattled and labelled with ASE's EMT."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.emt import EMT

from mlff.data import Dataset, make_record

MOLECULES = ["CH4", "H2O", "NH3", "CO", "CH3OH", "HCOOH"]
REGIONS = ["reactant", "ts", "product"]


def emt_records(n: int, seed: int = 0, rattle_A: float = 0.08) -> list:
    """``n`` rattled small molecules with EMT energies/forces, region tags and a reaction coordinate xi."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        atoms = molecule(MOLECULES[k % len(MOLECULES)])
        atoms.positions += rng.normal(0.0, rattle_A, atoms.positions.shape)
        atoms.calc = EMT()
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = None
        out.append(make_record(atoms, energy=e, forces=f, tags=[REGIONS[k % 3]], xi=float(k % 7) / 7,
                               source=f"emt test {seed}:{k}"))
    return out


def scan_records(n: int = 6) -> list:
    """A held-out 'scan': water with one O-H bond stretched, tagged holdout-scan, xi = bond length."""
    out = []
    for k in range(n):
        atoms = molecule("H2O")
        d = 0.95 + 0.05 * k
        vec = atoms.positions[1] - atoms.positions[0]
        atoms.positions[1] = atoms.positions[0] + vec / np.linalg.norm(vec) * d
        atoms.calc = EMT()
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = None
        out.append(make_record(atoms, energy=e, forces=f, tags=["holdout-scan"], xi=d, scan="OH-stretch"))
    return out


@pytest.fixture(scope="session")
def emt_dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("train-data") / "emt.h5"
    ds = Dataset.create(path, description="EMT test molecules")
    ds.append(emt_records(36) + scan_records())
    return path
