"""``mlff slurm learn CONFIG``: the learning loop as one job that requeues itself (exit 75) and resumes."""

from __future__ import annotations

import json

import yaml

from mlff.cli import main


def _config(tmp_path) -> dict:
    return {"structure": "fdh-cluster:small:reactant", "out": str(tmp_path / "run"),
            "initial": {"potential": "some-committee"}, "explore": {"md": {"steps": 100}},
            "label": {"oracle": {"backend": "xtb"}}}


def test_learn_is_one_self_requeueing_job_resumed_from_learn_json(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "learn.yaml").write_text(yaml.safe_dump(_config(tmp_path)))
    assert main(["slurm", "learn", "learn.yaml", "--dry-run", "--time", "2-00:00:00", "--partition", "cpu"]) == 0
    text = capsys.readouterr().out
    assert f"exec mlff learn {tmp_path / 'learn.yaml'} $resume" in text
    assert f"{tmp_path / 'run' / 'learn.json'}" in text  # the marker of a run to resume
    assert "#SBATCH --requeue" in text and 'scontrol requeue "$SLURM_JOB_ID"' in text
    assert main(["slurm", "learn", "learn.yaml"]) == 0  # writes the script, submits nothing
    assert (tmp_path / "run" / "slurm" / "learn.sbatch").is_file()
    bad = {**_config(tmp_path), "select": {"trust_window_eV_A": [1.0, 0.1]}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    assert main(["slurm", "learn", "bad.yaml", "--dry-run"]) == 2  # refused at submission, same message
    assert "trust_window_eV_A" in capsys.readouterr().err


def test_status_reads_the_learning_progress(tmp_path):
    from mlff.hpc.status import progress

    out = tmp_path / "run"
    job = {"kind": "learn", "progress": {"out": str(out)}}
    assert progress(job, None) == "initial committee"
    (out / "iter_001").mkdir(parents=True)
    (out / "iter_001" / "state.json").write_text(json.dumps({"iteration": 1, "done": ["explore", "select", "label"],
                                                             "label": {"labels_spent": 20}}))
    assert progress(job, None) == "iteration 1: label done; 20 labels"
    (out / "summary.json").write_text(json.dumps({"status": "finished", "iterations": 2, "reason": "budget spent"}))
    assert progress(job, None) == "finished after 2 iteration(s): budget spent"


def test_status_reads_the_last_complete_row_of_a_log_being_written(tmp_path):
    """A row still being written (or torn by a kill) has no newline yet: status shows the row before it."""
    from mlff.hpc.status import _last_csv_row

    log = tmp_path / "log.csv"
    log.write_text("# provenance\nstep,time_fs\n100,50.0\n120,60.0\n14")
    assert _last_csv_row(log) == {"step": "120", "time_fs": "60.0"}
    log.write_text("step,time_fs\n1")
    assert _last_csv_row(log) is None
