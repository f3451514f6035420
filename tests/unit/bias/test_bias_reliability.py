"""Biased runs survive what users and machines do to them (issue 33): a second run aimed at a live or finished run
directory writes nothing into it; a kill during a COLVAR flush (a torn last row) is repaired on resume and
skipped by readers, both said so; damaged run files are one line naming the file; ladders that run but cannot
mean what they say are refused before anything is written."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlff.bias.io import read_biased_run, read_colvar
from mlff.bias.umbrella import build_biases, load_umbrella_config, run_umbrella
from mlff.cli import main
from mlff.errors import MLFFError
from mlff.md.toy import DoubleWell, toy_particles

REPO = Path(__file__).resolve().parents[3]
MD = {"device": "cpu", "dtype": "float64", "timestep_fs": 1.0, "friction_per_fs": 0.05, "temperature_K": 300.0,
      "init_velocities": False, "trajectory_every": 10, "checkpoint_every": 20, "seed": 3}
HOLD = ("import sys, time\nfrom mlff.lock import WriterLock\nWriterLock(sys.argv[1], 'test').acquire()\n"
        "print('held', flush=True)\ntime.sleep(600)\n")


def _config(tmp_path, name="run", **changes):
    config = {"structure": "toy", "cv": {"kind": "coordinate", "atoms": [0], "axis": 0, "name": "x"},
              "centers_A": {"start": -1.4, "stop": 1.4, "count": 8}, "spring_eV_per_A2": 2.0, "starts": "structure",
              "equilibration_steps": 20, "production_steps": 100, "colvar_every": 5, "exchange_every": 10,
              "md": dict(MD), "out": str(tmp_path / name)}
    config.update(changes)
    return config


def _run(config, **kw):
    return run_umbrella(config, structure=toy_particles([0.0])[0], model=DoubleWell(barrier_eV=0.13),
                        show_progress=False, **kw)


def _files(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file() and p.name != ".lock"}


@contextlib.contextmanager
def _held_elsewhere(lock_file: Path):
    """Another process holding the run directory's writer lock (a live run) until it is killed."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock_file)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_a_second_run_at_a_finished_or_live_directory_writes_nothing(tmp_path):
    _run(_config(tmp_path, production_steps=20))
    run = tmp_path / "run"
    before = _files(run)
    assert {"bias.json", "starts.xyz", "COLVAR", "checkpoint.pt"} <= set(before)
    other = _config(tmp_path, spring_eV_per_A2=7.0, starts="pull", pull_steps=50)  # new springs, new starts
    with pytest.raises(MLFFError, match=r"bias.json exists: continue that run with --resume"):
        _run(other)
    assert _files(run) == before  # bias.json and starts.xyz byte-identical: the old samples keep their springs
    with _held_elsewhere(run / ".lock"):
        for kw in ({}, {"resume": True}):
            with pytest.raises(MLFFError, match="is being written by another process"):
                _run(other if not kw else _config(tmp_path, production_steps=40), **kw)
    assert _files(run) == before
    # the refused config leaves no directory behind when nothing was there
    with pytest.raises(MLFFError, match="windows 2 and 5 have the same centre"):
        _run(_config(tmp_path, "never", centers_A=[-1.0, -0.5, 0.0, 0.5, 1.0, 0.0]))
    assert not (tmp_path / "never").exists()


def _tear(path: Path, full_row: str, keep: int) -> None:
    """A kill -9 during a flush: the first ``keep`` characters of a row, no newline."""
    with open(path, "a") as handle:
        handle.write(full_row[:keep])


def test_a_torn_colvar_row_is_repaired_on_resume_and_skipped_by_readers(tmp_path, capsys):
    ladder = {"centers_A": {"start": -1.4, "stop": 1.4, "count": 15}, "equilibration_steps": 100,
              "production_steps": 300, "colvar_every": 2}
    _run(_config(tmp_path, "full", **ladder))
    part = _config(tmp_path, "part", **ladder)
    _run(dict(part, production_steps=140))  # stopped at step 240, its last checkpoint
    run = tmp_path / "part"
    full_colvar = (tmp_path / "full" / "COLVAR").read_text().splitlines(keepends=True)
    row = next(line for line in full_colvar if not line.startswith("#") and line.split()[1] == "242")
    full_log = (tmp_path / "full" / "log.csv").read_text().splitlines(keepends=True)
    _tear(run / "COLVAR", row, 13)  # "0.242000000 2": a step field that parses (the old resume kept the row)
    _tear(run / "log.csv", next(line for line in full_log if line.startswith("250,")), 6)
    capsys.readouterr()
    # readers: the torn row is skipped and said so; mlff fes analyses the complete rows
    assert read_colvar(run / "COLVAR")["step"][-1] == 240
    assert read_biased_run(run).step[-1] == 240
    assert "COLVAR: skipped its torn last line (line 123, '0.242000000 2')" in capsys.readouterr().err
    (tmp_path / "fes.yaml").write_text("min_samples_per_window: 3\n")  # a short toy run
    fes = ["fes", str(run), "--config", str(tmp_path / "fes.yaml"), "--bins", "12", "--bootstraps", "0", "--no-plots"]
    assert main(fes) == 0
    captured = capsys.readouterr()
    assert "COLVAR: skipped its torn last line" in captured.err and "barrier" in captured.out
    # resume: the torn rows are cut off (said so) and the run continues exactly as the uninterrupted one
    _run(part, resume=True)
    err = capsys.readouterr().err
    assert "COLVAR: removed a torn last line (13 bytes, '0.242000000 2')" in err
    assert "log.csv: removed a torn last line (6 bytes" in err
    assert (run / "COLVAR").read_bytes() == (tmp_path / "full" / "COLVAR").read_bytes()
    assert read_biased_run(run).step.tolist() == list(range(102, 401, 2))
    assert main(fes) == 0
    captured = capsys.readouterr()
    assert "torn" not in captured.err and "barrier" in captured.out


def test_damaged_run_files_are_one_line_errors_naming_the_file(tmp_path, capsys):
    _run(_config(tmp_path, production_steps=20))
    run = tmp_path / "run"
    colvar = (run / "COLVAR").read_text().splitlines(keepends=True)
    intact = "".join(colvar)
    header = len([line for line in colvar if line.startswith("#")])

    def damaged(k, row):
        lines = list(colvar)
        lines[k] = row
        (run / "COLVAR").write_text("".join(lines))

    damaged(3, " ".join(colvar[3].split()[:5]) + "\n")  # a truncated row in the middle
    with pytest.raises(MLFFError, match=r"COLVAR line 4 has 5 fields, the '#! FIELDS' header names 26"):
        read_biased_run(run)
    fields = colvar[4].split()
    damaged(4, " ".join([*fields[:3], "0.1x", *fields[4:]]) + "\n")
    with pytest.raises(MLFFError, match=r"COLVAR line 5 has '0.1x' for field x.1, not a number"):
        read_biased_run(run)
    (run / "COLVAR").write_text(intact)
    # resuming onto a damaged middle row is refused the same way (not appended to)
    damaged(header + 1, "garbage\n")
    with pytest.raises(MLFFError, match="COLVAR line 3 has 1 fields"):
        _run(_config(tmp_path, production_steps=40), resume=True)
    (run / "COLVAR").write_text(intact)
    meta = (run / "bias.json").read_text()
    (run / "bias.json").write_text(meta[: len(meta) // 2])  # a truncated bias.json
    with pytest.raises(MLFFError, match=r"bias.json is not valid JSON \(.* at line \d+, column \d+\): truncated"):
        read_biased_run(run)
    capsys.readouterr()
    assert main(["fes", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mlff: error: ") and "bias.json is not valid JSON" in err[0]
    (run / "bias.json").write_text(json.dumps({"kind": "umbrella", "temperature_K": 300.0}))
    with pytest.raises(MLFFError, match="bias.json lacks key 'n_systems'"):
        read_biased_run(run)
    (run / "bias.json").write_text(meta)
    (run / "COLVAR").unlink()
    (run / "trajectory.h5").write_bytes((run / "trajectory.h5").read_bytes()[:2000])  # a truncated trajectory
    with pytest.raises(MLFFError, match=r"trajectory.h5 is not a readable HDF5 file"):
        read_biased_run(run)


@pytest.mark.parametrize("changes, message", [
    ({"centers_A": [-1.0, 0.0, 1.0, 0.0]}, "centers_A: windows 1 and 3 have the same centre 0"),
    ({"centers_A": [-1.0, 0.5, 0.0, 1.0]},
     "centers_A: with exchange_every the centres must be in order .* window 0 at -1, window 1 at 0.5, window 2 at 0;"),
    ({"walls": [{"side": "upper", "at": -1.5, "kappa": 10.0}]},
     r"walls\[0\]: every window centre \(-1.4 to 1.4\) lies above the upper wall at -1.5"),
    ({"walls": [{"side": "lower", "at": 0.0, "kappa": 1.0}, {"side": "upper", "at": -0.5, "kappa": 1.0}]},
     r"walls\[1\]: the upper wall at -0.5 lies below the lower wall walls\[0\] at 0"),
    ({"cv": {"kind": "distance", "atoms": [0, 0]}}, r"CV d: atoms \[0, 0\] name an atom twice"),
    ({"cv": {"kind": "difference", "atoms": [0, 1, 0]}}, r"CV xi: atoms \[0, 1, 0\] name an atom twice"),
])
def test_configs_that_cannot_mean_what_they_say_are_refused_before_any_write(tmp_path, changes, message):
    with pytest.raises(MLFFError, match=message):
        _run(_config(tmp_path, **changes))
    assert not (tmp_path / "run").exists()


def test_what_a_user_could_mean_is_warned_loudly(capsys):
    def biases(**changes):
        config = load_umbrella_config({"structure": "toy", "cv": {"kind": "coordinate", "atoms": [0]}, **changes})
        return build_biases(config, [{}] * 4, 300.0, 0)[0]

    restraint = biases(centers_A=[-1.0, 0.5, 0.0, 1.0]).restraint  # no exchange: independent windows
    assert restraint.centers.tolist() == [-1.0, 0.5, 0.0, 1.0]  # kept as given: window k, k-th centre
    err = capsys.readouterr().err
    assert "WARNING: centers_A are not in order (window 0 at -1, window 1 at 0.5, window 2 at 0); kept as given" in err
    biases(centers_A=[1.0, 0.5, 0.0, -1.0], exchange_every=10)  # decreasing: neighbours are neighbours
    biases(centers_A=[-1.0, -0.5, 0.0, 1.0], walls=[{"side": "upper", "at": 0.2, "kappa": 5.0}])
    err = capsys.readouterr().err
    assert "centers_A" not in err and "WARNING: walls[0]: windows [3] have centres above the upper wall at 0.2" in err
    assert np.isfinite(restraint.kappas.numpy()).all()
