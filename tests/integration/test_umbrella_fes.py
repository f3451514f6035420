"""The whole road on an exactly solvable model: umbrella windows in the batched engine (mlff umbrella's code)
-> the run directory -> mlff fes (MBAR) -> the exact free-energy profile and barrier of a 1D double well."""

import numpy as np
import pytest
from ase import units

from mlff.bias.umbrella import run_umbrella
from mlff.fes import load_fes_config, run_fes
from mlff.md.toy import DoubleWell, toy_particles

T = 300.0


@pytest.mark.slow
def test_umbrella_ladder_then_mbar_recovers_the_exact_double_well(tmp_path):
    model = DoubleWell(barrier_eV=0.13, tilt_eV=0.02)  # barrier ~5 kT, tilted so reactant != product
    config = {"structure": "toy", "cv": {"kind": "coordinate", "atoms": [0], "axis": 0, "name": "x"},
              "centers_A": {"start": -1.5, "stop": 1.5, "count": 13}, "spring_eV_per_A2": 1.5, "starts": "pull",
              "equilibration_steps": 200, "production_steps": 6000, "colvar_every": 10, "exchange_every": 50,
              "md": {"device": "cpu", "dtype": "float64", "timestep_fs": 2.0, "friction_per_fs": 0.05,
                     "temperature_K": T, "init_velocities": False, "trajectory_every": 0, "checkpoint_every": 0,
                     "seed": 11},
              "out": str(tmp_path / "ladder")}
    run_umbrella(config, structure=toy_particles([0.0])[0], model=model, show_progress=False)
    fes = load_fes_config(bins=24, cv_range=[-1.5, 1.5], n_bootstraps=50, reactant=[None, -0.3], product=[0.3, None])
    out = run_fes(tmp_path / "ladder", fes)
    profile = out.analysis.profiles[0]
    kT = units.kB * T
    exact = model.profile_eV(profile.cv) / kT
    sampled = np.isfinite(profile.f_kT) & (profile.counts > 100)  # the thin edge bins only widen their errors
    assert sampled.sum() >= 20
    shift = np.average(profile.f_kT[sampled] - exact[sampled], weights=1.0 / profile.error_kT[sampled] ** 2)
    deviation = np.abs(profile.f_kT[sampled] - exact[sampled] - shift)
    assert deviation.max() < 0.5, deviation
    assert np.mean(deviation < 3 * profile.error_kT[sampled] + 1e-9) >= 0.9  # error bars mean what they say
    barrier = out.analysis.barrier
    centres = profile.cv
    expected = (exact[np.abs(centres) < 0.3].max() - exact[centres < -0.3].min())  # on the same bins
    err = barrier.errors_kT["barrier_forward"]
    assert abs(barrier.values_kT["barrier_forward"] - expected) < max(3 * err, 0.3), (barrier.values_kT, expected, err)
    assert (tmp_path / "ladder" / "fes" / "fes.json").is_file() and (tmp_path / "ladder" / "fes" / "profile.png").is_file()
