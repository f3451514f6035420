"""The FDH umbrella workflow (24 windows of the small cluster, one batch) on a few steps of an untrained MACE:
start structures from the pool near each centre, a run directory read_biased_run reads, the potential named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlff.bias.io import read_biased_run
from mlff.bias.umbrella import load_umbrella_config, run_umbrella, window_centers
from mlff.config import load_yaml
from mlff.errors import MLFFError

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "fdh_umbrella.yaml"
REPO = WORKFLOW.parents[1]


def test_workflow_config_has_24_windows_and_names_its_potential():
    config = load_umbrella_config(WORKFLOW)
    centers = window_centers(config.centers_A)
    assert len(centers) == 24 and centers[0] == -1.6 and centers[-1] == pytest.approx(1.6)
    assert config.potential == "fdh-cluster-small-xtb" and config.exchange_every > 0
    if not (REPO / "potentials" / "fdh-cluster-small-xtb" / "potential.json").is_file():
        with pytest.raises(MLFFError, match="potential 'fdh-cluster-small-xtb' not found"):
            run_umbrella({**load_yaml(WORKFLOW), "out": "/nonexistent/never-written", "starts": "structure"})


def test_the_shipped_potential_runs_the_workflow(tmp_path, capsys, monkeypatch):
    if not (REPO / "potentials" / "fdh-cluster-small-xtb" / "potential.json").is_file():
        pytest.skip("fdh-cluster-small-xtb is not in this checkout")
    monkeypatch.chdir(REPO)
    data = {**load_yaml(WORKFLOW), "equilibration_steps": 1, "production_steps": 2, "colvar_every": 1,
            "out": str(tmp_path / "umbrella")}
    data["md"] = {**data["md"], "device": "cpu", "checkpoint_every": 0}
    summary = run_umbrella(data, show_progress=False)
    err = capsys.readouterr().err
    assert "POTENTIAL = trained potential fdh-cluster-small-xtb" in err and "NOT DFT" in err
    assert summary["systems"] == 24 and summary["step"] == 3
    run = read_biased_run(tmp_path / "umbrella")
    assert np.abs(run.cv[-1] - run.centers).max() < 0.3  # 3 steps of 0.5 fs: each window near its centre
    import json

    from mlff.models.store import weights_pins

    pinned = json.loads((tmp_path / "umbrella" / "run.json").read_text())["inputs"]  # which round of the weights
    assert pinned["potential_sha256"] == weights_pins("fdh-cluster-small-xtb")["potential_sha256"]


@pytest.mark.slow
def test_fdh_umbrella_workflow_runs_all_windows_in_one_batch(tmp_path, small_config, capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # the workflow names the pool relative to the repository
    data = {**load_yaml(WORKFLOW), "potential": dict(small_config), "equilibration_steps": 2, "production_steps": 4,
            "colvar_every": 2, "out": str(tmp_path / "umbrella")}
    data["md"] = {**data["md"], "device": "cpu", "trajectory_every": 3, "checkpoint_every": 0}
    summary = run_umbrella(data, show_progress=False)
    assert "POTENTIAL = UNTRAINED MACE" in capsys.readouterr().err
    assert summary["systems"] == 24 and summary["step"] == 6
    run = read_biased_run(tmp_path / "umbrella")
    assert run.cv_name == "xi" and run.cv.shape == (2, 24) and run.step.tolist() == [4, 6]
    meta = json.loads((tmp_path / "umbrella" / "bias.json").read_text())
    assert np.abs(np.array(meta["start_cv"]) - run.centers).max() < 0.05  # pool geometries near each centre
    assert "UNTRAINED" in meta["potential"] and len(meta["windows"]) == 24
