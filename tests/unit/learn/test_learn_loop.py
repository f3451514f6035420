"""The loop end to end on the small FDH cluster with xTB as the oracle (tiny MACE committee, two iterations),
and a kill -9 in every stage followed by ``--resume``: the resumed run's records equal an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import yaml
from learn_helpers import REPO, learn_dict

from mlff.data import Dataset
from mlff.learn import run_learning
from mlff.learn.state import STAGES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(xtb_sets, tmp_path_factory):
    """One uninterrupted run (in this process)."""
    out = tmp_path_factory.mktemp("learn") / "reference"
    summary = run_learning(learn_dict(out, xtb_sets))
    return out, summary


def _state(out, k) -> dict:
    return json.loads((out / f"iter_{k:03d}" / "state.json").read_text())


def test_end_to_end_two_iterations_with_xtb_as_the_oracle(reference):
    out, summary = reference
    assert summary["status"] == "finished" and summary["iterations"] == 2
    assert summary["reason"] == "label budget spent (6 of 6)" and summary["labels_spent"] == 6
    labels = Dataset(out / "labels.h5")
    assert len(labels) == 6 and labels.count("failures") == 0
    infos = labels.infos()
    assert [i["learn_iteration"] for i in infos] == [0, 0, 0, 1, 1, 1]
    assert {i["provenance"]["method"] for i in infos} == {"GFN2-xTB"}  # labelled by the oracle
    assert all(i["tags"] == [("reactant" if i["xi"] < -0.3 else "product" if i["xi"] > 0.3 else "ts")] for i in infos)
    for k in (0, 1):
        state = _state(out, k)
        assert state["done"] == list(STAGES)
        select = state["select"]
        assert select["budget"] == 3 and len(select["chosen"]) == 3 and select["candidates"] == 8  # 2 x 4 frames
        assert all(count <= 2 for count in select["per_bin"].values())  # the per-bin cap
        xi = np.array([i["xi"] for i in infos if i["learn_iteration"] == k])
        assert np.allclose(xi, np.array(json.loads((out / f"iter_{k:03d}" / "select.json").read_text())["xi_A"])[
            select["chosen"]])
        report = json.loads((out / f"iter_{k:03d}" / "report.json").read_text())
        assert report["labels_spent"] == 3 * (k + 1) and (out / f"iter_{k:03d}" / "report.png").is_file()
        assert {"all", "reactant", "ts", "product"} <= set(report["test"])  # errors per xi region of the test set
        assert report["test"]["all"]["n_records"] == 4 and report["test"]["all"]["forces_rmse_meV_A"] > 0
        cal = state["calibrate"]
        assert cal["n"] == 3 and cal["slope"] > 0  # spread against the true error of the new labels
    # the second selection used the first calibration; the second iteration explored with the first retraining
    assert _state(out, 1)["select"]["slope"] == pytest.approx(_state(out, 0)["calibrate"]["used_slope"])
    assert _state(out, 1)["potential"] == _state(out, 0)["retrain"]["potential"]
    assert summary["potential"] == str(out / "iter_001" / "train" / "potential")
    # fine-tuning started from the previous committee (init_from) on all labels so far
    train = json.loads((out / "iter_001" / "train" / "config.json").read_text())["config"]
    assert train["init_from"] == _state(out, 0)["retrain"]["potential"] and train["committee"] == 2


def _strip(value):
    """A record without what depends on the machine's speed or on this process (wall times, per-run counts)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in ("wall_s", "this_run")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _close(a, b, path="") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for k, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{k}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-6, abs=1e-9), path
    else:
        assert a == b, path


KILLS = ["0:explore", "0:label", "0:retrain", "1:select", "1:calibrate", "1:report"]


def test_kill_9_in_every_stage_then_resume_equals_the_uninterrupted_run(reference, xtb_sets, tmp_path):
    ref_out, ref_summary = reference
    out = tmp_path / "killed"
    config = tmp_path / "learn.yaml"
    config.write_text(yaml.safe_dump(learn_dict(out, xtb_sets)))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for k, kill in enumerate(KILLS + [None]):
        cmd = [sys.executable, "-m", "mlff.cli", "learn", str(config)] + (["--resume"] if k else [])
        run_env = {**env, "MLFF_LEARN_KILL_AFTER": kill} if kill else env
        done = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=300)
        if kill:
            assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
            iteration, stage = kill.split(":")
            state = _state(out, int(iteration))
            assert stage not in state["done"]  # killed after its outputs, before it was marked
        else:
            assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["labels_spent"] == ref_summary["labels_spent"]
    for k in (0, 1):
        mine, theirs = _strip(_state(out, k)), _strip(_state(ref_out, k))
        for record in (mine, theirs):  # paths differ between the two run directories
            record.pop("potential")
            record["retrain"].pop("run_dir")
            record["retrain"].pop("potential")
            record["report"].pop("potential")
            record["report"].pop("potential_explored")
        _close(theirs, mine, f"iter_{k:03d}")
    a, b = Dataset(out / "labels.h5").read(), Dataset(ref_out / "labels.h5").read()
    assert len(a) == len(b) == 6
    for x, y in zip(a, b):
        assert np.allclose(x.positions, y.positions, atol=1e-8)
        assert x.get_potential_energy() == pytest.approx(y.get_potential_energy(), abs=1e-6)


def test_external_labels_for_array_jobs_then_resume(reference, xtb_sets, tmp_path, capsys):
    """label.external: the loop stops after select with a label.yaml that `mlff slurm label` takes (array
    shards); once the labels are in labels_in.h5, --resume imports them and goes on."""
    from mlff.cli import main
    from mlff.data.label import label
    from mlff.data.labelers import XTBLabeler

    ref_out, _ = reference
    config = learn_dict(tmp_path / "ext", xtb_sets, initial={"potential": str(ref_out / "initial" / "train" / "potential")},
                        label__external=True, label__shards=2, stop__max_iterations=1, stop__total_labels=3)
    config["label"]["oracle"] = {"backend": "xtb"}
    summary = run_learning(config)
    assert summary["status"] == "awaiting_labels" and summary["missing"] == 3 and summary["labels_spent"] == 0
    job = yaml.safe_load(open(summary["label_config"]))
    assert main(["slurm", "label", summary["label_config"], "--dry-run"]) == 0
    assert "#SBATCH --array=0-1" in capsys.readouterr().out
    assert run_learning(config, resume=True)["status"] == "awaiting_labels"  # nothing labelled yet: still waiting
    label(Dataset(job["pool"]).read(), XTBLabeler(), job["out"], progress=False)  # what the array jobs do
    summary = run_learning(config, resume=True)
    assert summary["status"] == "finished" and summary["labels_spent"] == 3
    labels = Dataset(tmp_path / "ext" / "labels.h5")
    assert len(labels) == 3 and all(i["learn_iteration"] == 0 for i in labels.infos())
    # the same committee and seeds as the reference's first iteration: the same frames were chosen
    assert _state(tmp_path / "ext", 0)["select"]["chosen"] == _state(ref_out, 0)["select"]["chosen"]
    assert _state(tmp_path / "ext", 0)["done"] == list(STAGES)


def test_labels_in_two_one_thread_workers_are_those_of_one_labeller(reference, xtb_sets, tmp_path):
    """label.workers: 2 labels the selected frames in two processes; the same frames, labels and order as the
    reference's first iteration (one labeller in the loop's process)."""
    ref_out, _ = reference
    config = learn_dict(tmp_path / "workers", xtb_sets, label__workers=2, stop__max_iterations=1, stop__total_labels=3,
                        initial={"potential": str(ref_out / "initial" / "train" / "potential")})
    summary = run_learning(config)
    assert summary["status"] == "finished" and summary["labels_spent"] == 3
    mine, theirs = Dataset(tmp_path / "workers" / "labels.h5").read(), Dataset(ref_out / "labels.h5").read()[:3]
    for x, y in zip(mine, theirs, strict=True):
        assert np.allclose(x.positions, y.positions, atol=1e-8) and x.info["learn_iteration"] == 0
        assert x.get_potential_energy() == pytest.approx(y.get_potential_energy(), abs=1e-6)
    assert not (tmp_path / "workers" / "labels.h5.workers").exists()


def test_a_restarted_campaign_never_labels_a_geometry_it_has_already(reference, xtb_sets, tmp_path):
    """The reference's labels replayed in a new run from the same committee and seeds: the same candidates come
    up, those already labelled are not offered, and the new labels are other geometries."""
    from mlff.data.records import geometry_hash

    ref_out, _ = reference
    config = learn_dict(tmp_path / "again", xtb_sets, stop__max_iterations=1, stop__total_labels=3,
                        initial={"potential": str(ref_out / "initial" / "train" / "potential")},
                        retrain={"train": {"max_epochs": 1, "batch_size": 4, "plots": False},
                                 "replay": str(ref_out / "labels.h5")})
    assert run_learning(config)["status"] == "finished"
    select = _state(tmp_path / "again", 0)["select"]
    assert select["already_labelled"] >= 3  # the reference's first three labels are among these candidates
    old = {geometry_hash(a) for a in Dataset(ref_out / "labels.h5").read()}
    new = [geometry_hash(a) for a in Dataset(tmp_path / "again" / "labels.h5").read()]
    assert len(new) == 3 and not old & set(new)


def test_sigterm_between_stages_ends_resumable_with_exit_75(reference, xtb_sets, tmp_path):
    ref_out, _ = reference
    out = tmp_path / "term"
    config = tmp_path / "learn.yaml"
    initial = {"potential": str(ref_out / "initial" / "train" / "potential")}
    config.write_text(yaml.safe_dump(learn_dict(out, xtb_sets, initial=initial)))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MLFF_LEARN_KILL_AFTER": "0:explore:TERM"}
    done = subprocess.run([sys.executable, "-m", "mlff.cli", "learn", str(config)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 75, done.stderr[-2000:]
    assert "interrupted in iteration 0 (select)" in done.stderr and "--resume" in done.stderr
    assert _state(out, 0)["done"] == ["explore"]  # the stage it was in was finished and marked
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"


def test_umbrella_windows_along_xi_explore_and_give_a_profile(reference, xtb_sets, tmp_path):
    """explore.umbrella: windows along xi (one batch) are the candidates; the report holds the profile of the
    run (or the reason the analysis failed), for the barrier stop criterion."""
    ref_out, _ = reference
    umbrella = {"centers_A": {"start": -1.4, "stop": -0.8, "count": 4}, "spring_eV_per_A2": 5.0,
                "starts": "structure", "equilibration_steps": 0, "production_steps": 40, "colvar_every": 2,
                "md": {"trajectory_every": 10, "dtype": "float64", "temperature_K": 300.0}}
    config = learn_dict(tmp_path / "umb", xtb_sets, initial={"potential": str(ref_out / "initial" / "train" / "potential")},
                        explore={"umbrella": umbrella}, stop__max_iterations=1, stop__total_labels=3,
                        fes={"bins": 5, "n_bootstraps": 0, "equilibration": "none", "subsample": False,
                             "min_samples_per_window": 2, "plots": False, "reactant": [None, -1.2],
                             "product": [-1.0, None]})
    summary = run_learning(config)
    assert summary["status"] == "finished" and summary["labels_spent"] == 3
    state = _state(tmp_path / "umb", 0)
    assert state["explore"]["runs"] == {"umbrella": "finished"} and state["select"]["candidates"] == 4 * 4
    sources = {i["source"].split(" step")[0] for i in Dataset(tmp_path / "umb" / "iter_000" / "candidates.h5").infos()}
    assert len(sources) == 4  # one trajectory group per window
    profile = state["report"]["profile"]  # MBAR of 4 tiny windows of an untrained-ish committee: numbers, not physics
    assert "error" not in profile, profile
    if profile["barrier_kcal_mol"] is None:  # 5 bins of a short run need not hold a barrier: then it says why
        assert profile["no_barrier"].startswith("no barrier: ") and profile["reaction_kcal_mol"] is None
    else:
        assert np.isfinite(profile["barrier_kcal_mol"]) and profile["barrier_kcal_mol"] > 0
    assert len(profile["xi_A"]) == len(profile["F_kcal_mol"]) == 5
    assert min(v for v in profile["F_kcal_mol"] if v is not None) == pytest.approx(0.0, abs=1e-9)
