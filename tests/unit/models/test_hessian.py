"""The Hessian by double backward equals central finite differences of the forces (a committee, float64), is
symmetric, and a partial Hessian is the full one's block."""

import numpy as np
import pytest
from ase.build import molecule

from mlff.calculator import MLFFCalculator
from mlff.models.potential import hessian


@pytest.fixture()
def water_dimer():
    a, b = molecule("H2O"), molecule("H2O")
    b.translate((0.2, 2.8, 0.1))
    atoms = a + b
    atoms.rattle(0.03, seed=2)
    return atoms


def _finite_difference(atoms, potential, h=1e-4):
    calc = MLFFCalculator(potential, device="cpu", dtype="float64")
    n = len(atoms)
    out = np.zeros((3 * n, 3 * n))
    for k in range(3 * n):
        column = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[k // 3, k % 3] += sign * h
            moved.calc = calc
            column.append(-moved.get_forces().reshape(-1))
        out[:, k] = (column[0] - column[1]) / (2 * h)
    return out


def test_the_autograd_hessian_is_the_finite_difference_one_and_symmetric(water_dimer, committee_potential):
    exact = hessian(committee_potential, water_dimer)
    assert exact.shape == (18, 18)
    np.testing.assert_allclose(exact, exact.T, atol=1e-12)
    numeric = _finite_difference(water_dimer, committee_potential)
    scale = np.abs(exact).max()
    assert scale > 0.1
    np.testing.assert_allclose(exact, numeric, atol=1e-5 * scale, rtol=0)
    part = hessian(committee_potential, water_dimer, indices=[1, 4])
    block = exact.reshape(6, 3, 6, 3)[[1, 4]][:, :, [1, 4]].reshape(6, 6)
    np.testing.assert_allclose(part, block, atol=1e-10 * scale)
