"""MBAR umbrella analysis against exact answers: a 1D double well and a 2D Mueller-Brown-like surface with a 1D
CV, sampled exactly in each harmonic window (independent and correlated series); planted gaps; bad input."""

from __future__ import annotations

import numpy as np
import pytest
from fes_surfaces import (KT, T_K, double_well, exact_bin_free_energies, mueller_brown_sampler_factory,
                          umbrella_run)

from mlff.errors import MLFFError
from mlff.fes import FESConfig, analyse
from mlff.fes._pymbar import pymbar
from mlff.fes.mbar import fit_mbar, newton_mbar
from mlff.fes.units import eyring_rate_per_s, kT_kcal_per_mol

FAST = dict(n_bootstraps=40, slice_fractions=(0.5, 1.0))


def _compare_to_exact(analysis, exact_f):
    """(fraction of bins within 3 bootstrap sigma, max |deviation| in kT), both profiles normalised over the bins."""
    profile = analysis.profiles[0]
    f = analysis.extra["f_normalised_kT"]
    assert np.all(np.isfinite(f)), "every bin of the tested range holds samples"
    f = f + np.log(np.sum(np.exp(-f)))  # normalise over the bins, as the exact one is
    deviation = f - exact_f
    return np.mean(np.abs(deviation) <= 3.0 * profile.error_kT), float(np.max(np.abs(deviation)))


def test_newton_refit_equals_pymbar():
    run = umbrella_run(double_well, np.linspace(-1.5, 1.5, 9), 0.65, 300, seed=3)
    samples = [run.cv[:, k] for k in range(9)]
    full = fit_mbar(samples, run.centers, run.kappas, 1.0 / KT)
    u_kn, N_k = full.u_kn, full.N_k
    start = full.f_k + np.random.default_rng(0).normal(0.0, 0.3, full.f_k.size)
    f = newton_mbar(u_kn, N_k, start)
    assert f is not None
    np.testing.assert_allclose(f - f[0], full.f_k - full.f_k[0], atol=1e-7)


def test_analytic_bin_errors_equal_pymbar_fes():
    """Our bin-indicator covariance reproduces pymbar.FES's analytic histogram errors (reference: lowest bin)."""
    run = umbrella_run(double_well, np.linspace(-1.5, 1.5, 7), 0.5, 200, seed=4)
    a = analyse(run, FESConfig(bins=12, n_bootstraps=0, equilibration="none", subsample=False, slice_fractions=(1.0,)))
    fit_samples = a.extra["window_samples"]
    fit = fit_mbar(fit_samples, run.centers, run.kappas, 1.0 / KT)
    edges = a.profiles[0].edges
    fes = pymbar().FES(fit.u_kn, fit.N_k)
    fes.generate_fes(np.zeros(fit.x_n.size), fit.x_n, fes_type="histogram", histogram_parameters={"bin_edges": edges})
    centres = 0.5 * (edges[1:] + edges[:-1])
    reference = fes.get_fes(centres, reference_point="from-lowest", uncertainty_method="analytical")
    from mlff.fes.mbar import analytic_covariance, bin_profile

    f, counts = bin_profile(fit.x_n, fit.log_w, edges)
    cov = analytic_covariance(fit, edges, counts)
    j = int(np.nanargmin(f))
    ours = np.sqrt(np.clip(np.diag(cov) + cov[j, j] - 2.0 * cov[:, j], 0.0, None))
    np.testing.assert_allclose(f - f[j], reference["f_i"], atol=1e-10)
    np.testing.assert_allclose(ours, reference["df_i"], atol=1e-8)


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_double_well_exact_samples_recover_the_exact_profile(seed):
    centers = np.linspace(-1.5, 1.5, 13)
    run = umbrella_run(double_well, centers, 0.65, 2000, seed=seed)
    a = analyse(run, FESConfig(bins=30, cv_range=(-1.4, 1.4), seed=seed, **FAST))
    exact = exact_bin_free_energies(double_well, a.profiles[0].edges)
    within, worst = _compare_to_exact(a, exact)
    assert within >= 0.95 and worst <= 0.3, (within, worst)
    exact_shifted = exact - exact.min()
    b = a.barrier
    marks_exact = (np.argmin(np.where(a.profiles[0].cv < -0.3, exact, np.inf)),
                   np.argmin(np.where(a.profiles[0].cv > 0.3, exact, np.inf)))
    ts_exact = np.max(exact_shifted[marks_exact[0]:marks_exact[1] + 1])
    dG_exact = exact_shifted[marks_exact[1]] - exact_shifted[marks_exact[0]]
    assert abs(b.values_kT["barrier_forward"] - (ts_exact - exact_shifted[marks_exact[0]])) < 3.0 * b.errors_kT["barrier_forward"] + 0.1
    assert abs(b.values_kT["reaction"] - dG_exact) < 3.0 * b.errors_kT["reaction"]
    assert 3.0 < b.values_kT["barrier_forward"] < 8.0  # the surface is in the regime the issue asks for
    assert b.error_method == "bootstrap" and not a.overlap["poor"] and not any("overlap" in w for w in a.warnings)
    # bootstrap and analytic errors agree where overlap is good
    ratio = b.errors_kT["barrier_forward"] / b.errors_analytic_kT["barrier_forward"]
    assert 0.6 < ratio < 1.6


def test_correlated_series_equilibration_and_subsampling():
    """AR(1) series (correlation time ~9 samples) with a 1 Å transient at the start of every window: the transient is
    cut, samples are thinned by g, and the profile is still exact within its (honest) error bars."""
    centers = np.linspace(-1.5, 1.5, 13)
    run = umbrella_run(double_well, centers, 0.65, 4000, seed=5, phi=0.8, transient=150)
    a = analyse(run, FESConfig(bins=25, cv_range=(-1.4, 1.4), **FAST))
    t0 = np.array([w["t0"] for w in a.windows])
    g = np.array([w["g"] for w in a.windows])
    assert np.median(t0) >= 40 and np.all(t0 < 2000)  # the transient (decay time 30 samples) is dropped
    assert 4.0 < np.median(g) < 20.0  # AR(1) with phi = 0.8 in a copula: g about (1 + phi) / (1 - phi) = 9
    kept = np.array([w["n_decorrelated"] for w in a.windows])
    assert np.all(kept < 4000 / 3)
    exact = exact_bin_free_energies(double_well, a.profiles[0].edges)
    within, worst = _compare_to_exact(a, exact)
    assert within >= 0.95 and worst <= 0.3, (within, worst)


def test_mueller_brown_profile_along_x():
    """2D surface, 1D CV x: the exact profile is -kT ln of the y-integral of exp(-U/kT) (2D quadrature)."""
    factory, F_exact = mueller_brown_sampler_factory()
    centers = np.linspace(-1.3, 0.9, 12)
    run = umbrella_run(None, centers, 1.0, 2000, seed=6, sampler_factory=factory)
    config = FESConfig(bins=24, cv_range=(-1.2, 0.8), reactant=(-1.2, -0.3), product=(0.3, 0.8), **FAST)
    a = analyse(run, config)

    def U(x):
        return F_exact(x)

    exact = exact_bin_free_energies(U, a.profiles[0].edges)
    within, worst = _compare_to_exact(a, exact)
    assert within >= 0.95 and worst <= 0.3, (within, worst)


def _gapped_run(drop, kappa=0.65, n=1500):
    centers = np.delete(np.linspace(-1.5, 1.5, 13), drop)
    return umbrella_run(double_well, centers, kappa, n, seed=7)


def test_planted_gap_is_flagged():
    run = _gapped_run([6, 7])  # a 0.75 Å gap at the barrier: MBAR overlap about 0.005
    a = analyse(run, FESConfig(bins=30, **FAST))
    poor = [p for p in a.overlap["neighbour_pairs"] if p["poor"]]
    assert a.overlap["poor"] and len(poor) == 1
    assert poor[0]["centers"] == pytest.approx([-0.25, 0.5])
    assert 1e-4 < poor[0]["overlap"] < 0.03
    assert any("analytic errors are not meaningful" in w and "bootstrap" in w for w in a.warnings)
    assert a.barrier.error_method == "bootstrap"


def test_windows_that_do_not_overlap_are_one_clear_error():
    run = _gapped_run([4, 5, 6, 7, 8], kappa=5.0)
    with pytest.raises(MLFFError, match=r"windows 3 \(centre -0.75 A\) and 4 \(centre 0.75 A\) do not overlap") as err:
        analyse(run, FESConfig(**FAST))
    assert "\n" not in str(err.value)


def test_gap_check_reads_the_equilibrated_series_not_the_thinned_one():
    from mlff.fes.timeseries import WindowSamples
    from mlff.fes.umbrella import _check_gaps

    def window(index, center, series, t0, keep):
        return WindowSamples(index, center, 5.0, np.asarray(series, float), t0, 1.0, np.asarray(keep))

    left = window(0, -0.2, [-0.40, -0.30, -0.05, -0.35], 0, [0, 1, 3])  # kept samples end at -0.30
    right = window(1, 0.0, [-0.10, 0.10, 0.20, 0.30], 0, [1, 2, 3])  # kept samples start at +0.10
    assert left.samples.max() < right.samples.min()  # the thinned samples do not interleave ...
    _check_gaps([left, right], "A")  # ... but the series do (-0.10 < -0.05): not an error
    right_late = window(1, 0.0, [-0.10, 0.10, 0.20, 0.30], 1, [1, 2, 3])  # -0.10 is before equilibration
    with pytest.raises(MLFFError, match=r"windows 0 \(centre -0.2 A\) and 1 \(centre 0 A\) do not overlap"):
        _check_gaps([left, right_late], "A")


def test_too_few_samples_is_one_clear_error():
    run = umbrella_run(double_well, np.linspace(-1.5, 1.5, 5), 0.65, 8, seed=8)
    with pytest.raises(MLFFError, match=r"window 0 .* decorrelated samples .* expected at least 10"):
        analyse(run, FESConfig(**FAST))


def test_run_without_cv_samples_is_one_clear_error():
    run = umbrella_run(double_well, np.linspace(-1.5, 1.5, 5), 0.65, 50, seed=9)
    run.cv[:] = np.nan
    with pytest.raises(MLFFError, match="no CV samples"):
        analyse(run, FESConfig(**FAST))


def test_regions_outside_the_profile_are_one_clear_error():
    run = umbrella_run(double_well, np.linspace(-1.5, 1.5, 9), 0.65, 400, seed=10)
    with pytest.raises(MLFFError, match=r"no profile bins in the product region xi in \[2, inf\]"):
        analyse(run, FESConfig(product=(2.0, None), **FAST))


def test_bootstrap_is_deterministic_for_a_seed():
    run = umbrella_run(double_well, np.linspace(-1.5, 1.5, 9), 0.65, 400, seed=11)
    config = FESConfig(bins=20, n_bootstraps=20, slice_fractions=(1.0,))
    a, b = analyse(run, config), analyse(run, config)
    np.testing.assert_array_equal(a.profiles[0].error_kT, b.profiles[0].error_kT)
    c = analyse(run, FESConfig(bins=20, n_bootstraps=20, slice_fractions=(1.0,), seed=1))
    assert not np.allclose(a.profiles[0].error_kT, c.profiles[0].error_kT)


def test_convergence_slices_agree_with_the_full_estimate():
    run = umbrella_run(double_well, np.linspace(-1.5, 1.5, 13), 0.65, 1500, seed=12)
    a = analyse(run, FESConfig(bins=25, n_bootstraps=30, slice_fractions=(0.5, 1.0)))
    full = a.barrier.values_kT["barrier_forward"]
    for direction in ("forward", "backward"):
        last = a.convergence[direction][-1]
        assert last["barrier_forward"] == pytest.approx(full, abs=1e-6)  # the whole data set, both ways
        half = a.convergence[direction][0]["barrier_forward"]
        assert abs(half - full) < 4.0 * np.sqrt(2.0) * a.barrier.errors_kT["barrier_forward"]


def test_eyring_rate():
    # kB T / h at 300 K = 6.2510e12 1/s; a barrier of 10 kcal/mol slows it by exp(-10 / 0.596)
    assert eyring_rate_per_s(0.0, 300.0) == pytest.approx(6.2510e12, rel=1e-4)
    kT = kT_kcal_per_mol(300.0)
    assert kT == pytest.approx(0.596157, rel=1e-5)
    assert eyring_rate_per_s(10.0, 300.0) == pytest.approx(6.2510e12 * np.exp(-10.0 / kT), rel=1e-4)
    assert T_K == 300.0


def test_exchanged_labels_give_the_same_windows():
    """With replica exchange systems carry different windows over time; the analysis follows the labels, so
    permuting which system holds which window (at every sample) changes nothing."""
    run = umbrella_run(double_well, np.linspace(-1.5, 1.5, 9), 0.65, 400, seed=13)
    rng = np.random.default_rng(0)
    T, S = run.cv.shape
    perm = np.stack([rng.permutation(S) for _ in range(T)])  # system perm[t, w] carries window w at sample t
    cv, window = np.empty_like(run.cv), np.empty_like(run.window)
    rows = np.arange(T)[:, None]
    cv[rows, perm] = run.cv
    window[rows, perm] = run.window
    swapped = type(run)(**{**run.__dict__, "cv": cv, "window": window, "bias_energy": np.zeros_like(cv)})
    config = FESConfig(bins=20, n_bootstraps=10, slice_fractions=(1.0,))
    a, b = analyse(run, config), analyse(swapped, config)
    np.testing.assert_allclose(a.profiles[0].f_kT, b.profiles[0].f_kT, atol=1e-9, equal_nan=True)


def test_mbar_leaves_numpys_global_generator_alone():
    run = umbrella_run(double_well, np.linspace(-1.5, 1.5, 5), 0.65, 100, seed=14)
    np.random.seed(123)
    expected = np.random.random(3)
    np.random.seed(123)
    fit_mbar([run.cv[:, k] for k in range(5)], run.centers, run.kappas, 1.0 / KT)
    np.testing.assert_array_equal(np.random.random(3), expected)
