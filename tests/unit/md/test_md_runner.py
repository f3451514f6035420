"""The MD runner: restart bit for bit, SIGTERM checkpoints, monitors that stop a run, CLI errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from ase.io import write
from md_helpers import FakeCommittee, NaNAfter, acid_water_file, one_thread

from mlff.cli import main
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
    """Formic acid + water (8 atoms) with a reaction coordinate and one fixed atom, as an extxyz file."""
    return acid_water_file(tmp_path)


def _config(structure, out, **kw):
    base = {"structure": structure, "potential": None, "integrator": "langevin", "steps": 12, "timestep_fs": 0.5,
            "temperature_K": 400.0, "friction_per_fs": 0.05, "dtype": "float64", "device": "cpu",
            "trajectory_every": 2, "checkpoint_every": 0, "monitor_every": 2, "out": str(out), "seed": 5}
    base.update(kw)
    return load_md_config(base)


def _datasets(path) -> dict[str, np.ndarray]:
    found = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and name.split("/")[0] in ("particles", "observables"):
                found[name] = obj[()]
        f.visititems(visit)
    return found


@pytest.mark.parametrize("engine, members", [("gpu", 1), ("ase", 1), ("gpu", 3)],
                         ids=["batched-engine", "ase-engine", "batched-engine-committee"])  # "gpu" would mark it
def test_restart_reproduces_the_uninterrupted_run_bit_for_bit(tmp_path, structure, request, engine, members):
    small_potential = request.getfixturevalue("small_potential" if members == 1 else "committee_potential")
    ref = run_md(_config(structure, tmp_path / "ref", engine=engine), potential=small_potential)
    assert ref["status"] == "finished" and ref["step"] == 12
    out = tmp_path / "split"
    run_md(_config(structure, out, engine=engine, steps=6), potential=small_potential)
    shutil.copy(out / "checkpoint.pt", tmp_path / "at6.pt")
    run_md(_config(structure, out, engine=engine, steps=10), potential=small_potential, resume=True)
    shutil.copy(tmp_path / "at6.pt", out / "checkpoint.pt")  # as if killed after step 10 with the step-6 checkpoint
    again = run_md(_config(structure, out, engine=engine, steps=12), potential=small_potential, resume=True)
    assert again["status"] == "finished" and again["steps_done"] == 6 and again["resumed"]
    a, b = load_checkpoint(tmp_path / "ref" / "checkpoint.pt"), load_checkpoint(out / "checkpoint.pt")
    for name in ("positions", "velocities", "forces", "energy", "generator_state"):
        assert torch.equal(a[name], b[name]), name
    ref_data, split_data = _datasets(tmp_path / "ref" / "trajectory.h5"), _datasets(out / "trajectory.h5")
    assert set(ref_data) == set(split_data) and "particles/system_0000/position/value" in ref_data
    for name, value in ref_data.items():
        np.testing.assert_array_equal(split_data[name], value, err_msg=name)
    steps = [row["step"] for row in read_log(out / "log.csv")]
    assert steps == list(range(0, 13, 2)) == [row["step"] for row in read_log(tmp_path / "ref" / "log.csv")]
    frames = read_h5md(out / "trajectory.h5", ":")
    assert [f.info["step"] for f in frames] == steps
    np.testing.assert_array_equal(frames[0].positions[5], frames[-1].positions[5])  # the fixed atom


def test_resume_on_another_kind_of_device_is_one_clear_error(tmp_path, structure, small_potential):
    from mlff.errors import MLFFError
    from mlff.md.checkpoint import restore_state

    run_md(_config(structure, tmp_path, steps=2), potential=small_potential)
    data = load_checkpoint(tmp_path / "checkpoint.pt")
    data["generator_device"] = "cuda:0"  # as written by a run on a GPU node
    engine = BatchEngine(_config(structure, tmp_path / "b"), read_structure(structure), small_potential)
    with pytest.raises(MLFFError, match="written by a run on cuda:0 and this run is on cpu"):
        restore_state(engine.state, data)


def test_fixed_atoms_given_as_a_boolean_mask(tmp_path, structure, small_potential):
    from ase.io import read

    atoms = read(structure)
    mask = np.zeros(len(atoms), dtype=bool)
    mask[[2, 6]] = True
    atoms.info["fixed"] = mask
    write(tmp_path / "masked.xyz", atoms)
    for engine in ("gpu", "ase"):
        out = tmp_path / engine
        run_md(_config(str(tmp_path / "masked.xyz"), out, engine=engine, steps=4), potential=small_potential)
        frames = read_h5md(out / "trajectory.h5", ":")
        moved = np.abs(frames[-1].positions - frames[0].positions).max(axis=1)
        assert (moved[mask] == 0).all() and (moved[~mask] > 0).all(), engine


def test_resume_refuses_a_changed_config(tmp_path, structure, small_potential):
    run_md(_config(structure, tmp_path, steps=2), potential=small_potential)
    with pytest.raises(Exception, match="'temperature_K' differs"):
        run_md(_config(structure, tmp_path, steps=4, temperature_K=500.0), potential=small_potential, resume=True)
    with pytest.raises(Exception, match="exists: continue that run with --resume"):
        run_md(_config(structure, tmp_path, steps=4), potential=small_potential)
    moved = tmp_path.parent / f"{tmp_path.name}-moved"
    shutil.copytree(tmp_path, moved)  # a run directory moved (e.g. to scratch) resumes from where it now is
    done = run_md(_config(structure, moved, steps=4), potential=small_potential, resume=True)
    assert done["status"] == "finished" and done["step"] == 4 and done["steps_done"] == 2


def _harmonic_engine(structure, out, wrap, **kw):
    from mlff.md.config import read_structure

    config = _config(structure, out, **kw)
    engine = BatchEngine(config, read_structure(structure), None, model=object())
    engine.model = wrap(HarmonicModel(engine.state.positions.clone(), 2.0))
    return config, engine


@pytest.mark.parametrize("case", ["nan", "force", "spread"])
def test_monitors_stop_the_run_with_a_saved_state(tmp_path, structure, case):
    wrap = {"nan": lambda m: NaNAfter(m, 7), "force": lambda m: m, "spread": lambda m: FakeCommittee(m, 0.01)}[case]
    limits = {"nan": {}, "force": {"max_force_eV_per_A": 1e-3},
              "spread": {"max_energy_std_eV": 0.055, "max_force_std_eV_per_A": 10.0}}[case]
    config, engine = _harmonic_engine(structure, tmp_path, wrap, steps=40, **limits)
    summary = run_md(config, engine=engine)
    assert summary["status"] == "stopped"
    expected = {"nan": "NaN or inf", "force": "force reached", "spread": "committee energy spread reached"}[case]
    assert expected in summary["message"] and "\n" not in summary["message"]
    stop_step = {"nan": 8, "force": 2, "spread": 6}[case]  # first monitor check after the event (every 2 steps)
    assert summary["step"] == stop_step
    saved = load_checkpoint(tmp_path / "stopped.pt")
    assert saved["step"] == stop_step
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "stopped"
    assert read_h5md(tmp_path / "trajectory.h5", ":")[-1].info["step"] <= stop_step


def test_cli_reports_a_monitor_stop_and_user_errors_in_one_line(tmp_path, structure, small_config, capsys):
    config = {"structure": structure, "potential": small_config, "steps": 6, "device": "cpu", "dtype": "float64",
              "monitor_every": 2, "max_force_eV_per_A": 1e-6, "out": str(tmp_path / "run")}
    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["md", str(path)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mlff: MD stopped at step 2: force reached")
    cases = [({**config, "temprature_K": 300}, "unknown key 'temprature_K'"),
             ({**config, "structure": str(tmp_path / "nope.xyz")}, "structure file not found"),
             ({**config, "integrator": "npt", "engine": "ase"}, "'npt' needs a cell periodic in all three"),
             ({**config, "integrator": "npt"}, "integrator 'npt' is not available with engine 'gpu'"),
             ({**config, "engine": "ase", "replicas": 2}, "engine 'ase' runs one replica"),
             ({**config, "out": str(tmp_path / "fresh")}, "no checkpoint to resume from")]
    for data, message in cases:
        path.write_text(yaml.safe_dump(data))
        args = ["md", str(path)] + (["--resume"] if "fresh" in str(data["out"]) else [])
        assert main(args) == 2, message
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("mlff: error: ") and message in err[-1], err


def test_sigterm_writes_a_checkpoint_and_the_resumed_run_finishes(tmp_path, structure, small_config):
    out = tmp_path / "run"
    config = {"structure": structure, "potential": small_config, "steps": 100000, "device": "cpu", "dtype": "float64",
              "trajectory_every": 5, "checkpoint_every": 5, "monitor_every": 5, "out": str(out)}
    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "mlff.cli", "md", str(path)], env=env, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120

    def checkpointed(step):  # a fresh run writes one at step 0 already
        return (out / "checkpoint.pt").exists() and load_checkpoint(out / "checkpoint.pt")["step"] >= step

    while not checkpointed(5) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert checkpointed(5), proc.stderr.read() if proc.poll() is not None else "timeout"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    assert "SIGTERM received at step" in err and "continue with --resume" in err
    stopped_at = load_checkpoint(out / "checkpoint.pt")["step"]
    assert stopped_at >= 5
    path.write_text(yaml.safe_dump({**config, "steps": stopped_at + 7}))
    summary = run_md(path, resume=True)
    assert summary["status"] == "finished" and summary["step"] == stopped_at + 7
    frames = read_h5md(out / "trajectory.h5", ":")
    assert [f.info["step"] for f in frames] == list(range(0, stopped_at + 8, 5))
    assert [row["step"] for row in read_log(out / "log.csv")] == list(range(0, stopped_at + 8, 5))


def test_committee_spread_is_recorded_in_the_trajectory_and_log(tmp_path, structure, committee_potential):
    summary = run_md(_config(structure, tmp_path, steps=4, integrator="nhc"), potential=committee_potential)
    assert summary["status"] == "finished" and summary["drift_eV_per_atom_per_ps"] is not None
    rows = read_log(tmp_path / "log.csv")
    assert all(row["energy_std"] > 0 and row["max_force_std"] > 0 for row in rows)
    frames = read_h5md(tmp_path / "trajectory.h5", ":")
    assert frames[-1].info["energy_std"] == pytest.approx(rows[-1]["energy_std"], rel=1e-12)
    assert frames[-1].info["xi"] == pytest.approx(rows[-1]["xi"], rel=1e-12)
    atoms = frames[-1]
    assert atoms.info["xi"] == pytest.approx(atoms.get_distance(1, 3) - atoms.get_distance(3, 0), rel=1e-10)


def test_sigusr1_in_process_checkpoints_and_resume_matches(tmp_path, structure):
    """SIGUSR1 (SLURM's warning signal) mid-run: checkpoint, status 'interrupted', and the resumed run ends
    exactly where an uninterrupted one does."""

    class SignalAt:
        def __init__(self, model, call):
            self.model, self.call, self.calls = model, call, 0

        def __call__(self, state):
            self.calls += 1
            if self.calls == self.call:
                os.kill(os.getpid(), signal.SIGUSR1)
            return self.model(state)

        def state_dict(self):
            return {}

        def load_state_dict(self, data, state):
            pass

    config, engine = _harmonic_engine(structure, tmp_path / "a", lambda m: SignalAt(m, 6), steps=10)
    summary = run_md(config, engine=engine)
    assert summary["status"] == "interrupted" and "SIGUSR1 received at step 5" in summary["message"]
    assert load_checkpoint(tmp_path / "a" / "checkpoint.pt")["step"] == 5
    _, engine = _harmonic_engine(structure, tmp_path / "a", lambda m: m, steps=10)
    resumed = run_md(config, engine=engine, resume=True)
    ref_config, ref_engine = _harmonic_engine(structure, tmp_path / "b", lambda m: m, steps=10)
    reference = run_md(ref_config, engine=ref_engine)
    assert resumed["step"] == reference["step"] == 10
    assert torch.equal(engine.state.positions, ref_engine.state.positions)
    assert torch.equal(engine.state.velocities, ref_engine.state.velocities)


def test_ase_npt_restart_restores_cell_and_barostat_exactly(tmp_path, periodic_box, small_potential):
    path = tmp_path / "box.xyz"
    write(path, periodic_box)

    def config(out, steps):
        return _config(str(path), tmp_path / out, engine="ase", integrator="npt", steps=steps, pressure_bar=1e4,
                       barostat_tau_fs=50.0, nhc_tau_fs=20.0)

    run_md(config("ref", 8), potential=small_potential)
    run_md(config("split", 4), potential=small_potential)
    run_md(config("split", 8), potential=small_potential, resume=True)
    a, b = load_checkpoint(tmp_path / "ref" / "checkpoint.pt"), load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert not torch.equal(a["cell"], torch.as_tensor(periodic_box.cell.array)[None])  # the barostat moved the cell
    for name in ("positions", "velocities", "cell"):
        assert torch.equal(a[name], b[name]), name
    assert set(a["extra"]) >= {"_barostat._xi", "_barostat._p_xi", "_eps", "_p_eps"}
    for name, value in a["extra"].items():
        assert value == b["extra"][name] if isinstance(value, str) else torch.equal(value, b["extra"][name]), name
