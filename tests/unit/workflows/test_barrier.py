"""workflows/fdh_barrier.py end to end in miniature: a short umbrella ladder on the small cluster with an untrained
committee, MBAR with the committee's model error, frames of the reactant basin and the TS window labelled (EMT
stands in for DFT, in two worker processes) and the profile reweighted to them; the report carries every number."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]


def _workflow():
    spec = importlib.util.spec_from_file_location("fdh_barrier", REPO / "workflows" / "fdh_barrier.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_barrier_workflow_in_miniature(tmp_path, committee_potential, monkeypatch):
    from mlff.models.store import save_potential

    monkeypatch.chdir(REPO)  # the config's relative paths (the pool) are the repository's
    save_potential(committee_potential, tmp_path / "pot")
    config = yaml.safe_load((REPO / "workflows" / "fdh_barrier.yaml").read_text())
    config["umbrella"].update(potential=str(tmp_path / "pot"), centers_A={"start": -0.5, "stop": 0.5, "count": 5},
                              spring_eV_per_A2=1.0, exchange_every=0, colvar_every=2)
    config["umbrella"]["md"].update(device="cpu", dtype="float64", timestep_fs=0.25, trajectory_every=2,
                                    checkpoint_every=100)
    config["fes"] = {"bins": 12, "n_bootstraps": 20, "committee": True, "equilibration": "none", "subsample": False,
                     "min_samples_per_window": 5, "slice_fractions": [1.0], "plots": False}
    config["check"].update(per_region=3, oracle={"backend": "ase", "calculator": "emt"}, calibration=None,
                           reactant_half_width_A=0.3, ts_half_width_A=0.3)
    path = tmp_path / "barrier.yaml"
    path.write_text(yaml.safe_dump(config))
    workflow = _workflow()
    assert workflow.main(["--config", str(path), "--out", str(tmp_path / "run"), "--steps", "120"]) == 0
    numbers = json.loads((tmp_path / "run" / "barrier.json").read_text())
    assert numbers["barrier"]["statistical_error"] > 0 and numbers["barrier"]["model_error"] > 0
    check = numbers["dft_check"]
    assert all(r["frames"] >= 3 for r in check["regions"].values()) and check["min_effective_sample_size"] >= 1
    assert check["barrier"] == pytest.approx(numbers["barrier"]["value"] + check["correction"])
    assert numbers["anchor"]["barrier_kcal_mol"] == 16.6
    labels = (tmp_path / "run" / "dft_check" / "labels.h5")
    from mlff.data import Dataset

    regions = [info["region"] for info in Dataset(labels).infos()]
    assert sorted(set(regions)) == ["reactant", "ts"] and len(regions) == 6
    text = (tmp_path / "run" / "barrier.md").read_text()
    assert "effective sample size" in " ".join(numbers["warnings"])  # EMT is far from the model: said so
    assert "(statistical, bootstrap)" in text and "(model, committee reweighting)" in text
    # every stage is done: a second run does nothing and says the same
    assert workflow.main(["--config", str(path), "--out", str(tmp_path / "run"), "--steps", "120"]) == 0
    assert json.loads((tmp_path / "run" / "barrier.json").read_text())["barrier"] == numbers["barrier"]
