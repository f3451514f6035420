"""Potential physics: autograd forces and stress against finite differences, invariances, batching, committees."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mlff import MLFFCalculator, MLFFError, build_potential
from mlff.models import batch_atoms


def energy_forces(potential, atoms):
    out = potential.evaluate(batch_atoms([atoms], potential.cutoff))
    return float(out["energy"][0]), out["forces"].numpy()


def test_forces_match_finite_differences_on_the_cluster(small_potential, cluster):
    cluster.calc = MLFFCalculator(small_potential, device="cpu")
    numeric = cluster.calc.calculate_numerical_forces(cluster, d=1e-4)
    forces = cluster.get_forces()
    assert np.abs(forces).max() > 1e-3, "an untrained model still has non-zero forces"
    np.testing.assert_allclose(forces, numeric, atol=1e-6)


def test_forces_and_stress_match_finite_differences_in_a_triclinic_cell(small_potential, periodic_box):
    periodic_box.calc = MLFFCalculator(small_potential, device="cpu")
    np.testing.assert_allclose(periodic_box.get_forces(),
                               periodic_box.calc.calculate_numerical_forces(periodic_box, d=1e-4), atol=1e-6)
    stress = periodic_box.get_stress()
    assert np.abs(stress).max() > 1e-5
    np.testing.assert_allclose(stress, periodic_box.calc.calculate_numerical_stress(periodic_box, d=1e-5), atol=1e-7)


def test_rotation_translation_and_permutation_invariance(small_potential, cluster):
    energy, forces = energy_forces(small_potential, cluster)
    rotation = Rotation.from_euler("xyz", [0.3, -1.1, 2.0])
    moved = cluster.copy()
    moved.positions = rotation.apply(cluster.positions) + np.array([4.0, -2.0, 7.5])
    e2, f2 = energy_forces(small_potential, moved)
    assert e2 == pytest.approx(energy, abs=1e-9)
    np.testing.assert_allclose(f2, rotation.apply(forces), atol=1e-9)
    perm = np.random.default_rng(0).permutation(len(cluster))
    e3, f3 = energy_forces(small_potential, cluster[perm])
    assert e3 == pytest.approx(energy, abs=1e-9)
    np.testing.assert_allclose(f3, forces[perm], atol=1e-9)


def test_periodic_image_invariance(small_potential, periodic_box):
    """Wrapping atoms back into the cell, or moving one by a lattice vector, changes nothing."""
    energy, forces = energy_forces(small_potential, periodic_box)
    shifted = periodic_box.copy()
    shifted.positions[3] += periodic_box.cell[1] - 2 * periodic_box.cell[2]
    e2, f2 = energy_forces(small_potential, shifted)
    assert e2 == pytest.approx(energy, abs=1e-9)
    np.testing.assert_allclose(f2, forces, atol=1e-9)


def test_batched_equals_single(small_potential, cluster, periodic_box):
    graph = batch_atoms([cluster, periodic_box, cluster[:5]], small_potential.cutoff)
    out = small_potential.evaluate(graph, stress=True)
    offsets = np.cumsum([0, len(cluster), len(periodic_box), 5])
    for k, atoms in enumerate([cluster, periodic_box, cluster[:5]]):
        energy, forces = energy_forces(small_potential, atoms)
        assert float(out["energy"][k]) == pytest.approx(energy, abs=1e-9)
        np.testing.assert_allclose(out["forces"][offsets[k]:offsets[k + 1]].numpy(), forces, atol=1e-9)
    single = small_potential.evaluate(batch_atoms([periodic_box], small_potential.cutoff), stress=True)
    np.testing.assert_allclose(out["stress"][1].numpy(), single["stress"][0].numpy(), atol=1e-10)


def test_committee_mean_and_spread(committee_potential, cluster):
    out = committee_potential.evaluate(batch_atoms([cluster], committee_potential.cutoff))
    members = out["energy_members"][:, 0].numpy()
    assert len(members) == 3 and np.ptp(members) > 0, "members differ (different seeds)"
    assert float(out["energy"][0]) == pytest.approx(members.mean())
    assert float(out["energy_std"][0]) == pytest.approx(members.std())
    deviation = out["forces_members"] - out["forces"]
    np.testing.assert_allclose(out["forces_std"].numpy(), deviation.pow(2).sum(-1).mean(0).sqrt().numpy())


def test_float32_agrees_with_float64(small_config, cluster):
    p64 = build_potential(small_config, seed=3)
    p32 = build_potential(small_config, seed=3, dtype="float32")
    e64, f64 = energy_forces(p64, cluster)
    e32, f32 = energy_forces(p32, cluster)
    assert e32 == pytest.approx(e64, rel=1e-5)
    np.testing.assert_allclose(f32, f64, atol=1e-3 * np.abs(f64).max())


def test_unknown_species_and_bad_configs_are_clear_errors(small_potential, small_config, cluster):
    cluster.symbols[0] = "S"
    with pytest.raises(MLFFError, match="species S not in this potential"):
        small_potential.evaluate(batch_atoms([cluster], small_potential.cutoff))
    with pytest.raises(MLFFError, match="unknown key 'hidden'"):
        build_potential(small_config | {"hidden": "8x0e"})
    with pytest.raises(MLFFError, match="unknown chemical species 'Xx'"):
        build_potential(small_config | {"species": ["H", "Xx"]})
    with pytest.raises(MLFFError, match="E0s has no value for O"):
        build_potential(small_config | {"E0s": {"H": 0.0, "C": 0.0, "N": 0.0}})
    with pytest.raises(MLFFError, match="unknown interaction"):
        build_potential(small_config | {"interaction": "Magic"})
