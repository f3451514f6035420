"""workflows/fdh_dft_finetune.py: the learning curve of the DFT fine-tuning (resumable, redone when its inputs
change) and the card section that says which labels the potential saw."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]
spec = importlib.util.spec_from_file_location("fdh_dft_finetune", REPO / "workflows" / "fdh_dft_finetune.py")
finetune = importlib.util.module_from_spec(spec)
spec.loader.exec_module(finetune)


@pytest.fixture
def short(tmp_path, monkeypatch):
    """The module on 3 of the shipped DFT labels, with 3 epochs instead of the recipe's."""
    from mlff.config import load_yaml
    from mlff.data import Dataset

    recipe = load_yaml(finetune.CONFIG)
    recipe.update(max_epochs=3)
    recipe["data"]["paths"] = [str(REPO / "data/fdh-cluster" / Path(p).name) for p in recipe["data"]["paths"]]
    config = tmp_path / "finetune.yaml"
    config.write_text(json.dumps(recipe))  # JSON is YAML
    replay = load_yaml(finetune.REPLAY)  # the replay recipe with 3 epochs and 8 replayed xTB records
    replay.update(max_epochs=3)
    replay["data"] = dict(replay["data"], train_records=[None, None, 8], repeat=[2, 1, 1],
                          paths=[str(REPO / "data/fdh-cluster" / Path(p).name) for p in replay["data"]["paths"]])
    (tmp_path / "replay.yaml").write_text(json.dumps(replay))
    monkeypatch.setattr(finetune, "REPLAY", tmp_path / "replay.yaml")
    labels = tmp_path / "dft.h5"
    Dataset.create(labels, description="3 DFT labels").append(Dataset(finetune.LABELS).read(np.arange(3)))
    monkeypatch.setattr(finetune, "CONFIG", config)
    monkeypatch.setattr(finetune, "LABELS", labels)
    return labels


def test_curve_scores_each_start_on_the_heldout_scan_and_resumes(short, tmp_path, capsys):
    from mlff.data import Dataset

    out = tmp_path / "curve"
    rows = finetune.curve(out, sizes=[0, 2])
    got = {(r["start"], r["n_labels"]) for r in rows}
    assert got == {("xtb", 0), ("xtb", 2), ("scratch", 2), ("xtb", 3), ("scratch", 3), ("replay", 2), ("replay", 3)}
    held = len(Dataset(finetune.HOLDOUT))
    for r in rows:
        assert r["holdout_points"] == held and np.isfinite(r["holdout_forces_rmse_meV_A"])
        assert np.isfinite(r["scan_max_error_kcal_mol"]) and r["scan_max_error_kcal_mol"] >= 0
    by = {(r["start"], r["n_labels"]): r for r in rows}
    # DFT labels move the xTB foundation towards DFT, and starting from it beats starting from random weights
    f = {k: r["holdout_forces_rmse_meV_A"] for k, r in by.items()}
    assert f[("xtb", 3)] < 0.85 * f[("xtb", 0)] and f[("xtb", 3)] < 0.85 * f[("scratch", 3)]
    assert (out / "learning_curve.png").stat().st_size > 10_000
    from mlff import load_potential

    replayed = load_potential(out / "replay_002" / "potential")  # xTB replayed in a head of its own, scored in DFT's
    assert replayed.config.heads == ["xtb", "dft"] and replayed.head == "dft"
    # a second call trains nothing; new labels redo only the rows that depend on them
    capsys.readouterr()
    assert finetune.curve(out, sizes=[0, 2]) == rows and "labels:" not in capsys.readouterr().out
    Dataset(short).append(Dataset(REPO / "data/fdh-cluster/fdh_small.h5").read([3]))  # a 4th DFT label
    again = finetune.curve(out, sizes=[0, 2])
    printed = capsys.readouterr().out
    assert {(r["start"], r["n_labels"]) for r in again} == got | {("xtb", 4), ("scratch", 4), ("replay", 4)}
    assert printed.count("labels:") == 3  # n=0 and n=2 kept: their labels did not change
    assert [r for r in again if r["n_labels"] in (0, 2)] == [r for r in rows if r["n_labels"] in (0, 2)]
    recipe = json.loads(finetune.CONFIG.read_text())  # another recipe: every row is redone
    finetune.CONFIG.write_text(json.dumps(dict(recipe, loss=dict(recipe["loss"], energy_weight=30.0))))
    assert finetune.curve(out, sizes=[0]) and capsys.readouterr().out.count("labels:") == 4  # 0, 4 and 4 more


def test_card_section_names_every_label_and_the_curve(short, tmp_path, monkeypatch):
    from mlff.data import Dataset
    from mlff.errors import MLFFError

    potential = tmp_path / "potential"
    potential.mkdir()
    with pytest.raises(MLFFError, match="no model card"):
        finetune.card(potential, tmp_path / "curve")
    (potential / "MODEL_CARD.md").write_text("# Potential\n\n## Training\n\ntext\n")
    with pytest.raises(MLFFError, match="no learning curve"):
        finetune.card(potential, tmp_path / "curve")
    finetune.curve(tmp_path / "curve", sizes=[0])
    finetune.card(potential, tmp_path / "curve")
    text = (potential / "MODEL_CARD.md").read_text()
    assert "## Training\n\ntext" in text and "## DFT labels and learning curve" in text
    for a in Dataset(short).read():
        assert f"| {a.info['xi']:+.2f} |" in text
    foundation = finetune._foundation
    monkeypatch.setattr(finetune, "_foundation", lambda: "another foundation")  # a retrained foundation: old
    with pytest.raises(MLFFError, match="older than the DFT labels"):
        finetune.card(potential, tmp_path / "curve")
    monkeypatch.setattr(finetune, "_foundation", foundation)
    Dataset(short).append(Dataset(REPO / "data/fdh-cluster/fdh_small.h5").read([3]))  # a new label: the curve is old
    with pytest.raises(MLFFError, match="older than the DFT labels"):
        finetune.card(potential, tmp_path / "curve")
    assert "| 0 | GFN2-xTB foundation |" in text and "| 3 | scratch |" in text
    assert (potential / "dft_learning_curve.png").is_file()


def test_cv_leaves_every_training_label_out_once_and_never_reads_the_heldout_scan(short, tmp_path, capsys,
                                                                                   monkeypatch):
    from mlff.data import Dataset
    from mlff.errors import MLFFError

    out = tmp_path / "cv"
    with pytest.raises(MLFFError, match="needs 4"):
        finetune.cv(out, epochs=[1], folds=2)  # 3 labels: too few for 2 folds of 2
    Dataset(short).append(Dataset(REPO / "data/fdh-cluster/fdh_small.h5").read([3]))
    summary = finetune.cv(out, epochs=[1, 2], folds=2)
    assert [s["max_epochs"] for s in summary] == [1, 2] and all(s["folds"] == 2 for s in summary)
    for s in summary:
        assert 0 < s["cv_forces_rmse_meV_A"] < 2000 and np.isfinite(s["cv_energy_rmse_meV_atom"])
    rows = finetune._rows(out / "cv.jsonl")
    assert len(rows) == 4 and all(r["n_train"] + r["n_test"] == 4 for r in rows)
    assert sorted(r["n_test"] for r in rows if r["max_epochs"] == 1) == [2, 2]
    held = set(Dataset(finetune.HOLDOUT).column("geometry_hash"))
    trained = set()
    for k in range(2):  # the folds' training files: the labels only, each left out of exactly one fold
        got = list(Dataset(out / f"cv_f{k}.h5").column("geometry_hash"))
        assert len(got) == 2 and not held & set(got)
        trained |= set(got)
    assert trained == set(Dataset(short).column("geometry_hash"))
    # the pooled RMSE is the RMSE over all left-out force components
    mine = [r for r in rows if r["max_epochs"] == 2]
    pooled = 1000 * np.sqrt(sum(r["forces_sq_sum"] for r in mine) / sum(r["forces_n"] for r in mine))
    assert summary[1]["cv_forces_rmse_meV_A"] == pytest.approx(pooled)
    # relative energies: the energy errors a structure (39 atoms) with their pooled mean removed, in kcal/mol
    e = np.concatenate([np.asarray(r["energy_err_meV_atom"]) * 39 / 1000 for r in mine])
    relative = 23.0605 * np.sqrt(np.mean((e - e.mean()) ** 2))
    assert summary[1]["cv_relative_energy_rmse_kcal_mol"] == pytest.approx(relative, rel=1e-4)
    capsys.readouterr()
    assert finetune.cv(out, epochs=[1, 2], folds=2) == summary and "fold 0" not in capsys.readouterr().out  # resumed
    w0 = finetune._recipe_energy_weight()
    assert [s["energy_weight"] for s in summary] == [w0, w0]  # the recipe's unless asked
    heavy = finetune.cv(out, epochs=[1], folds=2, energy_weights=[w0, 7])  # one more candidate: 2 new models
    assert [(s["max_epochs"], s["energy_weight"]) for s in heavy] == [(1, w0), (1, 7.0)] and heavy[0] == summary[0]
    assert json.loads((out / "cv_e0001_w7_f0/config.json").read_text())["config"]["loss"]["energy_weight"] == 7
    printed = capsys.readouterr().out
    assert "energy weight 7, fold 1" in printed and len(finetune._rows(out / "cv.jsonl")) == 6
    best = finetune.choose(heavy)
    assert f"choice: xtb x1, max_epochs 1, energy weight {best['energy_weight']:g} (" in printed
    # committees and starts are candidates too: members bootstrapped, scored by their mean, spreads calibrated
    both = finetune.cv(out, epochs=[1], folds=2, starts=["xtb", "scratch", "delta"], committees=[2])
    assert [(s["start"], s["committee"]) for s in both] == [("xtb", 2), ("scratch", 2), ("delta", 2)]
    delta = json.loads((out / f"cv_e0001_w{w0:g}_delta_c2_f0" / "config.json").read_text())["config"]
    assert delta["base"].endswith("fdh-cluster-small-xtb") and set(delta["e0s"].values()) == {0.0}
    assert all(s["folds"] == 2 and s["spread_slope"] > 0 for s in both)
    scratch = json.loads((out / f"cv_e0001_w{w0:g}_scratch_c2_f1" / "config.json").read_text())["config"]
    assert scratch["committee"] == 2 and scratch["bootstrap"] and scratch.get("init_from") is None
    assert finetune.cv(out, epochs=[1], folds=2) == [summary[0]]  # the recipe's own rows are untouched
    text = finetune.card_section([], Dataset(short).read(), summary)  # the card's schedule table
    assert "2-fold cross-validation on the 4 training labels" in text
    assert (f"| 1 | {w0:g} | {summary[0]['cv_forces_rmse_meV_A']:.1f} | {summary[0]['cv_energy_rmse_meV_atom']:.2f} | "
            f"{summary[0]['cv_relative_energy_rmse_kcal_mol']:.2f} |") in text
    hashes = list(Dataset(short).column("geometry_hash"))
    foundation = finetune._foundation
    monkeypatch.setattr(finetune, "_foundation", lambda: "another foundation")  # retrained: old rows are stale
    assert finetune.cv_summary(rows, hashes) == []
    monkeypatch.setattr(finetune, "_foundation", foundation)
    assert finetune.cv_summary(rows, hashes) == summary  # rows: the 4 of the recipe's weight
    recipe = json.loads(finetune.CONFIG.read_text())  # what cv varies is not the recipe's identity; the rest is
    finetune.CONFIG.write_text(json.dumps(dict(recipe, max_epochs=7, loss=dict(recipe["loss"], energy_weight=30.0))))
    assert finetune.cv_summary(rows, hashes) == summary
    finetune.CONFIG.write_text(json.dumps(dict(recipe, optim=dict(recipe["optim"], lr=0.01))))
    assert finetune.cv_summary(rows, hashes) == []
    finetune.CONFIG.write_text(json.dumps(recipe))
    Dataset(short).append(Dataset(REPO / "data/fdh-cluster/fdh_small.h5").read([4]))  # new labels: old rows are stale
    assert finetune.cv_summary(rows, list(Dataset(short).column("geometry_hash"))) == []


def test_the_cv_choice_is_the_best_relative_energies_within_one_percent_of_the_best_forces():
    # the 4-fold CV on the 25 labels (2026-12-06), 150 epochs: energy weight -> F RMSE meV/Å, relative E kcal/mol
    table = {3: (128.1, 2.77), 10: (128.2, 2.72), 30: (128.2, 2.70), 100: (128.2, 2.65), 1000: (128.1, 2.24),
             3000: (129.3, 2.04), 10000: (134.3, 1.93), 30000: (139.3, 1.73)}
    summary = [{"max_epochs": 150, "energy_weight": w, "cv_forces_rmse_meV_A": f,
                "cv_relative_energy_rmse_kcal_mol": e} for w, (f, e) in table.items()]
    assert finetune.choose(summary)["energy_weight"] == 3000  # 129.3 <= 1.01 x 128.1; 134.3 is not
    assert finetune.choose(summary, force_tolerance=0.05)["energy_weight"] == 10000
    assert finetune.choose(summary, force_tolerance=0.0)["energy_weight"] == 1000  # ties on forces: better energies
    assert finetune.choose(summary[:1])["energy_weight"] == 3
    # the 4-fold CV on the 50 labels (2026-12-07) over schedules and weights: (epochs, weight) -> the same
    table = {(50, 1000): (125.6, 2.48), (150, 300): (118.8, 3.36), (150, 1000): (119.2, 2.59),
             (150, 3000): (120.7, 2.28), (150, 10000): (127.4, 2.25), (300, 1000): (117.6, 2.56),
             (300, 3000): (118.4, 2.25)}
    summary = [{"max_epochs": n, "energy_weight": w, "cv_forces_rmse_meV_A": f,
                "cv_relative_energy_rmse_kcal_mol": e} for (n, w), (f, e) in table.items()]
    best = finetune.choose(summary)  # 118.4 <= 1.01 x 117.6 = 118.8; 150 epochs at 3000 (120.7) is not
    assert (best["max_epochs"], best["energy_weight"]) == (300, 3000)


def test_the_label_budget_is_read_off_a_power_law_through_the_curve():
    # forces 400 N^-0.5 from 8 labels on (the points below FIT_FROM and of other starts are left out)
    rows = [{"start": "xtb", "n_labels": n, "holdout_forces_rmse_meV_A": 400 * n ** -0.5,
             "scan_max_error_kcal_mol": 3.0} for n in (8, 16, 25, 50)]
    rows += [{"start": "xtb", "n_labels": 2, "holdout_forces_rmse_meV_A": 1000.0, "scan_max_error_kcal_mol": 9.0},
             {"start": "scratch", "n_labels": 50, "holdout_forces_rmse_meV_A": 10.0, "scan_max_error_kcal_mol": 0.1}]
    fit = finetune.extrapolate(rows, "xtb", "holdout_forces_rmse_meV_A", 40.0)
    assert fit["points"] == 4 and abs(fit["exponent"] - 0.5) < 1e-9
    assert abs(fit["labels_for_target"] - 100.0) < 1e-6  # 400 / sqrt(100) = 40
    flat = finetune.extrapolate(rows, "xtb", "scan_max_error_kcal_mol", 1.0)
    assert abs(flat["exponent"]) < 1e-9 and flat["labels_for_target"] is None  # flat: no label count reaches it
    assert finetune.extrapolate(rows, "scratch", "holdout_forces_rmse_meV_A", 40.0) is None  # one point
    lines = finetune.budget_lines(rows)
    assert lines[0] == ("pre-trained on GFN2-xTB: error ~ N^-0.50 (4 points from 8 labels): force RMSE 40 meV/Å at "
                        "about 100 labels")
    assert len(lines) == 2 and "relative-energy max error does not fall with labels" in lines[1]
