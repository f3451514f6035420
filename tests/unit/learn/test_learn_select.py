"""Selection, calibration and stop rules on numbers chosen by hand (no model): the trust window, the per-bin
cap and the budget; farthest points; the fit through the origin; the three stop criteria."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlff.learn.calibrate import fit_through_origin
from mlff.learn.report import stop_reason
from mlff.learn.select import select_frames


def _select(spread, xi, x, **kw):
    args = {"window": (0.1, 0.5), "xi_bin_A": 0.2, "max_per_bin": 2, "budget": 10, **kw}
    return select_frames(np.asarray(spread, float), np.asarray(xi, float), np.asarray(x, float), **args)


def test_only_frames_in_the_trust_window_are_selected_and_counted():
    spread = [0.05, 0.1, 0.3, 0.5, 0.51, 2.0]
    xi = [-1.0, -0.6, -0.2, 0.2, 0.6, 1.0]  # one bin each
    x = np.arange(6.0)[:, None]
    out = _select(spread, xi, x)
    assert sorted(out["chosen"]) == [1, 2, 3]  # lo <= s <= hi; the ends belong to the window
    assert out["uncertain"] == 5 and out["in_window"] == 3 and out["above_window"] == 2 and out["below_window"] == 1
    assert out["chosen"][0] == 3  # without labelled frames the most uncertain comes first


def test_per_bin_cap_and_budget():
    rng = np.random.default_rng(0)
    xi = np.r_[np.full(10, 0.05), np.full(10, 0.25)]  # two bins of width 0.2
    out = _select(np.full(20, 0.3), xi, rng.normal(size=(20, 4)), max_per_bin=3)
    bins = np.floor(xi[out["chosen"]] / 0.2)
    assert len(out["chosen"]) == 6 and (bins == 0).sum() == 3 and (bins == 1).sum() == 3
    assert out["per_bin"] == {"+0.000": 3, "+0.200": 3}
    assert len(_select(np.full(20, 0.3), xi, rng.normal(size=(20, 4)), max_per_bin=3, budget=4)["chosen"]) == 4
    assert _select(np.full(20, 0.3), xi, rng.normal(size=(20, 4)), budget=0)["chosen"] == []
    empty = _select(np.zeros(0), np.zeros(0), np.zeros((0, 0)), labelled=rng.normal(size=(3, 4)))  # no candidates
    assert empty["chosen"] == [] and empty["candidates"] == 0


def test_farthest_points_in_descriptor_space_and_from_the_labelled_frames():
    # frames on a line: after the most uncertain (x=0) the farthest (x=10), then the middle (x=5)
    x = np.array([[0.0], [1.0], [5.0], [9.0], [10.0]])
    spread = [0.4, 0.2, 0.2, 0.2, 0.2]
    out = _select(spread, np.full(5, np.nan), x, max_per_bin=10, budget=3)
    assert out["chosen"] == [0, 4, 2] and out["per_bin"] == {"no xi": 3}
    # a labelled frame at x=10: the first pick is the frame farthest from it, not the most uncertain
    out = _select(spread, np.full(5, np.nan), x, max_per_bin=10, budget=2, labelled=np.array([[10.0]]))
    assert out["chosen"] == [0, 2]


def test_calibration_is_a_least_squares_line_through_the_origin():
    s = np.array([0.1, 0.2, 0.4, 0.8])
    fit = fit_through_origin(s, 3.0 * s)
    assert fit["slope"] == pytest.approx(3.0) and fit["r2_through_origin"] == pytest.approx(1.0)
    e = np.array([0.3, 0.5, 1.3, 2.3])
    fit = fit_through_origin(s, e)
    assert fit["slope"] == pytest.approx(np.dot(s, e) / np.dot(s, s))
    residual = lambda k: np.sum((e - k * s) ** 2)  # noqa: E731
    assert residual(fit["slope"]) < min(residual(fit["slope"] * 1.01), residual(fit["slope"] * 0.99))
    assert fit_through_origin(np.zeros(0), np.zeros(0))["slope"] is None


class _Config:
    class stop:
        total_labels, max_iterations, min_uncertain, barrier_tol_kcal_mol = 100, 10, 5, 0.5


def _report(iteration, labels=10, uncertain=20, barrier=None):
    return {"iteration": iteration, "labels_spent": labels, "uncertain": uncertain,
            "profile": None if barrier is None else {"barrier_kcal_mol": barrier}}


def test_stop_criteria():
    c = _Config()
    assert stop_reason(c, _report(1), _report(0)) is None
    assert "budget spent" in stop_reason(c, _report(1, labels=100), _report(0))
    assert "max_iterations" in stop_reason(c, _report(9), _report(8))
    assert stop_reason(c, _report(1, uncertain=4), _report(0, uncertain=6)) is None  # one iteration only
    assert "two iterations running" in stop_reason(c, _report(1, uncertain=4), _report(0, uncertain=3))
    assert stop_reason(c, _report(1, uncertain=4), None) is None
    assert "barrier converged" in stop_reason(c, _report(2, barrier=15.2), _report(1, barrier=15.6))
    assert stop_reason(c, _report(2, barrier=15.2), _report(1, barrier=16.0)) is None
    assert stop_reason(c, _report(2, barrier=15.2), _report(1)) is None  # no profile before


def test_the_replay_draw_is_seeded_in_the_training_split_and_never_holds_test_geometries(tmp_path):
    from learn_helpers import learn_dict
    from ase.build import molecule

    from mlff.data import Dataset, make_record
    from mlff.learn.config import learn_config
    from mlff.learn.retrain import SPLIT_KEY, replay_set

    records = []
    for k in range(12):
        atoms = molecule("H2O")
        atoms.positions[1, 0] += 0.01 * k
        records.append(make_record(atoms, energy=-float(k), forces=np.zeros((3, 3)), tags=["holdout-scan"] if k == 11 else []))
    Dataset.create(tmp_path / "replay.h5").append(records)
    Dataset.create(tmp_path / "test.h5").append(records[:4])  # untagged test geometries, also in the replay source
    sets = {"seed": "seed.h5", "test": str(tmp_path / "test.h5")}
    config = learn_config(learn_dict(tmp_path / "run", sets, retrain={"train": {}, "replay": str(tmp_path / "replay.h5"),
                                                                      "replay_records": 50}))
    (tmp_path / "run").mkdir()
    path = replay_set(config, tmp_path / "run")
    drawn = Dataset(path)
    energies = sorted(drawn.column("energy"))
    assert energies == [-10.0, -9.0, -8.0, -7.0, -6.0, -5.0, -4.0]  # not the 4 test geometries, not the held-out one
    assert all(info[SPLIT_KEY] == "train" for info in drawn.infos())
    few = learn_config(learn_dict(tmp_path / "run2", sets, retrain={"train": {}, "replay": str(tmp_path / "replay.h5"),
                                                                    "replay_records": 3}))
    (tmp_path / "run2").mkdir()
    (tmp_path / "run3").mkdir()
    first, again = replay_set(few, tmp_path / "run2"), replay_set(few, tmp_path / "run3")
    assert len(Dataset(first)) == 3 and list(Dataset(first).column("energy")) == list(Dataset(again).column("energy"))



def test_a_replay_that_shares_its_file_with_the_tagged_test_set_keeps_the_rest(tmp_path):
    # the shipped configs replay xtb_small.h5 and test on its records tagged holdout-scan: only those (and the
    # dataset's own test split) are held back; a draw with nothing left is an error, never an empty replay
    from learn_helpers import learn_dict
    from ase.build import molecule

    from mlff.data import Dataset, make_record
    from mlff.errors import MLFFError
    from mlff.learn.config import learn_config
    from mlff.learn.retrain import replay_set

    records = []
    for k in range(10):
        atoms = molecule("H2O")
        atoms.positions[1, 0] += 0.01 * k
        atoms.info["split"] = "test" if k in (0, 1) else "train"
        records.append(make_record(atoms, energy=-float(k), forces=np.zeros((3, 3)),
                                   tags=["holdout-scan"] if k in (8, 9) else ["md"]))
    Dataset.create(tmp_path / "xtb.h5").append(records)
    sets = {"seed": "seed.h5", "test": str(tmp_path / "xtb.h5")}
    spec = learn_dict(tmp_path / "run", sets, retrain={"train": {}, "replay": str(tmp_path / "xtb.h5"), "replay_records": 50})
    spec["test"]["tag"] = "holdout-scan"
    (tmp_path / "run").mkdir()
    drawn = Dataset(replay_set(learn_config(spec), tmp_path / "run"))
    assert sorted(drawn.column("energy")) == [-7.0, -6.0, -5.0, -4.0, -3.0, -2.0]
    spec = learn_dict(tmp_path / "run2", sets, retrain={"train": {}, "replay": str(tmp_path / "xtb.h5")})
    spec["test"]["tag"] = None  # every record of the file is the test set: nothing may be replayed
    (tmp_path / "run2").mkdir()
    with pytest.raises(MLFFError, match="no record of .* may be replayed"):
        replay_set(learn_config(spec), tmp_path / "run2")

def test_unphysical_trajectory_frames_are_not_candidates(tmp_path):
    from mlff.learn.explore import trajectory_frames
    from mlff.md.config import read_structure
    from mlff.md.h5md import H5MDWriter

    structure = read_structure("fdh-cluster:small:reactant")
    good = structure.positions
    bad = good.copy()
    bad[37] = bad[36] + [0.1, 0.0, 0.0]  # two atoms 0.1 Å apart: what a committee far off its data makes
    with H5MDWriter(tmp_path / "t.h5", structure.numbers, structure.get_masses(), structure.pbc,
                    groups={"system_0000": slice(0, len(structure))}) as writer:
        for step, positions in enumerate([good, good + 0.01, bad, good - 0.01]):
            writer.write(step * 10, step * 5.0, positions, velocities=np.zeros_like(positions),
                         forces=np.zeros_like(positions))
    frames, rejected = trajectory_frames(tmp_path / "t.h5", structure, 1, "test")
    assert rejected == 1 and len(frames) == 2
    assert [f.info["source"] for f in frames] == ["test system_0000 step 10", "test system_0000 step 30"]
    assert frames[0].info["charge"] == structure.info["charge"] and "xi" in frames[0].info
    assert np.allclose(frames[1].positions, good - 0.01)


def test_fill_from_above_the_window_takes_the_least_uncertain_under_the_cap():
    spread = [0.9, 0.6, 2.0, 0.7, 0.3]
    xi = [0.05, 0.05, 0.25, 0.05, 0.45]  # bins 0, 0, 1, 0, 2
    x = np.arange(5.0)[:, None]
    assert _select(spread, xi, x)["chosen"] == [4]  # only frame 4 lies in [0.1, 0.5]
    out = _select(spread, xi, x, max_per_bin=2, budget=4, fill_from_above=True)
    assert out["chosen"] == [4, 1, 3, 2] and out["from_above_window"] == [1, 3, 2]  # 0.6, 0.7 (bin 0 full), 2.0


def test_retrain_replays_another_level_in_a_head_of_its_own(tmp_path):
    """xTB oracle, DFT replay: the fine-tuned committee has a head per level and runs MD in the oracle's."""
    from learn_helpers import REPO, TINY, XTB, learn_dict

    from mlff import build_potential, load_potential, save_potential
    from mlff.data import Dataset
    from mlff.learn.config import learn_config
    from mlff.learn.retrain import SPLIT_KEY, replay_set, retrain
    from mlff.train.e0s import isolated_atom_e0s

    labels = Dataset(XTB).read(list(range(6)))
    for k, atoms in enumerate(labels):
        atoms.info[SPLIT_KEY] = "valid" if k == 0 else "train"
    Dataset.create(tmp_path / "labels.h5").append(labels)
    e0s = isolated_atom_e0s(REPO / "data" / "fdh-cluster" / "isolated_atoms_xtb.h5")
    save_potential(build_potential({**TINY, "E0s": e0s}, committee=2, seed=0), tmp_path / "previous")
    dft = str(REPO / "data" / "fdh-cluster" / "fdh_small.h5")
    config = learn_config(learn_dict(tmp_path / "run", {"seed": XTB, "test": XTB}, retrain={
        "train": {"max_epochs": 1, "batch_size": 4, "plots": False}, "replay": dft, "replay_records": 4}))
    replay = replay_set(config, tmp_path / "run")
    result = retrain(config, str(tmp_path / "previous"), tmp_path / "labels.h5", replay, tmp_path / "iter_001")
    tuned = load_potential(result["potential"])
    assert tuned.config.heads == ["dft", "gfn2-xtb"] and tuned.head == "gfn2-xtb" and tuned.committee_size == 2
    card = (Path(result["potential"]) / "MODEL_CARD.md").read_text()
    assert "replayed in head `dft`" in card and "4 training records" in card
