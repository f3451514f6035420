"""The FDH MD main job on a tiny run: trajectory, log, plot and summary written; fixed atoms held."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.io import write

from mlff.errors import MLFFError
from mlff.md.h5md import read_h5md
from mlff.models import build_potential
from mlff.models.store import save_potential

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "fdh_md.py"


def _module():
    spec = importlib.util.spec_from_file_location("fdh_md", WORKFLOW)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fdh_md_workflow_writes_trajectory_plot_and_summary(tmp_path, capsys):
    module = _module()
    potential = build_potential({"species": ["H", "C", "O"], "r_max": 4.0, "hidden_irreps": "8x0e", "max_ell": 1,
                                 "num_interactions": 1, "correlation": 2}, seed=3)
    potential.metadata["level_of_theory"] = "GFN2-xTB (test) -- NOT DFT"
    save_potential(potential, tmp_path / "pot", name="tiny")
    atoms = molecule("HCOOH") + molecule("H2O")
    atoms.positions[5:] += (0.3, 2.9, 0.2)
    atoms.info["fixed"] = [2]
    atoms.info["xi_atoms"] = [1, 3, 0]
    write(tmp_path / "start.xyz", atoms)
    out = tmp_path / "out"
    threads = torch.get_num_threads()  # the workflow may pin torch to one thread on the CPU
    try:
        summary = module.main(["--structure", str(tmp_path / "start.xyz"), "--steps", "20", "--out", str(out),
                               "--device", "cpu", "--potential", str(tmp_path / "pot")])
    finally:
        torch.set_num_threads(threads)
    assert summary["status"] == "finished" and summary["step"] == 20 and summary["ms_per_step"] > 0
    for name in ("trajectory.h5", "log.csv", "md.png", "run.json", "checkpoint.pt"):
        assert (out / name).stat().st_size > 0, name
    frames = read_h5md(out / "trajectory.h5", ":")
    assert [f.info["step"] for f in frames] == [0, 10, 20]
    assert frames[-1].info["xi"] == pytest.approx(atoms.get_distance(1, 3) - atoms.get_distance(3, 0), abs=0.5)
    np.testing.assert_array_equal(frames[0].positions[2], frames[-1].positions[2])
    assert json.loads((out / "run.json").read_text())["provenance"]["versions"]["mlff"]
    assert "GFN2-xTB (test) -- NOT DFT" in capsys.readouterr().err  # the level of theory is printed


def test_fdh_md_workflow_refuses_a_missing_potential_instead_of_random_weights(tmp_path):
    with pytest.raises(MLFFError, match="not found.*trained potential only"):
        _module().main(["--potential", str(tmp_path / "absent"), "--steps", "1", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
