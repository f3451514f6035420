"""The CLI and the README's main job, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.io import read

ROOT = Path(__file__).resolve().parents[2]


def mlff(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mlff.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_potential_build_info_export(tmp_path, small_config):
    import yaml

    (tmp_path / "model.yaml").write_text(yaml.safe_dump(small_config))
    done = mlff("potential", "build", tmp_path / "model.yaml", tmp_path / "pot", "--committee", "2")
    assert done.returncode == 0, done.stderr
    info = mlff("potential", "info", tmp_path / "pot")
    assert info.returncode == 0 and "committee of 2" in info.stdout and "cutoff 4.0 Å" in info.stdout
    export = mlff("potential", "export", tmp_path / "pot", tmp_path / "m.model", "--member", "1")
    assert export.returncode == 0 and (tmp_path / "m.model").stat().st_size > 10_000


@pytest.mark.parametrize("args, message", [
    (["potential", "info", "/no/such/dir"], "not a potential directory"),
    (["potential", "build", "/no/such.yaml", "/no/such/out"], "config file not found"),
])
def test_user_errors_are_one_line_without_traceback(args, message):
    done = mlff(*args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_bad_config_key_is_named(tmp_path):
    (tmp_path / "bad.yaml").write_text("species: [H, O]\nhiden_irreps: 8x0e\n")
    done = mlff("potential", "build", tmp_path / "bad.yaml", tmp_path / "pot")
    assert done.returncode == 2 and "unknown key 'hiden_irreps'" in done.stderr


@pytest.mark.slow
def test_main_job_runs_and_writes_its_outputs(tmp_path):
    sys.path.insert(0, str(ROOT / "workflows"))
    import water_md

    summary = water_md.main(["--molecules", "8", "--steps", "6", "--every", "3", "--dtype", "float64",
                             "--out", str(tmp_path)])
    frames = read(tmp_path / "trajectory.extxyz", ":")
    assert len(frames) == 3 and len(frames[0]) == 24
    log = np.loadtxt(tmp_path / "log.csv", delimiter=",")
    assert log.shape == (7, 5) and np.isfinite(log).all()
    assert (tmp_path / "md.png").stat().st_size > 5_000
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["ns_per_day"] == pytest.approx(summary["ns_per_day"]) and run["ns_per_day"] > 0
    assert run["provenance"]["versions"]["mace-torch"]
