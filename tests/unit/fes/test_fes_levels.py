"""Reweighting an umbrella profile to another level of theory from single points (FEP through MBAR)."""

from __future__ import annotations

import numpy as np
import pytest
from fes_surfaces import KT, double_well, exact_bin_free_energies, umbrella_run

from mlff.errors import MLFFError
from mlff.fes import FESConfig, analyse
from mlff.fes.barrier import locate


def _bump(x, height_kT=1.0, tilt_kT=0.5):
    """E_target - E_reference (eV): a 1 kT bump on the barrier and a tilt."""
    return KT * (height_kT * np.exp(-0.5 * (np.asarray(x) / 0.3) ** 2) + tilt_kT * np.asarray(x))


def _write_single_points(path, run, delta, every=2):
    t = np.arange(0, run.n_samples, every)
    with open(path, "w") as handle:
        handle.write("# synthetic single points: E_target - E_reference\nstep,system,delta_energy_eV\n")
        for ti in t:
            for s in range(run.n_systems):
                handle.write(f"{run.step[ti]},{s},{delta(run.cv[ti, s]):.12g}\n")
    return path


@pytest.fixture(scope="module")
def run():
    return umbrella_run(double_well, np.linspace(-1.5, 1.5, 13), 0.65, 1600, seed=21)


@pytest.mark.slow
def test_profile_reweighted_to_the_target_level_is_exact(run, tmp_path):
    path = _write_single_points(tmp_path / "sp.csv", run, _bump)
    config = FESConfig(bins=24, cv_range=(-1.4, 1.4), n_bootstraps=40, slice_fractions=(1.0,), single_points=str(path))
    a = analyse(run, config)
    level = a.extra["level"]
    assert level["n_frames"] == 13 * 800 and level["windows_used"] == list(range(13))
    assert 0.3 * level["n_frames"] < level["ess_target"] < level["ess_reference"] <= level["n_frames"]

    def target(x):
        return double_well(x) + _bump(x)

    exact = exact_bin_free_energies(target, a.profiles[1].edges)
    f = level["f_target"] + np.log(np.sum(np.exp(-level["f_target"])))
    deviation = f - exact
    assert np.mean(np.abs(deviation) <= 3.0 * a.profiles[1].error_kT) >= 0.9
    assert np.max(np.abs(deviation)) < 0.35
    # the bump (+1 kT at the TS) and the tilt (-0.5 kT at the reactant) raise the barrier by about 1.5 kT; the
    # reweighted barrier must be the exact target one
    cv = a.profiles[1].cv
    marks = locate(cv, exact, (-np.inf, -0.3), (0.3, np.inf))
    exact_barrier = exact[marks.ts] - exact[marks.reactant]
    error = level["errors_kT"]["barrier_forward"]
    assert abs(level["values_kT"]["barrier_forward"] - exact_barrier) < 3.0 * error + 0.1
    assert level["values_kT"]["barrier_forward"] - a.barrier.values_kT["barrier_forward"] > 1.0
    assert not any("single-point level" in w for w in a.warnings)


def test_a_far_level_is_flagged_by_its_effective_sample_size(run, tmp_path):
    path = _write_single_points(tmp_path / "far.csv", run, lambda x: _bump(x, height_kT=0.0, tilt_kT=12.0), every=8)
    a = analyse(run, FESConfig(bins=20, n_bootstraps=0, slice_fractions=(1.0,), single_points=str(path)))
    assert a.extra["level"]["ess_target"] < 0.1 * a.extra["level"]["n_frames"]
    assert any("effective sample size" in w and "extrapolation" in w for w in a.warnings)


def test_bad_single_point_files_are_one_clear_error(run, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("step,system,energy\n0,0,1.0\n")
    with pytest.raises(MLFFError, match="expected step, system and delta_energy_eV"):
        analyse(run, FESConfig(n_bootstraps=0, single_points=str(bad)))
    missing = tmp_path / "missing.csv"
    missing.write_text("step,system,delta_energy_eV\n7,0,0.1\n")  # step 7 was never sampled (steps are 0, 10, ...)
    with pytest.raises(MLFFError, match=r"single point 0 \(step 7, system 0\) is not a CV sample"):
        analyse(run, FESConfig(n_bootstraps=0, single_points=str(missing)))
    with pytest.raises(MLFFError, match="single-point file not found"):
        analyse(run, FESConfig(n_bootstraps=0, single_points=str(tmp_path / "nope.csv")))
