"""CVs and biases: forces are minus the gradient of the bias energy, exactly zero where they must be, and the
biased model returns physical + bias with both parts kept apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from mlff.bias.cv import Coordinate, Distance, DistanceDifference, LinearCombination, cv_from_spec
from mlff.bias.metad import MetaD
from mlff.bias.model import BiasCalculator, BiasedModel, Biases
from mlff.bias.restraint import HarmonicRestraint, Wall
from mlff.errors import MLFFError
from mlff.md import HarmonicModel, state_from_atoms


def _systems(n_systems=3, n_atoms=6, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_systems):
        atoms = Atoms("H" * n_atoms, positions=rng.normal(size=(n_atoms, 3)) * 1.5)
        atoms.info["xi_atoms"] = [0, 2, 4]
        out.append(atoms)
    return out


def _metad(n, shared=False):
    metad = MetaD(sigma=0.3, height_eV=0.05, pace=1, biasfactor=6.0, temperature_K=300.0, n_systems=n, shared=shared,
                  capacity=20)
    for k, s in enumerate(np.linspace(-1.0, 1.0, 5)):  # a few hills at known places
        metad.after_step(k + 1, torch.full((n,), float(s), dtype=torch.float64) + 0.1 * torch.arange(n), 0.5 * k)
    return metad


def _bias_sets(n):
    xi = DistanceDifference.xi([{"xi_atoms": [0, 2, 4]}] * n)
    combo = LinearCombination([(0.7, Distance([0, 1])), (-0.3, DistanceDifference([1, 2, 3])), (0.2, Coordinate(5, 2))])
    restraint = HarmonicRestraint(np.linspace(-0.5, 0.5, n), np.linspace(2.0, 6.0, n))
    return {"xi restraint + wall": Biases(xi, [restraint, Wall(0.2, 3.0, side="upper")]),
            "combination + metad": Biases(combo, [_metad(n), Wall(-0.1, 2.0, side="lower", exp=4)]),
            "xi + shared metad": Biases(DistanceDifference.xi([{"xi_atoms": [0, 2, 4]}] * n), [_metad(n, shared=True)])}


@pytest.mark.parametrize("name", ["xi restraint + wall", "combination + metad", "xi + shared metad"])
def test_bias_forces_are_minus_finite_differences(name):
    systems = _systems()
    state = state_from_atoms(systems)
    biases = _bias_sets(len(systems))[name].bind([len(a) for a in systems])
    energy, forces, _ = biases.evaluate(state.positions)
    assert energy.abs().max() > 1e-3  # the bias acts
    h = 1e-5
    for atom in range(len(state.positions)):
        for axis in range(3):
            plus, minus = state.positions.clone(), state.positions.clone()
            plus[atom, axis] += h
            minus[atom, axis] -= h
            fd = -(biases.evaluate(plus)[0].sum() - biases.evaluate(minus)[0].sum()) / (2 * h)
            assert float(forces[atom, axis]) == pytest.approx(float(fd), abs=1e-7)


def test_spectators_and_other_systems_get_exactly_zero_force():
    systems = _systems(n_systems=3, n_atoms=6)
    state = state_from_atoms(systems)
    # only system 1 is restrained (springs 0 elsewhere): its atoms 0, 2, 4 feel a force, nothing else does
    biases = Biases(DistanceDifference.xi([a.info for a in systems]),
                    [HarmonicRestraint([3.0, 3.0, 3.0], [0.0, 5.0, 0.0])]).bind([6, 6, 6])
    _, forces, _ = biases.evaluate(state.positions)
    moving = torch.zeros(18, dtype=torch.bool)
    moving[[6, 8, 10]] = True
    assert (forces[~moving] == 0).all()
    assert (forces[moving].norm(dim=-1) > 0).all()
    assert torch.allclose(forces[moving].sum(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)  # no net force


def test_biased_model_total_is_physical_plus_bias():
    systems = _systems()
    state = state_from_atoms(systems)
    physical = HarmonicModel(state.positions.clone() + 0.1, 1.5)
    biases = _bias_sets(3)["xi restraint + wall"].bind([6, 6, 6])
    out = BiasedModel(physical, biases)(state)
    ref = physical(state)
    assert torch.equal(out["physical_energy"], ref["energy"]) and torch.equal(out["physical_forces"], ref["forces"])
    assert torch.equal(out["energy"], out["physical_energy"] + out["bias_energy"])
    assert torch.equal(out["forces"], out["physical_forces"] + out["bias_forces"])
    e, f, s = biases.evaluate(state.positions)
    assert torch.equal(out["bias_energy"], e) and torch.equal(out["bias_forces"], f) and torch.equal(out["cv"], s)


def test_bias_calculator_adds_bias_to_a_physical_calculator():
    from ase.calculators.emt import EMT

    atoms = Atoms("Cu4", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0], [0, 0, 2.6]])
    biases = Biases(Distance([0, 3]), [HarmonicRestraint([2.0], [4.0])]).bind([4])
    atoms.calc = BiasCalculator(biases, EMT())
    e, f = atoms.get_potential_energy(), atoms.get_forces()
    ref = atoms.copy()
    ref.calc = EMT()
    d = atoms.get_distance(0, 3)
    assert e == pytest.approx(ref.get_potential_energy() + 2.0 * (d - 2.0) ** 2, abs=1e-12)
    assert atoms.calc.results["bias_energy"] == pytest.approx(2.0 * (d - 2.0) ** 2, abs=1e-12)
    assert np.allclose(f - ref.get_forces(), atoms.calc.results["bias_forces"], atol=1e-12)
    assert np.allclose(atoms.calc.results["bias_forces"][[1, 2]], 0.0)


def test_xi_restraint_matches_the_analytic_formula():
    from mlff.data.cluster import load_cluster
    from mlff.data.sampling import XiRestraint, xi_gradient

    atoms = load_cluster("small", "reactant")
    atoms.rattle(0.1, seed=4)
    for xi0, k in ((0.3, 7.5), (-1.2, 20.0), (0.0, 0.0)):
        atoms.calc = XiRestraint(atoms.info["xi_atoms"], xi0, k)
        xi, grad = xi_gradient(atoms.positions, atoms.info["xi_atoms"])
        assert atoms.get_potential_energy() == pytest.approx(0.5 * k * (xi - xi0) ** 2, abs=1e-12)
        assert np.abs(atoms.get_forces() - (-k * (xi - xi0) * grad)).max() < 1e-12


def test_cv_atom_outside_its_system_is_one_clear_error():
    with pytest.raises(MLFFError, match="atom 7 is outside system 1, which has 5 atoms"):
        Distance([[0, 1], [0, 7]]).bind([8, 5])
    with pytest.raises(MLFFError, match="system 0 has no info\\['xi_atoms'\\]"):
        DistanceDifference.xi([{}])
    with pytest.raises(MLFFError, match="needs 3 atom indices"):
        cv_from_spec({"kind": "difference", "atoms": [0, 1]}, [{}])
    with pytest.raises(MLFFError, match="unknown key 'atom'"):
        cv_from_spec({"kind": "distance", "atom": [0, 1]}, [{}])
