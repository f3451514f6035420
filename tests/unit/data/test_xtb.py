"""GFN2-xTB labels (tblite): the labeller, labels kept from the sampling MD, and the resumable campaign."""

import numpy as np
import pytest
from ase.build import molecule

from mlff.data import Dataset
from mlff.data.campaign import done_segments, load_campaign, merge_parts, plan, run_segments
from mlff.data.cluster import load_cluster
from mlff.data.labelers import XTBLabeler, make_labeler
from mlff.data.sampling import XiRestraint, xtb_md
from mlff.errors import MLFFError

pytest.importorskip("tblite")

POOL = "data/fdh-cluster/pool_small.h5"


def test_xtb_forces_are_minus_the_energy_gradient_and_the_level_says_xtb():
    atoms = molecule("H2O")
    atoms.positions[0] += [0.05, -0.03, 0.02]
    labeler = make_labeler({"backend": "xtb"})
    result = labeler.compute(atoms)
    assert result.converged
    numeric = np.zeros((3, 3))
    for i in range(3):
        for a in range(3):
            energies = []
            for sign in (1, -1):
                shifted = atoms.copy()
                shifted.positions[i, a] += sign * 1e-4
                energies.append(labeler.compute(shifted).energy_eV)
            numeric[i, a] = -(energies[0] - energies[1]) / 2e-4
    np.testing.assert_allclose(result.forces_eV_A, numeric, atol=2e-4)
    level = labeler.level()
    assert level["method"] == "GFN2-xTB" and level["code"] == "tblite" and "eps=4" in level["solvent"]
    gas = XTBLabeler(solvent_eps=None)
    assert gas.level()["solvent"].startswith("none") and gas.compute(atoms).energy_eV != result.energy_eV
    with pytest.raises(MLFFError, match="unknown key 'basis'"):
        make_labeler({"backend": "xtb", "basis": "def2-svp"})


def test_labels_kept_from_restrained_md_are_xtb_alone_at_that_geometry():
    atoms = load_cluster("small", "reactant")
    restraint = XiRestraint(atoms.info["xi_atoms"], -1.0, 10.0)
    frames = xtb_md(atoms, temperature_K=300, steps=8, every=4, seed=3, restraint=restraint, labels=True)
    labeler = XTBLabeler()
    for frame in frames:
        fresh = labeler.compute(frame)
        assert frame.get_potential_energy() == pytest.approx(fresh.energy_eV, abs=1e-5)  # no restraint energy
        np.testing.assert_allclose(frame.get_forces(), fresh.forces_eV_A, atol=2e-3)  # SCF restart vs fresh
        assert frame.info["provenance"]["method"] == "GFN2-xTB"


def _recipe(tmp_path, **overrides):
    return load_campaign({"out": str(tmp_path / "xtb.h5"), "pool": POOL, "segment_steps": 8, "every": 4,
                          "free_segments": 1, "free_temperatures_K": [300.0], "window_from_A": -0.1,
                          "window_to_A": 0.1, "window_segments": 2, "window_temperatures_K": [300.0],
                          "normal_modes": 0, "rattled": 4, **overrides})


def test_campaign_plan_is_stratified_and_starts_from_distinct_geometries(tmp_path):
    recipe = _recipe(tmp_path, window_segments=5, window_temperatures_K=[300.0, 450.0], free_segments=10)
    segments = plan(recipe, Dataset(POOL).infos())
    windows = [s for s in segments if s.kind == "window"]
    for centre in (-0.1, 0.0, 0.1):
        mine = [s for s in windows if s.xi0_A == pytest.approx(centre)]
        assert len(mine) == 10 and sum(s.split == "test" for s in mine) == 1  # 10% per stratum, whole segments
    starts = [s.start for s in segments if s.start >= 0]
    assert len(starts) == len(set(starts))
    assert segments[0].kind == "holdout" and plan(recipe, Dataset(POOL).infos()) == segments


def test_campaign_cut_and_shared_equals_one_serial_run(tmp_path, monkeypatch):
    serial = _recipe(tmp_path / "serial")
    run_segments(serial, log=lambda m: None)
    merge_parts(serial)
    shared = _recipe(tmp_path / "shared")
    appends = {"n": 0}
    original = Dataset.append

    def crash_on_second(self, *args, **kwargs):  # a worker killed while saving its second segment
        appends["n"] += 1
        if appends["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Dataset, "append", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_segments(shared, worker=1, workers=2, log=lambda m: None)
    monkeypatch.setattr(Dataset, "append", original)
    assert len(done_segments(sorted(tmp_path.glob("shared/*.parts/*.h5")))) == 1
    assert run_segments(shared, worker=1, workers=2, time_limit_s=0.0, log=lambda m: None) == 0
    run_segments(shared, worker=0, workers=2, log=lambda m: None)
    run_segments(shared, worker=1, workers=2, log=lambda m: None)
    merge_parts(shared)
    a, b = Dataset(serial.out), Dataset(shared.out)
    assert len(a) == len(b) == 15 + 2 * 2 + 3 * 2 * 2 + 4  # holdout, free, windows, rattled
    infos = b.infos()
    assert [(i["segment"], i["source"], i["split"]) for i in a.infos()] == [(i["segment"], i["source"], i["split"])
                                                                            for i in infos]
    # bit for bit with one OpenMP thread (the workflow's default); several threads sum in a varying order
    np.testing.assert_allclose(a.column("energy"), b.column("energy"), rtol=0, atol=1e-6)
    for ra, rb in zip(a.read(), b.read()):
        np.testing.assert_allclose(ra.positions, rb.positions, rtol=0, atol=1e-6)
    assert {i["split"] for i in infos} >= {"holdout", "train", "test"}
    assert all(i["split"] == "holdout" for i in infos if "holdout-scan" in i.get("tags", []))
    assert run_segments(shared, log=lambda m: None) == 0  # nothing left: a resume repeats nothing


def test_chained_windows_walk_outward_from_the_pool_and_test_whole_chains(tmp_path):
    recipe = _recipe(tmp_path, free_segments=0, rattled=0, holdout=False, window_start="chain", window_from_A=-3.6,
                     window_to_A=-3.2, window_spacing_A=0.2, window_segments=2, window_k_eV_per_A2=2.0,
                     tags=["far"])
    segments = plan(recipe, Dataset(POOL).infos())
    assert [s.kind for s in segments] == ["window"] * 6
    assert [s.xi0_A for s in segments[:3]] == pytest.approx([-3.2, -3.4, -3.6])  # nearest the pool first
    assert [(s.start >= 0, s.after) for s in segments] == [(True, -1), (False, 0), (False, 1),
                                                           (True, -1), (False, 3), (False, 4)]
    assert len({s.split for s in segments[:3]}) == len({s.split for s in segments[3:]}) == 1  # whole chains
    assert {s.split for s in segments} == {"train", "test"}
    with pytest.raises(MLFFError, match="one worker"):
        run_segments(recipe, worker=0, workers=2, log=lambda m: None)
    assert run_segments(recipe, log=lambda m: None) == 6
    merge_parts(recipe)
    records = Dataset(recipe.out).read()
    infos = [r.info for r in records]
    assert len(records) == 6 * 2 and {i["segment"] for i in infos} == set(range(6))
    for s in segments[1:3] + segments[4:]:  # a chained window starts where its predecessor ended
        last = [r for r in records if r.info["segment"] == s.after][-1]
        assert records[[i["segment"] for i in infos].index(s.id)].info["start_geometry"] == \
            f"last frame of segment {s.after}"
        assert last.info["window_xi0"] == pytest.approx(s.xi0_A + 0.2)
    assert all(i["split"] in ("train", "valid", "test") and i["window_k_eV_per_A2"] == 2.0 for i in infos)
    assert all(set(i["tags"]) == {"far", "reactant"} for i in infos)  # the recipe's tag and the xi region


def test_a_chained_window_refuses_to_start_without_its_predecessor(tmp_path):
    from mlff.data.campaign import _segment_frames

    recipe = _recipe(tmp_path, free_segments=0, rattled=0, holdout=False, window_start="chain", window_from_A=-3.4,
                     window_to_A=-3.2, window_spacing_A=0.2, window_segments=1)
    segments = plan(recipe, Dataset(POOL).infos())
    with pytest.raises(MLFFError, match="segment 0, where a chained window starts, is not done"):
        _segment_frames(segments[1], recipe, Dataset(POOL))
    with pytest.raises(MLFFError, match="window_start"):
        _recipe(tmp_path, window_start="nearest")
