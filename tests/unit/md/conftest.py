"""Fixtures shared by the MD tests."""

import pytest
from ase.build import molecule


@pytest.fixture()
def pair():
    """Formic acid and a water molecule, H-bonded (8 atoms: cheap enough for tens of MACE steps)."""
    acid, water = molecule("HCOOH"), molecule("H2O")
    water.translate((0.3, 2.9, 0.2))
    atoms = acid + water
    atoms.rattle(0.05, seed=3)
    return atoms
