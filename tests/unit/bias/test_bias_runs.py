"""Biased runs end to end on toy potentials: an umbrella ladder on the 1D double well in the batched engine
writes a run directory that read_biased_run reads back exactly; restarts are bit for bit; bad input is one line."""

from __future__ import annotations

import json
import h5py
import numpy as np
import pytest
import torch

from mlff.bias.io import read_biased_run, read_colvar
from mlff.bias.umbrella import run_umbrella, window_centers
from mlff.errors import MLFFError
from mlff.md.toy import DoubleWell, toy_particles

MD = {"device": "cpu", "dtype": "float64", "timestep_fs": 1.0, "friction_per_fs": 0.05, "temperature_K": 300.0,
      "init_velocities": False, "trajectory_every": 10, "checkpoint_every": 20, "seed": 3}


def _config(tmp_path, name="run", **changes):
    config = {"structure": "toy", "cv": {"kind": "coordinate", "atoms": [0], "axis": 0, "name": "x"},
              "centers_A": {"start": -1.4, "stop": 1.4, "count": 8}, "spring_eV_per_A2": 2.0, "starts": "structure",
              "equilibration_steps": 20, "production_steps": 100, "colvar_every": 5, "md": dict(MD),
              "out": str(tmp_path / name)}
    config.update(changes)
    return config


def _run(config, **kw):
    return run_umbrella(config, structure=toy_particles([0.0])[0], model=DoubleWell(barrier_eV=0.13), show_progress=False, **kw)


def test_umbrella_ladder_on_the_double_well_is_read_back(tmp_path):
    config = _config(tmp_path, exchange_every=10)
    summary = _run(config)
    assert summary["status"] == "finished" and summary["systems"] == 8
    run = read_biased_run(tmp_path / "run")
    assert run.kind == "umbrella" and run.cv_name == "x" and run.temperature_K == 300.0
    assert np.allclose(run.centers, np.linspace(-1.4, 1.4, 8)) and np.allclose(run.kappas, 2.0)
    assert run.step.tolist() == list(range(25, 121, 5))  # every colvar_every steps after the equilibration
    assert np.allclose(run.time_fs, run.step * 1.0)
    assert run.cv.shape == run.window.shape == run.bias_energy.shape == (20, 8)
    # every sample's bias is the restraint of the window it carried: kappa/2 (x - centre)^2
    expected = 0.5 * run.kappas[run.window] * (run.cv - run.centers[run.window]) ** 2
    assert np.allclose(run.bias_energy, expected, rtol=1e-9, atol=1e-12)
    assert (np.sort(run.window, axis=1) == np.arange(8)).all()  # a permutation of the windows at every sample
    # the COLVAR values are the trajectory's: x of the particle at the H5MD frames, and the same observables
    with h5py.File(tmp_path / "run" / "trajectory.h5") as f:
        for s in range(8):
            steps = f[f"particles/system_{s:04d}/position/step"][()]
            x = f[f"particles/system_{s:04d}/position/value"][:, 0, 0]
            obs = f[f"observables/system_{s:04d}"]
            for k, step in enumerate(steps):
                if step in run.step:
                    t = int(np.flatnonzero(run.step == step)[0])
                    assert run.cv[t, s] == pytest.approx(x[k], abs=1e-10)
                    assert obs["cv/value"][k] == pytest.approx(x[k], abs=1e-12)
                    assert int(obs["window/value"][k]) == run.window[t, s]
                    assert obs["bias_energy/value"][k] == pytest.approx(run.bias_energy[t, s], rel=1e-9, abs=1e-12)
            assert np.allclose(obs["physical_energy/value"][()] + obs["bias_energy/value"][()],
                               obs["potential_energy/value"][()], rtol=1e-12, atol=1e-12)
    meta = json.loads((tmp_path / "run" / "bias.json").read_text())
    assert [w["samples"] for w in meta["windows"]] == [20] * 8
    assert len(meta["windows"][0]) and "exchange_acceptance_to_next" in meta["windows"][0]
    # physics: each window's samples sit near its centre (spring 2 eV/Å², sigma ~0.11 Å without the well)
    means = np.array([w["mean_cv"] for w in meta["windows"]])
    assert np.abs(means - run.centers).max() < 0.35
    with_equilibration = read_biased_run(tmp_path / "run", include_equilibration=True)
    assert with_equilibration.step[0] == 0 and with_equilibration.n_samples == 25
    # without COLVAR the trajectory's observables are the samples (every trajectory_every steps)
    (tmp_path / "run" / "COLVAR").unlink()
    sparse = read_biased_run(tmp_path / "run")
    assert sparse.step.tolist() == [30, 40, 50, 60, 70, 80, 90, 100, 110, 120]
    rows = [int(np.flatnonzero(run.step == k)[0]) for k in sparse.step]
    assert np.allclose(sparse.cv, run.cv[rows], atol=1e-10) and (sparse.window == run.window[rows]).all()
    assert np.allclose(sparse.bias_energy, run.bias_energy[rows], rtol=1e-9, atol=1e-12)


def _restart_pair(tmp_path, **changes):
    full = _config(tmp_path, "full", **changes)
    _run(full)
    part = _config(tmp_path, "part", **changes)
    first = dict(part, production_steps=40)  # stops at step 60, a checkpoint step
    _run(first)
    _run(part, resume=True)
    return tmp_path / "full", tmp_path / "part"


def _same_run(a, b, files):
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ca, cb = (torch.load(d / "checkpoint.pt", weights_only=True) for d in (a, b))
    for key in ("positions", "velocities", "forces", "energy"):
        assert torch.equal(ca[key], cb[key]), key
    assert json.dumps(ca["extra"]["bias"], default=lambda t: t.tolist()) == \
        json.dumps(cb["extra"]["bias"], default=lambda t: t.tolist())


def test_restart_of_an_umbrella_run_with_exchange_is_bit_for_bit(tmp_path):
    full, part = _restart_pair(tmp_path, exchange_every=10)
    _same_run(full, part, ["COLVAR"])
    assert read_colvar(part / "COLVAR")["step"].tolist() == list(range(0, 121, 5))


def test_restart_of_a_metad_run_is_bit_for_bit(tmp_path):
    metad = {"sigma": 0.2, "height_eV": 0.02, "pace": 5, "biasfactor": 6.0}
    full, part = _restart_pair(tmp_path, centers_A=None, metad=metad, systems=2, spring_eV_per_A2=None)
    _same_run(full, part, ["COLVAR", "HILLS.0", "HILLS.1"])
    run = read_biased_run(part)
    assert run.kind == "metad" and run.hills is not None
    assert len(run.hills["center"]) == 2 * 24  # hills at steps 5, 10, ..., 120 for each of two walkers
    assert (run.window == np.arange(2)).all()


def test_shared_metad_run_and_hills(tmp_path):
    metad = {"sigma": 0.2, "height_eV": 0.02, "pace": 10, "biasfactor": 6.0, "shared": True}
    _run(_config(tmp_path, centers_A=None, metad=metad, systems=3, production_steps=40))
    run = read_biased_run(tmp_path / "run")
    assert run.hills["system"].tolist() == [-1] * 18 and (run.window == 0).all()
    # the last COLVAR bias of each walker equals the bias rebuilt from the HILLS file at its CV
    meta = json.loads((tmp_path / "run" / "bias.json").read_text())
    assert meta["hills_files"] == ["HILLS"] and meta["shared_hills"]


def test_bad_input_is_one_clear_line(tmp_path):
    with pytest.raises(MLFFError, match="gives no windows"):
        window_centers({"start": 1.0, "stop": -1.0, "spacing": 0.1})
    with pytest.raises(MLFFError, match="spring_eV_per_A2 must be > 0"):
        _run(_config(tmp_path, "spring", spring_eV_per_A2=0.0))
    with pytest.raises(MLFFError, match="atom 3 is outside system 0, which has 1 atoms"):
        _run(_config(tmp_path, "atoms", cv={"kind": "distance", "atoms": [0, 3]}))
    with pytest.raises(MLFFError, match="has no CV data"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "bias.json").write_text(json.dumps({"kind": "umbrella", "n_systems": 1,
                                                                   "cv": {"name": "x"}, "temperature_K": 300}))
        read_biased_run(tmp_path / "empty")
    with pytest.raises(MLFFError, match="not a biased run directory"):
        read_biased_run(tmp_path)
    with pytest.raises(MLFFError, match="key 'spring_eV_per_A2' differs"):
        _run(_config(tmp_path, "changed"))
        _run(_config(tmp_path, "changed", spring_eV_per_A2=3.0), resume=True)


def test_cli_reports_bad_umbrella_config_in_one_line(tmp_path, capsys):
    from mlff.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("structure: fdh-cluster:small:reactant\npotential: no-such-potential\n"
                   "centers_A: {start: -1.6, stop: 1.6, spacing: -0.1}\n")
    assert main(["umbrella", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mlff: error: centers_A: the range -1.6 to 1.6 with spacing -0.1 gives no windows")
    bad.write_text("structure: fdh-cluster:small:reactant\npotential: no-such-potential\n"
                   "centers_A: [0.0, 0.5]\nstarts: structure\nout: " + str(tmp_path / "x") + "\n")
    assert main(["umbrella", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mlff: error: potential 'no-such-potential' not found")


def test_restart_of_a_metad_run_in_the_ase_engine_is_bit_for_bit(tmp_path):
    from ase import Atoms
    from ase.calculators.emt import EMT

    from mlff.md.ase_model import AseCalculatorModel

    cluster = Atoms("Cu5", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0], [0, 0, 2.5], [1.8, 1.8, 1.8]])
    metad = {"sigma": 0.1, "height_eV": 0.02, "pace": 5, "biasfactor": 6.0}
    md = {**MD, "engine": "ase", "timestep_fs": 2.0}

    def run(name, steps, resume=False):
        config = _config(tmp_path, name, cv={"kind": "distance", "atoms": [0, 4]}, centers_A=None, metad=metad,
                         systems=1, production_steps=steps, md=md)
        run_umbrella(config, structure=cluster, model=AseCalculatorModel(lambda a: EMT()), show_progress=False,
                     resume=resume)

    run("full", 100)
    run("part", 40)
    run("part", 100, resume=True)
    _same_run(tmp_path / "full", tmp_path / "part", ["COLVAR", "HILLS.0"])


def test_pulled_starts_reach_their_centres(tmp_path):
    config = _config(tmp_path, starts="pull", pull_steps=300, centers_A=[-1.0, -0.2, 0.6, 1.2], spring_eV_per_A2=5.0,
                     production_steps=10, equilibration_steps=0)
    _run(config)
    meta = json.loads((tmp_path / "run" / "bias.json").read_text())
    # all windows started at x = 0 and were pulled (in one batch) to within a few sigma (0.07 Å) of their centres
    assert np.abs(np.array(meta["start_cv"]) - [-1.0, -0.2, 0.6, 1.2]).max() < 0.25
    from ase.io import read

    starts = read(tmp_path / "run" / "starts.xyz", ":")
    assert np.allclose([a.positions[0, 0] for a in starts], meta["start_cv"], atol=1e-9)


def test_a_path_integral_umbrella_ladder_biases_the_centroids_and_restarts_bit_for_bit(tmp_path):
    """md.beads: 4 on the double well with replica exchange: one COLVAR column per window (the centroid's CV),
    each sample's bias the restraint of its window at the centroid, the trajectory holding the centroids, the
    quantum kinetic-energy estimators among the observables, and a restart bit for bit."""
    md = dict(MD, beads=4, init_velocities=True)
    summary = _run(_config(tmp_path, "pi", exchange_every=10, md=md))
    assert summary["status"] == "finished"
    run = read_biased_run(tmp_path / "pi")
    assert run.cv.shape == (20, 8) and json.loads((tmp_path / "pi" / "bias.json").read_text())["beads"] == 4
    expected = 0.5 * run.kappas[run.window] * (run.cv - run.centers[run.window]) ** 2
    assert np.allclose(run.bias_energy, expected, rtol=1e-9, atol=1e-12)
    end = torch.load(tmp_path / "pi" / "checkpoint.pt", weights_only=True)
    centroids = end["positions"].view(8, 4, -1, 3).mean(1)
    with h5py.File(tmp_path / "pi" / "trajectory.h5") as f:
        assert sorted(f["particles"]) == [f"system_{s:04d}" for s in range(8)]
        last = f["particles/system_0005/position/value"][-1]
        assert "kinetic_energy_virial" in f["observables/system_0005"]
    assert np.allclose(last, centroids[5].numpy(), atol=1e-12)
    full, part = _restart_pair(tmp_path, exchange_every=10, md=md)
    _same_run(full, part, ["COLVAR"])
