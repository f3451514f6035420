"""``mlff fes RUN_DIR`` end to end on synthetic BiasedRuns (the reader of run directories is mlff.bias.io's;
here it is replaced by one that returns the run), and its one-line errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from fes_surfaces import double_well, umbrella_run, wt_metad_run

import mlff.bias.io as bias_io
from mlff.cli import main
from mlff.errors import MLFFError
from mlff.fes.units import kT_kcal_per_mol


def _serve(monkeypatch, run):
    calls = []

    def read_biased_run(run_dir):
        calls.append(run_dir)
        if isinstance(run, Exception):
            raise run
        return run

    monkeypatch.setattr(bias_io, "read_biased_run", read_biased_run, raising=False)
    return calls


def test_umbrella_run_dir_to_json_csv_plots_and_table(tmp_path, monkeypatch, capsys):
    run = umbrella_run(double_well, np.linspace(-1.5, 1.5, 9), 0.65, 600, seed=0)
    run.provenance = {"potential": "toy double well"}
    calls = _serve(monkeypatch, run)
    assert main(["fes", str(tmp_path), "--bins", "20", "--bootstraps", "20"]) == 0
    assert calls and str(calls[0]) == str(tmp_path)
    out = capsys.readouterr().out
    assert "barrier (forward)" in out and "kcal/mol (bootstrap; analytic" in out and "overlap: ok" in out
    assert "rate (forward, Eyring)" in out
    fes = tmp_path / "fes"
    for name in ("fes.json", "fes.csv", "profile.png", "windows.png", "overlap.png", "convergence.png"):
        assert (fes / name).is_file(), name
    for name in ("profile.png", "windows.png", "overlap.png", "convergence.png"):
        assert (fes / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((fes / "fes.json").read_text())
    r = doc["results"]
    assert r["barrier_forward"]["unit"] == "kcal/mol" and r["barrier_forward"]["error_method"] == "bootstrap"
    assert r["barrier_forward"]["error"] > 0 and r["barrier_forward"]["error_analytic"] > 0
    assert r["rate_forward"]["unit"] == "1/s"
    lo, hi = r["rate_forward"]["interval_68"]
    assert lo < r["rate_forward"]["value"] < hi
    kT = kT_kcal_per_mol(300.0)
    assert r["rate_forward"]["value"] == pytest.approx(6.2510e12 * np.exp(-r["barrier_forward"]["value"] / kT), rel=1e-3)
    assert doc["overlap"]["status"] == "ok" and len(doc["overlap"]["matrix"]) == 9
    assert doc["provenance"]["run"] == {"potential": "toy double well"}
    assert doc["provenance"]["analysis"]["versions"]["pymbar"].startswith("4.")
    assert "mlff_git_commit" in doc["provenance"]["analysis"]
    assert doc["config"]["bins"] == 20 and doc["config"]["n_bootstraps"] == 20
    assert len(doc["windows"]) == 9 and all(w["n_decorrelated"] >= 10 for w in doc["windows"])
    with open(fes / "fes.csv") as handle:
        rows = list(csv.reader(line for line in handle if not line.startswith("#")))
    assert rows[0] == ["cv_A", "F_kcal_per_mol", "error_analytic_kcal_per_mol", "error_bootstrap_kcal_per_mol", "counts"]
    assert len(rows) == 21 and min(float(row[1]) for row in rows[1:]) == 0.0


def test_metad_run_dir_without_plots(tmp_path, monkeypatch, capsys):
    _serve(monkeypatch, wt_metad_run(double_well, 600, seed=3))
    out_dir = tmp_path / "analysis"
    assert main(["fes", str(tmp_path), "--out", str(out_dir), "--bootstraps", "20", "--no-plots"]) == 0
    assert "from the hills: barrier" in capsys.readouterr().out
    doc = json.loads((out_dir / "fes.json").read_text())
    assert doc["kind"] == "metad" and doc["metad"]["biasfactor"] == 8.0
    assert doc["results"]["barrier_forward"]["error_method"] == "block bootstrap"
    assert sorted(p.name for p in out_dir.iterdir()) == ["fes.csv", "fes.json"]


def _one_line_error(capsys, argv, match):
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("mlff: error: ") and "\n" not in err and "Traceback" not in err, err
    assert match in err, err


def test_bad_input_is_one_clear_line(tmp_path, monkeypatch, capsys):
    _one_line_error(capsys, ["fes", str(tmp_path / "missing")], "run directory not found")
    _serve(monkeypatch, MLFFError(f"{tmp_path}: no CV data (colvar) in the run directory"))
    _one_line_error(capsys, ["fes", str(tmp_path)], "no CV data")
    gapped = umbrella_run(double_well, np.array([-1.5, -1.25, 1.25, 1.5]), 5.0, 200, seed=4)
    _serve(monkeypatch, gapped)
    _one_line_error(capsys, ["fes", str(tmp_path)], "do not overlap")
    short = umbrella_run(double_well, np.linspace(-1.5, 1.5, 5), 0.65, 6, seed=5)
    _serve(monkeypatch, short)
    _one_line_error(capsys, ["fes", str(tmp_path)], "decorrelated samples")
    config = tmp_path / "fes.yaml"
    config.write_text("bins: 30\nbootstrap: 5\n")
    _one_line_error(capsys, ["fes", str(tmp_path), "--config", str(config)], "unknown key 'bootstrap'")
    _one_line_error(capsys, ["fes", str(tmp_path), "--bootstraps", "3"], "n_bootstraps = 3")


def test_single_points_through_the_cli(tmp_path, monkeypatch, capsys):
    run = umbrella_run(double_well, np.linspace(-1.5, 1.5, 9), 0.65, 400, seed=6)
    _serve(monkeypatch, run)
    points = tmp_path / "sp.csv"
    with open(points, "w") as handle:
        handle.write("step,system,target_energy_eV,reference_energy_eV\n")
        for t in range(0, run.n_samples, 4):
            for s in range(run.n_systems):
                handle.write(f"{run.step[t]},{s},{-100.0 + 0.01 * run.cv[t, s]},-100.0\n")
    assert main(["fes", str(tmp_path), "--bootstraps", "10", "--no-plots", "--single-points", str(points)]) == 0
    assert "at the single-point level: barrier" in capsys.readouterr().out
    doc = json.loads((tmp_path / "fes" / "fes.json").read_text())
    level = doc["level_reweighting"]
    assert level["n_frames"] == 9 * 100 and level["barrier_forward"]["unit"] == "kcal/mol"
    assert 0 < level["effective_sample_size"] <= 900
    header = (tmp_path / "fes" / "fes.csv").read_text().splitlines()[1].split(",")
    assert header[-2:] == ["F_target_level_kcal_per_mol", "error_F_target_level_kcal_per_mol"]


def test_frames_csv_lists_the_decorrelated_frames_and_round_trips_as_single_points(tmp_path, monkeypatch):
    """frames.csv names the frames MBAR used; zero energy differences on exactly those frames give back the
    MBAR profile (same frames, same weights), to round-off."""
    run = umbrella_run(double_well, np.linspace(-1.5, 1.5, 7), 0.65, 300, seed=8, phi=0.5)
    _serve(monkeypatch, run)
    assert main(["fes", str(tmp_path), "--bootstraps", "0", "--no-plots", "--bins", "15"]) == 0
    with open(tmp_path / "fes" / "frames.csv") as handle:
        frames = list(csv.DictReader(line for line in handle if not line.startswith("#")))
    doc = json.loads((tmp_path / "fes" / "fes.json").read_text())
    assert len(frames) == sum(w["n_decorrelated"] for w in doc["windows"])
    for f in frames[:50]:  # each frame's CV is the run's sample at that step and system
        t = int(np.flatnonzero(run.step == int(f["step"]))[0])
        assert float(f["cv_A"]) == pytest.approx(run.cv[t, int(f["system"])], rel=1e-7)
        assert run.window[t, int(f["system"])] == int(f["window"])
    points = tmp_path / "zero.csv"
    points.write_text("step,system,delta_energy_eV\n" + "".join(f"{f['step']},{f['system']},0.0\n" for f in frames))
    assert main(["fes", str(tmp_path), "--bootstraps", "0", "--no-plots", "--bins", "15", "--single-points",
                 str(points)]) == 0
    doc2 = json.loads((tmp_path / "fes" / "fes.json").read_text())
    main_profile, level_profile = doc2["profiles"]
    np.testing.assert_allclose(level_profile["F_kcal_per_mol"], main_profile["F_kcal_per_mol"], atol=1e-8)
    assert doc2["level_reweighting"]["delta_A"]["value"] == pytest.approx(0.0, abs=1e-10)


def test_bias_energies_that_are_not_the_restraints_are_flagged(tmp_path, monkeypatch, capsys):
    run = umbrella_run(double_well, np.linspace(-1.5, 1.5, 7), 0.65, 300, seed=9)
    run.bias_energy = run.bias_energy + 0.01 * (run.cv > 1.45)  # an upper wall the analysis does not know about
    _serve(monkeypatch, run)
    assert main(["fes", str(tmp_path), "--bootstraps", "0", "--no-plots"]) == 0
    assert "differ from the windows' harmonic restraints by up to 0.01 eV" in capsys.readouterr().out
