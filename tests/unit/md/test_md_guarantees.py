"""Every MD run can be started again: killed before its first checkpoint, killed while starting, stopped by a
monitor early; a resume that runs nothing keeps the speed record; a resume refuses another potential."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from md_helpers import acid_water_file, one_thread

from mlff import build_potential, save_potential
from mlff.cli import main
from mlff.errors import MLFFError
from mlff.md import HarmonicModel, load_md_config, run_md
from mlff.md.checkpoint import load_checkpoint
from mlff.md.config import read_structure
from mlff.md.engines import BatchEngine
from mlff.md.h5md import read_h5md
from mlff.md.runlog import read_log

single_thread = pytest.fixture(autouse=True)(one_thread)
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture()
def structure(tmp_path) -> str:
    """Formic acid + water (8 atoms), no reaction coordinate, as an extxyz file."""
    return acid_water_file(tmp_path, reaction=False)


def _config(structure, out, potential, **kw) -> dict:
    base = {"structure": structure, "potential": potential, "steps": 6, "dtype": "float64", "device": "cpu",
            "trajectory_every": 1, "checkpoint_every": 1000, "monitor_every": 1, "out": str(out), "seed": 5}
    return {**base, **kw}


@pytest.mark.slow  # three processes build a MACE model: ~30 s on 2 free cores
def test_a_run_killed_before_its_first_checkpoint_resumes_to_the_uninterrupted_result(tmp_path, structure,
                                                                                     small_config):
    out, path = tmp_path / "killed", tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump(_config(structure, out, small_config, steps=100000)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "mlff.cli", "md", str(path)], env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(2.0)  # some steps, far from checkpoint_every = 1000
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 0  # written at the start
    path.write_text(yaml.safe_dump(_config(structure, out, small_config, steps=8)))
    assert main(["md", str(path), "--resume"]) == 0
    reference = run_md(_config(structure, tmp_path / "ref", small_config, steps=8))
    a, b = load_checkpoint(out / "checkpoint.pt"), load_checkpoint(tmp_path / "ref" / "checkpoint.pt")
    assert a["step"] == b["step"] == 8 == reference["step"]
    assert torch.equal(a["positions"], b["positions"]) and torch.equal(a["velocities"], b["velocities"])
    assert [f.info["step"] for f in read_h5md(out / "trajectory.h5", ":")] == list(range(9))
    assert [row["step"] for row in read_log(out / "log.csv")] == list(range(9))


def test_resume_without_a_checkpoint_starts_again_from_step_0(tmp_path, structure, small_potential, capsys):
    out = tmp_path / "run"
    run_md(load_md_config(_config(structure, out, None, steps=3)), potential=small_potential)
    (out / "checkpoint.pt").unlink()  # as if killed while starting: outputs but no checkpoint
    again = run_md(load_md_config(_config(structure, out, None, steps=4)), potential=small_potential, resume=True)
    assert "holds no checkpoint" in capsys.readouterr().err and not again["resumed"]
    reference = run_md(load_md_config(_config(structure, tmp_path / "ref", None, steps=4)), potential=small_potential)
    assert again["steps_done"] == 4 == reference["steps_done"]
    a, b = load_checkpoint(out / "checkpoint.pt"), load_checkpoint(tmp_path / "ref" / "checkpoint.pt")
    assert torch.equal(a["positions"], b["positions"])
    assert [f.info["step"] for f in read_h5md(out / "trajectory.h5", ":")] == list(range(5))
    with pytest.raises(MLFFError, match="no checkpoint to resume from"):  # nothing at all: a typo, not a restart
        run_md(load_md_config(_config(structure, tmp_path / "empty", None)), potential=small_potential, resume=True)


def test_a_monitor_stop_before_the_first_checkpoint_names_a_checkpoint_that_exists(tmp_path, structure):
    config = load_md_config(_config(structure, tmp_path, None, steps=40, max_force_eV_per_A=1e-3, monitor_every=2))
    engine = BatchEngine(config, read_structure(structure), None, model=object())
    engine.model = HarmonicModel(engine.state.positions.clone(), 2.0)
    summary = run_md(config, engine=engine)
    assert summary["status"] == "stopped"
    named = summary["message"].split("last good checkpoint ")[1]
    assert load_checkpoint(named)["step"] == 0 and load_checkpoint(tmp_path / "stopped.pt")["step"] == 2


def test_a_resume_of_a_finished_run_keeps_its_speed_record(tmp_path, structure, small_potential):
    config = load_md_config(_config(structure, tmp_path, None, steps=4))
    first = run_md(config, potential=small_potential)
    again = run_md(config, potential=small_potential, resume=True)
    record = json.loads((tmp_path / "run.json").read_text())
    assert again["steps_done"] == 0 and again["status"] == "finished"
    for key in ("ms_per_step", "ns_per_day", "atom_steps_per_s"):
        assert record[key] == first[key] == again[key], key


@pytest.mark.slow
def test_resume_refuses_another_potential_at_the_same_path(tmp_path, structure, small_config, small_potential):
    pot = tmp_path / "pot"
    save_potential(small_potential, pot)
    run_md(_config(structure, tmp_path / "run", str(pot), steps=2))
    pinned = json.loads(load_checkpoint(tmp_path / "run" / "checkpoint.pt")["inputs_json"])
    assert pinned["potential_files_sha256"] == json.loads((pot / "potential.json").read_text())["sha256"]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["inputs"] == pinned  # what analyses check
    save_potential(build_potential(small_config, seed=2), pot)  # retrained in place
    with pytest.raises(MLFFError, match=rf"the potential at {pot} is not the one the run started with "
                                        r"\(weights sha256 [0-9a-f]{16} then, [0-9a-f]{16} now\)"):
        run_md(_config(structure, tmp_path / "run", str(pot), steps=4), resume=True)
