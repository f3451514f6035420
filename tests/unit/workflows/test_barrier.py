"""workflows/fdh_barrier.py end to end in miniature: a short umbrella ladder on the small cluster with an untrained
committee and MBAR with the committee's model error. The untrained committee's profile has no barrier (its reactant
minimum is the ladder's edge), so the workflow must stop before paying for DFT labels; the reweighting of a real
barrier to DFT frames is tested on a known profile (tests/unit/fes/test_fes_committee.py)."""

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


def test_the_barrier_workflow_in_miniature(tmp_path, committee_potential, monkeypatch, capsys):
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
    # an untrained committee's profile over +-0.5 Å has its reactant minimum at the ladder's edge: no barrier, so
    # the workflow stops before the DFT check (no label is paid for) and says why in one line
    assert workflow.main(["--config", str(path), "--out", str(tmp_path / "run"), "--steps", "120"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("fdh_barrier: ") and "no barrier" in err
    barrier = json.loads((tmp_path / "run" / "fes" / "fes.json").read_text())["results"]["barrier"]
    assert barrier["found"] is False and "edge of the profile" in barrier["no_barrier"]
    assert not (tmp_path / "run" / "dft_check" / "labels.h5").exists()
    assert not (tmp_path / "run" / "barrier.json").exists()
