"""GFN2-xTB sampling of the FDH cluster: the xi restraint, MD with fixed caps, restrained windows, normal
modes, farthest-point selection and the recipe."""

import numpy as np
import pytest
from ase import Atoms

from mlff.data.cluster import load_cluster, reaction_coordinate
from mlff.data.recipe import load_recipe, region_of
from mlff.data.sampling import (XiRestraint, farthest_point_selection, normal_mode_samples, scan_xi, xi_gradient,
                                xtb_md)
from mlff.errors import MLFFError


def test_xi_gradient_matches_finite_differences():
    positions = np.random.default_rng(0).normal(size=(6, 3)) * 1.5
    xi, grad = xi_gradient(positions, [4, 1, 2])
    numeric = np.zeros_like(positions)
    for i in range(6):
        for a in range(3):
            plus, minus = positions.copy(), positions.copy()
            plus[i, a] += 1e-6
            minus[i, a] -= 1e-6
            numeric[i, a] = (xi_gradient(plus, [4, 1, 2])[0] - xi_gradient(minus, [4, 1, 2])[0]) / 2e-6
    np.testing.assert_allclose(grad, numeric, atol=1e-7)
    assert xi == pytest.approx(np.linalg.norm(positions[4] - positions[1]) - np.linalg.norm(positions[1] - positions[2]))


def test_restraint_forces_are_minus_the_energy_gradient():
    atoms = Atoms("CHC", positions=[[0, 0, 0], [1.2, 0.1, 0], [2.9, -0.2, 0.3]])
    atoms.calc = XiRestraint([0, 1, 2], xi0_A=0.4, k_eV_per_A2=20.0)
    numeric = atoms.calc.calculate_numerical_forces(atoms, d=1e-5)
    np.testing.assert_allclose(atoms.get_forces(), numeric, atol=1e-6)
    xi = reaction_coordinate(Atoms(atoms, info={"xi_atoms": [0, 1, 2]}))
    assert atoms.get_potential_energy() == pytest.approx(0.5 * 20.0 * (xi - 0.4) ** 2)
    with pytest.raises(MLFFError, match="three atoms"):
        XiRestraint([0, 1], 0.0, 1.0)


def test_farthest_point_selection_picks_the_spread_not_the_crowd():
    frames = []
    for x in [0.0, 0.01, 0.02, 0.03, 5.0, 2.5, 0.04]:  # a crowd near 0, and two outliers
        frames.append(Atoms("H3", positions=[[0, 0, 0], [1.0 + x, 0, 0], [0, 1.0, 0]]))
    chosen = farthest_point_selection(frames, 3, seed=0)
    assert len(set(chosen)) == 3 and {4, 5} <= set(chosen)
    assert chosen == farthest_point_selection(frames, 3, seed=0)  # deterministic
    with pytest.raises(MLFFError, match="cannot select 8 of 7"):
        farthest_point_selection(frames, 8)


def test_recipe_rejects_unknown_keys_and_regions_split_at_the_ts_window(tmp_path):
    with pytest.raises(MLFFError, match="unknown key 'md_temperature'"):
        load_recipe({"md_temperature": 300})
    with pytest.raises(MLFFError, match="select .* must be at least ts_min"):
        load_recipe({"select": 10, "ts_min": 20})
    assert [region_of(x) for x in (-1.1, -0.3, 0.0, 0.29, 0.31)] == ["reactant", "ts", "ts", "ts", "product"]


pytest.importorskip("tblite")


def test_xtb_md_keeps_the_caps_fixed_and_tags_frames():
    atoms = load_cluster("small", "reactant")
    frames = xtb_md(atoms, temperature_K=600.0, steps=8, every=4, seed=1)
    assert len(frames) == 2
    fixed = atoms.info["fixed"]
    for frame in frames:
        np.testing.assert_array_equal(frame.positions[fixed], atoms.positions[fixed])
        assert frame.info["xi"] == pytest.approx(reaction_coordinate(frame)) and "600 K" in frame.info["source"]
    free = np.setdiff1d(np.arange(len(atoms)), fixed)
    assert np.abs(frames[-1].positions[free] - atoms.positions[free]).max() > 1e-3  # the rest does move


def test_restrained_windows_pull_xi_towards_their_targets():
    atoms = load_cluster("small", "reactant")
    frames = scan_xi(atoms, [-0.8, -0.4], k_eV_per_A2=20.0, relax_steps=30, md_steps_per_window=0)
    xi = [f.info["xi"] for f in frames]
    start = reaction_coordinate(atoms)
    assert [f.info["window_xi0"] for f in frames] == [-0.8, -0.4]
    assert start < xi[0] < xi[1] and abs(xi[1] - (-0.4)) < abs(start - (-0.4)) / 2


def test_normal_mode_samples_move_only_free_atoms_by_thermal_amounts():
    atoms = load_cluster("small", "reactant")
    movable = [0, 1, 2, 3]  # the formate
    atoms.info["fixed"] = [i for i in range(len(atoms)) if i not in movable]
    atoms.set_constraint()
    frames = normal_mode_samples(atoms, 40, temperature_K=300.0, seed=0)
    shifts = np.array([f.positions - atoms.positions for f in frames])  # [40, N, 3]
    assert np.abs(shifts[:, atoms.info["fixed"]]).max() == 0
    rms = np.sqrt((shifts[:, movable] ** 2).sum(-1).mean())
    assert 0.02 < rms < 0.3  # Å: zero-point plus thermal amplitude of a small molecule's modes
    assert not np.allclose(shifts[0], shifts[1])
