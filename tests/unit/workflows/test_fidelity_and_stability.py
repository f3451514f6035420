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
    # --card: the section and the plot go into the card of the weights the MACE windows ran, and no other's
    from mlff.errors import MLFFError
    from mlff.models.store import resolve_potential_path, weights_pins

    card = tmp_path / "potential"
    card.mkdir()
    (card / "potential.json").write_text((resolve_potential_path("fdh-cluster-small-xtb") / "potential.json").read_text())
    (card / "MODEL_CARD.md").write_text("# a potential\n\n## Stability\n\nkept\n")
    (tmp_path / "mace").mkdir()
    run = {"config": {"potential": str(card)}, "inputs": weights_pins(card), "provenance": {"mlff_git_commit": "abc"}}
    (tmp_path / "mace" / "run.json").write_text(json.dumps(run))
    assert fidelity.main(["compare", "--out", str(tmp_path), "--card", str(card)]) == 0
    text = (card / "MODEL_CARD.md").read_text()
    assert "## Stability\n\nkept" in text and "## Pipeline fidelity" in text and "within 0.5 kcal/mol everywhere: yes" in text
    assert f"(weights sha256 {run['inputs']['potential_sha256'][:16]})" in text and (card / "fidelity.png").is_file()
    run["inputs"]["potential_sha256"] = "0" * 64  # the windows ran other weights
    (tmp_path / "mace" / "run.json").write_text(json.dumps(run))
    with pytest.raises(MLFFError, match="not those the MACE windows ran"):
        fidelity._card(card, doc, tmp_path)


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


def test_closest_contact_finds_the_atoms_that_close_in_and_ignores_contacts_of_the_start():
    from ase import Atoms

    # a C-H...O hydrogen bond at the start (H...O 1.9 Å) and a water O 4 Å from the other H
    start = Atoms("CHHOO", positions=[[0, 0, 0], [1.09, 0, 0], [-1.09, 0, 0], [3.0, 0, 0], [-5.09, 0, 0]])
    frames = [start.copy() for _ in range(3)]
    frames[1].positions[4] = [-2.8, 0, 0]
    frames[2].positions[4] = [-2.6, 0, 0]  # the far O comes to 1.51 Å of the H
    frames[2].positions[3] = [2.4, 0, 0]   # the hydrogen bond shortens to 1.31 Å: a start contact, not new
    contact = stability.closest_contact(frames, xi_atoms=None)
    assert contact["atoms"] == "H2...O4" and contact["frame"] == 2
    assert contact["distance_A"] == pytest.approx(1.51) and contact["start_distance_A"] == pytest.approx(4.0)
    # the reactive pairs are the reaction's business
    assert stability.closest_contact(frames, xi_atoms=[4, 2, 0])["atoms"] != "H2...O4"


def test_the_card_names_the_monitor_trip_the_new_contacts_and_the_reference_check(tmp_path):
    replica = {"replica": 0, "frames": 45, "time_ps": 0.44, "temperature_K_mean": 287.0, "reactive_events": [],
               "max_force_std_eV_A": {"mean": 0.2, "max": 0.97}, "broken_nonreactive": [], "formed_nonreactive": [],
               "closest_contact": {"atoms": "H3...O36", "distance_A": 1.49, "start_distance_A": 2.88, "frame": 44}}
    doc = {"replicas": [replica], "status": "stopped", "monitor_tripped": True, "steps_planned": 20000,
           "timestep_fs": 0.5, "nonreactive_bonds_broken": 0, "nonreactive_bonds_formed": 0, "ms_per_step": 433.0,
           "device": "cpu", "provenance": {"created_utc": "2026-12-02"},
           "message": "MD stopped at step 890: committee force spread reached 2.063 eV/Å; state saved to x",
           "committee_spread_per_ps": [{"from_ps": 0.0, "to_ps": 1.0, "max_force_std_eV_A_mean": 0.2,
                                        "max_force_std_eV_A_max": 0.97}],
           "reference_check": {"replica": 0, "frames": 3, "method": "GFN2-xTB", "potential_dE_eV": [0.0, -0.1, -0.5],
                               "xtb_dE_eV": [0.0, 0.4, 1.02], "force_error_max_eV_A": [0.8, 1.6, 4.78]}}
    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# a potential\n\n## Stability\n\nold text\n")
    stability._card(card, doc)
    text = card.read_text()
    assert text.startswith("# a potential") and "old text" not in text and text.count("## Stability") == 1
    assert "(MONITOR TRIPPED)" in text and "Monitor: MD stopped at step 890" in text and "state saved" not in text
    assert "| 0 | H3...O36 | 1.49 | 2.88 | 44 |" in text
    assert "energy change of the potential -0.50 eV, of xTB +1.02 eV; largest force error 4.78 eV/Å" in text


def test_the_reference_check_sets_the_potential_beside_xtb_on_the_same_frames():
    pytest.importorskip("tblite")
    from mlff.md import read_structure

    start = read_structure("fdh-cluster:small:reactant")
    frames = [start.copy() for _ in range(3)]
    for k, atoms in enumerate(frames[1:], start=1):
        atoms.rattle(0.02 * k, seed=k)
    info = {k: start.info[k] for k in ("charge", "multiplicity") if k in start.info}
    check = stability.reference_check(frames, "fdh-cluster-small-xtb", info, last=2)
    assert check["frames"] == 2 and check["potential_dE_eV"][0] == 0.0 and check["xtb_dE_eV"][0] == 0.0
    assert abs(check["xtb_dE_eV"][1]) > 1e-4  # a rattle of 0.04 Å costs energy at the xTB level
    assert all(np.isfinite(check["force_error_max_eV_A"]))


def test_the_stability_run_with_xtb_itself_steps_on_xtb_forces_and_resumes(tmp_path):
    pytest.importorskip("tblite")
    import argparse
    import json

    import h5py

    from mlff.data.sampling import xtb_calculator
    from mlff.md import read_structure
    from mlff.md.h5md import EV_TO_KJ_PER_MOL

    out = tmp_path / "xtb"
    args = argparse.Namespace(potential="gfn2-xtb", steps=4, replicas=2, device="cpu", out=str(out), resume=False)
    stability._run(args)
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["steps_done"] == 4 and run["systems"] == 2
    assert run["config"]["potential"] is None  # no MACE anywhere in the run
    start = read_structure("fdh-cluster:small:reactant")
    start.calc = xtb_calculator(start)
    with h5py.File(out / "trajectory.h5", "r") as f:  # frame 0 of each replica: the start, with xTB's forces
        for group in ("system_0000", "system_0001"):
            forces = f[f"particles/{group}/force/value"]
            assert forces.attrs["unit"] == "kJ mol-1 Angstrom-1"  # H5MD stores kJ/mol/Å (MDAnalysis reads it)
            np.testing.assert_allclose(forces[0] / EV_TO_KJ_PER_MOL, start.get_forces(), atol=2e-3)
    stability._run(argparse.Namespace(**{**vars(args), "steps": 6, "resume": True}))
    run = json.loads((out / "run.json").read_text())
    assert run["step"] == 6 and run["steps_done"] == 2 and run["resumed"]
    # export: the worst replica's last frames (and rattled copies) labelled with xTB, resumably
    from mlff.data import Dataset
    from mlff.md.h5md import read_h5md

    to = tmp_path / "contact.h5"
    export = argparse.Namespace(out=str(out), to=str(to), last=2, rattle=1, sigma=0.05, seed=0, spread_above=None)
    stability._export(export)
    records = Dataset(to).read()
    n = min(2, len(read_h5md(out / "trajectory.h5", ":", group="system_0000")))
    assert len(records) == 2 * n and {r.info["provenance"]["method"] for r in records} == {"GFN2-xTB"}
    assert all("contact" in r.info["tags"] and "replica 0" in r.info["source"] for r in records)
    stability._export(export)  # a second export labels nothing again
    assert len(Dataset(to)) == 2 * n


def test_exported_frames_keep_the_cluster_info_rattle_free_atoms_only_and_hold_out_every_fifth():
    from mlff.md import read_structure

    start = read_structure("fdh-cluster:small:reactant")
    frames = [start.copy() for _ in range(5)]
    records = stability.export_frames(frames, start, source="run r replica 7", rattle=2, sigma_A=0.05, seed=1)
    assert len(records) == 15
    assert [r.info["split"] for r in records] == ["train"] * 12 + ["test"] * 3  # frame 4 and its copies
    fixed = start.info["fixed"]
    for r in records:
        assert r.info["xi_atoms"] == start.info["xi_atoms"] and r.info["charge"] == start.info.get("charge")
        assert "contact" in r.info["tags"] and r.calc is None
        np.testing.assert_array_equal(r.positions[fixed], start.positions[fixed])
    assert np.abs(records[1].positions - start.positions).max() > 0.01 and records[0].positions is not None
    np.testing.assert_array_equal(records[0].positions, start.positions)
    assert records[1].info["source"] == "run r replica 7 frame 0 rattled 1, sigma 0.05 Å, seed 1"


def test_the_numbers_of_a_run_go_only_into_the_card_of_the_weights_it_ran(tmp_path):
    import json
    import shutil

    from mlff.errors import MLFFError
    from mlff.models.store import resolve_potential_path, weights_pins

    shipped = resolve_potential_path("fdh-cluster-small-xtb")
    run = {"inputs": weights_pins(shipped)}
    assert len(run["inputs"]["potential_sha256"]) == 64 and run["inputs"]["potential_files_sha256"]
    stability._check_weights(run, "fdh-cluster-small-xtb", "compare with xTB")  # same weights: no complaint
    stability._check_weights({}, tmp_path, "compare with xTB")  # a run from before the pins: not checked
    other = tmp_path / "retrained"  # the same directory name reused by a later round: other weights
    other.mkdir()
    card = json.loads((shipped / "potential.json").read_text())
    card["sha256"] = {k: "0" * 64 for k in card["sha256"]}
    (other / "potential.json").write_text(json.dumps(card))
    with pytest.raises(MLFFError, match="not those the stability run used"):
        stability._check_weights(run, other, "write the stability numbers into the card of")
    shutil.rmtree(other)


def test_the_export_picks_the_last_frames_and_every_frame_where_the_committee_was_unsure():
    frames = [molecule("H2O") for _ in range(8)]
    for k, (atoms, spread) in enumerate(zip(frames, [0.1, 0.5, 0.2, np.nan, 0.3, 0.1, 0.1, 0.2])):
        atoms.info["max_force_std"] = spread
    assert stability.pick_frames(frames, last=2, spread_above=None) == [6, 7]
    assert stability.pick_frames(frames, last=2, spread_above=0.3) == [1, 4, 6, 7]
    assert stability.pick_frames(frames, last=0, spread_above=0.3) == [1, 4]  # the other replicas
    assert stability.pick_frames(frames, last=0, spread_above=None) == []
    assert stability.pick_frames(frames[:1], last=40, spread_above=None) == [0]
