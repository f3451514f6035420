"""The numbers of the fidelity check (profile comparison) and of the stability check (bond events)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from ase.build import molecule

WORKFLOWS = Path(__file__).resolve().parents[3] / "workflows"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, WORKFLOWS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fidelity = _load("fdh_fidelity")
stability = _load("fdh_stability")


def test_profiles_that_differ_by_a_constant_agree_and_a_bump_is_found():
    cv = np.linspace(-1.6, 1.6, 33)
    ref = 8.0 * np.exp(-cv ** 2 / 0.1)
    err = np.full_like(cv, 0.1)
    same = fidelity.compare_profiles(cv, ref, err, ref + 3.7, err)
    assert same["max_abs_difference_kcal_per_mol"] < 1e-12 and same["within_tolerance"]
    bumped = ref + 3.7
    bumped[np.argmin(abs(cv - 0.5))] += 1.0
    c = fidelity.compare_profiles(cv, ref, err, bumped, err)
    assert not c["within_tolerance"] and not c["within_tolerance_or_2sigma"]
    assert c["at_cv_A"] == cv[np.argmin(abs(cv - 0.5))] and 0.9 < c["max_abs_difference_kcal_per_mol"] < 1.0
    noisy = fidelity.compare_profiles(cv, ref, np.full_like(cv, 0.5), bumped, np.full_like(cv, 0.5))
    assert not noisy["within_tolerance"] and noisy["within_tolerance_or_2sigma"]  # inside 2 sigma = 1.41


def test_bins_outside_the_compared_range_do_not_count_and_missing_bins_fail():
    cv = np.linspace(-1.6, 1.6, 33)
    ref, err = np.zeros_like(cv), np.full_like(cv, 0.1)
    other = ref.copy()
    other[0] = 5.0  # at -1.6, outside [-1.2, 1.2]
    assert fidelity.compare_profiles(cv, ref, err, other, err)["within_tolerance"]
    other[16] = np.nan
    c = fidelity.compare_profiles(cv, ref, err, other, err)
    assert c["bins_missing"] == 1 and not c["within_tolerance"]


def test_bond_events_separate_reactive_pairs_from_broken_bonds():
    start = molecule("HCOOH")
    symbols = start.get_chemical_symbols()
    c = symbols.index("C")
    hydrogens = [k for k, s in enumerate(symbols) if s == "H"]
    h_c = min(hydrogens, key=lambda k: start.get_distance(c, k))  # the H bonded to C
    frames = [start.copy() for _ in range(4)]
    far = frames[2].positions[h_c] - frames[2].positions[c]
    for k in (2, 3):
        frames[k].positions[h_c] = frames[k].positions[c] + 2.0 * far  # the C-H bond stretched to twice its length
    events = stability.bond_events(frames, xi_atoms=[c, h_c, 1])
    assert events["bonds_at_start"] == 4
    [broken] = events["broken"]
    assert broken["pair"] == sorted([c, h_c]) and broken["first_frame"] == 2 and broken["reactive"]
    assert stability.bond_events(frames, xi_atoms=None)["broken"][0]["reactive"] is False
    assert stability.bond_events(frames[:2], xi_atoms=None) == {"bonds_at_start": 4, "broken": [], "formed": []}


def test_compare_writes_the_overlay_and_the_verdict_from_two_fes_analyses(tmp_path, monkeypatch):
    import json
    from types import SimpleNamespace

    import mlff.fes.analysis
    from mlff.fes.result import BarrierEstimate, Profile

    cv = np.linspace(-1.55, 1.55, 32)
    shapes = {"xtb": 20 * np.exp(-cv ** 2 / 0.2), "mace": 20 * np.exp(-cv ** 2 / 0.2) + 0.3 * (cv > 1.0)}

    def fake_run_fes(run_dir, config):
        which = run_dir.name
        assert config.bins == 32 and config.cv_range == (-1.6, 1.6)
        f = shapes[which]
        profile = Profile("MBAR", cv, f, np.full_like(cv, 0.2), "bootstrap")
        barrier = BarrierEstimate({"barrier_forward": 20.0, "reaction": 0.1}, {"barrier_forward": 0.3, "reaction": 0.2},
                                  "bootstrap", -1.0, 0.0, 1.0)
        analysis = SimpleNamespace(profiles=[profile], temperature_K=300.0, barrier=barrier)
        return SimpleNamespace(analysis=analysis, document={"provenance": {"run": which}}, out=run_dir / "fes")

    monkeypatch.setattr(mlff.fes.analysis, "run_fes", fake_run_fes)
    assert fidelity.main(["compare", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "fidelity.json").read_text())
    assert (tmp_path / "fidelity.png").read_bytes()[:4] == b"\x89PNG"
    c = doc["comparison"]
    kcal = 0.5961612775922495  # kT at 300 K in kcal/mol
    assert c["within_tolerance"] and 0.3 * kcal * 0.5 < c["max_abs_difference_kcal_per_mol"] < 0.3 * kcal
    assert doc["barriers_kcal_per_mol [value, error]"]["xtb"]["barrier_forward"][0] == pytest.approx(20.0 * kcal, rel=1e-3)
    assert doc["provenance"]["mace"] == {"run": "mace"} and len(doc["difference"]) == 32


def test_the_two_runs_share_the_windows_and_differ_in_potential_and_precision(tmp_path):
    from types import SimpleNamespace

    args = SimpleNamespace(config=str(fidelity.HERE / "fdh_fidelity.yaml"), potential=None, out=str(tmp_path))
    xtb, mace = fidelity._config("xtb", args), fidelity._config("mace", args)
    assert (xtb.potential, mace.potential) == ("gfn2-xtb", "fdh-cluster-small-xtb")
    assert xtb.md["dtype"] == "float64" and mace.md["dtype"] == "float32" and mace.md["neighbors"] == "verlet"
    same = ("centers_A", "spring_eV_per_A2", "exchange_every", "equilibration_steps", "production_steps", "pool")
    assert all(getattr(xtb, k) == getattr(mace, k) for k in same)
    assert {k: v for k, v in xtb.md.items() if k not in fidelity.MACE_MD} == \
        {k: v for k, v in mace.md.items() if k not in fidelity.MACE_MD}  # seed, thermostat, steps: the same


def test_the_stability_summary_says_when_the_run_is_not_finished():
    replica = {"time_ps": 2.5, "temperature_K_mean": 301.0, "reactive_events": [],
               "max_force_std_eV_A": {"mean": 0.08, "max": 0.31}}
    doc = {"replicas": [replica] * 8, "status": "interrupted", "monitor_tripped": False, "steps_planned": 20000,
           "timestep_fs": 0.5, "nonreactive_bonds_broken": 0, "nonreactive_bonds_formed": 0}
    text = stability._summary(doc)
    assert text.startswith("INCOMPLETE, 8 replicas x 2.50 ps of the 10 ps planned") and "max 310 meV/Å" in text
    finished = stability._summary({**doc, "status": "finished"})
    assert finished.startswith("8 replicas x 2.50 ps at 301 K: status finished, no monitor trip")
    tripped = stability._summary({**doc, "status": "stopped", "monitor_tripped": True})
    assert "INCOMPLETE" not in tripped and "(MONITOR TRIPPED)" in tripped
