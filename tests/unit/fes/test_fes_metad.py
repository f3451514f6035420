"""Well-tempered metaD: the hills profile convention on known biases, and both estimators (hills, c(t)
reweighting) against the exact double-well profile; metaD and MBAR agree."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import trapezoid
from fes_surfaces import KT, double_well, exact_bin_free_energies, umbrella_run, wt_metad_run

from mlff.bias.io import BiasedRun
from mlff.errors import MLFFError
from mlff.fes import FESConfig, analyse
from mlff.fes.metad import check_hills, ct_offsets, hills_profile


def _hills(centers, sigmas, heights, gamma, system=None):
    n = len(centers)
    return {"time_fs": np.arange(n, dtype=float), "center": np.asarray(centers, float), "sigma": np.asarray(sigmas, float),
            "height_eV": np.asarray(heights, float), "system": np.full(n, -1) if system is None else np.asarray(system),
            "biasfactor": gamma}


@pytest.mark.parametrize("gamma", [6.0, math.inf])
def test_hills_profile_is_minus_gamma_over_gamma_minus_one_times_the_bias(gamma):
    rng = np.random.default_rng(0)
    c, s, h = rng.uniform(-1, 1, 50), rng.uniform(0.05, 0.2, 50), rng.uniform(0.0, 0.02, 50)  # heights as added, eV
    hills = check_hills(_hills(c, s, h, gamma))
    grid = np.linspace(-1.5, 1.5, 301)
    V = np.sum(h[:, None] * np.exp(-((grid[None, :] - c[:, None]) ** 2) / (2 * s[:, None] ** 2)), axis=0)
    factor = 1.0 if math.isinf(gamma) else gamma / (gamma - 1.0)
    expected = -factor * V / KT
    F = hills_profile(grid, hills, np.ones(50, bool), KT)
    np.testing.assert_allclose(F, expected - expected.min(), atol=1e-12)
    # a time cut keeps only the hills added up to then
    F10 = hills_profile(grid, hills, np.ones(50, bool), KT, t_end_fs=9.0)
    V10 = np.sum(h[:10, None] * np.exp(-((grid[None, :] - c[:10, None]) ** 2) / (2 * s[:10, None] ** 2)), axis=0)
    np.testing.assert_allclose(F10, -factor * (V10 - V10.max()) / KT, atol=1e-12)


def test_hills_built_from_a_known_profile_give_it_back():
    """Hills on a fine regular grid with heights (1 - 1/gamma) (F_max - F(c)) dc / (sqrt(2 pi) sigma) sum to
    -(1 - 1/gamma) F + const (a Gaussian smoothing of it): the hills profile must return F."""
    gamma, sigma, dc = 10.0, 0.05, 0.01
    centers = np.arange(-2.0, 2.0 + dc / 2, dc)
    F = double_well(centers)  # eV
    heights = (1.0 - 1.0 / gamma) * (F.max() - F) * dc / (np.sqrt(2 * np.pi) * sigma)
    hills = check_hills(_hills(centers, np.full(centers.size, sigma), heights, gamma))
    grid = np.linspace(-1.5, 1.5, 121)
    profile = hills_profile(grid, hills, np.ones(centers.size, bool), KT)
    exact = (double_well(grid) - double_well(grid).min()) / KT
    assert np.max(np.abs(profile - exact)) < 0.1  # kT; the Gaussian smoothing of the curvature is all that is left


def test_ct_is_zero_without_bias_and_matches_quadrature():
    grid = np.linspace(-2, 2, 801)
    hills = check_hills(_hills([0.0, 0.5], [0.2, 0.3], [0.05, 0.02], 5.0))
    c = ct_offsets(grid, hills, np.ones(2, bool), KT)
    assert c[0] == 0.0 and c.size == 3
    V = 0.05 * np.exp(-grid ** 2 / 0.08) + 0.02 * np.exp(-((grid - 0.5) ** 2) / 0.18)
    # gamma = 5: c = kT ln( int exp(5/4 V/kT) / int exp(1/4 V/kT) )
    expected = KT * np.log(trapezoid(np.exp(1.25 * V / KT), grid) / trapezoid(np.exp(0.25 * V / KT), grid))
    assert c[2] == pytest.approx(expected, rel=1e-3)


@pytest.fixture(scope="module")
def metad_two_walkers():
    run = wt_metad_run(double_well, 2500, n_systems=2, seed=0)
    return run, analyse(run, FESConfig(bins=30, cv_range=(-1.4, 1.4), n_bootstraps=100, slice_fractions=(0.5, 1.0)))


def test_wt_metad_reweighted_and_hills_profiles_are_exact(metad_two_walkers):
    run, a = metad_two_walkers
    exact = exact_bin_free_energies(double_well, a.profiles[0].edges)
    exact -= exact.min()
    reweighted, from_hills = a.profiles
    assert reweighted.error_method == "block bootstrap" and from_hills.error_method == "spread of walkers"
    for profile, fraction in ((reweighted, 0.9), (from_hills, 0.8)):
        d = profile.f_kT - exact
        d -= np.mean(d)  # both are defined up to a constant
        assert np.max(np.abs(d)) < 0.4, profile.label
        assert np.mean(np.abs(d) <= 3.0 * profile.error_kT + 0.05) >= fraction, profile.label
    assert a.extra["n_biases"] == 2 and a.extra["effective_sample_size"] > 500
    assert not a.warnings


def test_wt_metad_and_mbar_agree_on_the_double_well(metad_two_walkers):
    _, metad = metad_two_walkers
    umbrella = analyse(umbrella_run(double_well, np.linspace(-1.5, 1.5, 13), 0.65, 1500, seed=2),
                       FESConfig(bins=30, cv_range=(-1.4, 1.4), n_bootstraps=40, slice_fractions=(1.0,)))
    for key in ("barrier_forward", "reaction"):
        a, b = metad.barrier, umbrella.barrier
        combined = math.hypot(a.errors_kT[key], b.errors_kT[key])
        assert abs(a.values_kT[key] - b.values_kT[key]) < 3.0 * combined + 0.1, key
        assert abs(metad.extra["hills_barrier_kT"][key] - b.values_kT[key]) < 3.0 * combined + 0.3, key


def test_hills_convergence_in_time(metad_two_walkers):
    _, a = metad_two_walkers
    entries = a.convergence["hills"]
    assert [e["fraction"] for e in entries] == [0.5, 1.0]
    assert entries[-1]["barrier_forward"] == pytest.approx(a.extra["hills_barrier_kT"]["barrier_forward"])


def test_metad_bad_input_is_one_clear_error():
    run = wt_metad_run(double_well, 40, seed=1)
    with pytest.raises(MLFFError, match="bias factor 1.0; expected > 1"):
        analyse(BiasedRun(**{**run.__dict__, "hills": {**run.hills, "biasfactor": 1.0}}), FESConfig())
    with pytest.raises(MLFFError, match="metad run without hills"):
        analyse(BiasedRun(**{**run.__dict__, "hills": None}), FESConfig())
    with pytest.raises(MLFFError, match="recorded no bias energies"):
        analyse(BiasedRun(**{**run.__dict__, "bias_energy": np.full_like(run.cv, np.nan)}), FESConfig())


def test_shared_bias_of_several_walkers():
    run = wt_metad_run(double_well, 1500, n_systems=2, per_system=False, seed=4)
    assert np.all(run.hills["system"] == -1)
    a = analyse(run, FESConfig(bins=24, cv_range=(-1.3, 1.3), n_bootstraps=50, slice_fractions=(1.0,)))
    assert a.extra["n_biases"] == 1 and a.profiles[1].error_method == "none"
    exact = exact_bin_free_energies(double_well, a.profiles[0].edges)
    exact -= exact.min()
    for profile in a.profiles:
        d = profile.f_kT - exact
        assert np.max(np.abs(d - np.mean(d))) < 0.5, profile.label
