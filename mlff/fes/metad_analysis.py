"""``analyse_metad(run, config) -> Analysis``: the metaD profile by reweighting (primary, with block-bootstrap
errors) and from the hills (with the spread of independent walkers when each system has its own bias)."""

from __future__ import annotations

import numpy as np

from mlff.errors import MLFFError
from mlff.fes.barrier import (KEYS, NoBarrier, barrier_numbers, barrier_numbers_rows, locate, resample_counts,
                              resample_warnings, settings, spread)
from mlff.fes.config import FESConfig
from mlff.fes.metad import check_hills, ct_offsets, hill_groups, hills_profile, reweighted_profile
from mlff.fes.result import Analysis, BarrierEstimate, Profile
from mlff.fes.units import kT_eV

__all__ = ["analyse_metad"]


def _log_weights(run, hills, groups, grid, kT, start: int) -> np.ndarray:
    """[T', S] ln w_t = beta (V(s_t, t) - c(t)) of the samples from ``start`` on."""
    log_w = np.full(run.cv[start:].shape, np.nan)
    for systems, mask in groups:
        c = ct_offsets(grid, hills, mask, kT)
        n_hills = np.searchsorted(hills["time_fs"][mask], run.time_fs[start:], side="left")  # added before t
        for s in systems:
            log_w[:, s] = (run.bias_energy[start:, s] - c[n_hills]) / kT
    return log_w


def _hills_profiles(bin_cv, hills, groups, kT, t_end=None) -> tuple[np.ndarray, np.ndarray]:
    """Mean hills profile over the bias groups (kT, min 0) and its standard error (NaN with one group)."""
    F = np.stack([hills_profile(bin_cv, hills, mask, kT, t_end) for _, mask in groups])
    mean = F.mean(axis=0)
    error = F.std(axis=0, ddof=1) / np.sqrt(len(F)) if len(F) > 1 else np.full(bin_cv.size, np.nan)
    return mean - mean.min(), error


def _walker_errors(bin_cv, hills, groups, kT, config) -> dict | None:
    """Standard errors (kT) of the hills barrier numbers over the independent biases that have a barrier (None
    with one bias; NaN when fewer than two have one)."""
    if len(groups) < 2:
        return None
    rows = np.stack([hills_profile(bin_cv, hills, mask, kT) for _, mask in groups])
    values = barrier_numbers_rows(bin_cv, rows, **settings(config))
    n = max(int(values["found"].sum()), 1)
    return {k: v / np.sqrt(n) for k, v in spread(values).items() if k in KEYS}


def _hills_barrier(bin_cv, F_hills, hills_error, config, run) -> dict:
    """The barrier numbers of the hills profile (kT) and its TS, or why it has none."""
    try:
        marks = locate(bin_cv, F_hills, **settings(config), error=hills_error, cv=run.cv_name, unit=run.cv_unit)
    except NoBarrier as none:
        return {"hills_barrier_kT": None, "hills_cv_ts": None, "hills_no_barrier": str(none)}
    return {"hills_barrier_kT": barrier_numbers(F_hills, marks), "hills_cv_ts": float(bin_cv[marks.ts]),
            "hills_no_barrier": None}


def _check(run) -> None:
    if run.kind != "metad":
        raise MLFFError(f"run kind {run.kind!r}: metaD analysis expects kind 'metad'")
    if run.n_samples == 0 or not np.isfinite(run.cv).any():
        raise MLFFError("the run holds no CV samples; expected a CV time series per system (colvar)")
    if not np.isfinite(run.bias_energy).any():
        raise MLFFError("the metaD run recorded no bias energies; reweighting needs V(s_t, t) per sample")
    if not run.temperature_K > 0:
        raise MLFFError(f"temperature {run.temperature_K} K; expected > 0")


def _barrier(bin_cv, f, error, rows, config, run) -> BarrierEstimate:
    criterion = settings(config)
    boot = barrier_numbers_rows(bin_cv, rows, **criterion, error=error) if rows is not None else None
    method = "block bootstrap" if boot is not None else "none"
    try:
        marks = locate(bin_cv, f, **criterion, error=error, cv=run.cv_name, unit=run.cv_unit)
    except NoBarrier as none:
        return BarrierEstimate(None, None, method, None, None, None, no_barrier=str(none), **resample_counts(boot))
    values = barrier_numbers(f, marks)
    errors, boot_values, ts_error = {k: float("nan") for k in values}, None, None
    if boot is not None:
        errors = spread(boot)
        ts_error = errors.pop("ts_cv")
        boot_values = {k: boot[k] for k in KEYS}
    return BarrierEstimate(values, errors, method, float(bin_cv[marks.reactant]), float(bin_cv[marks.ts]),
                           float(bin_cv[marks.product]), None, boot_values, ts_error, **resample_counts(boot))


def _convergence(bin_cv, hills, groups, kT, config) -> dict:
    t_last = float(hills["time_fs"].max())
    out = {"fractions": list(config.slice_fractions), "time_fs": [], "hills": []}
    for fraction in config.slice_fractions:
        F, _ = _hills_profiles(bin_cv, hills, groups, kT, fraction * t_last)
        entry = {"fraction": fraction, "time_fs": fraction * t_last, "f_kT": F, "barrier_forward": None,
                 "reaction": None}
        try:
            entry.update(barrier_numbers(F, locate(bin_cv, F, **settings(config))))
        except MLFFError as err:
            entry["note"] = str(err)
        out["time_fs"].append(fraction * t_last)
        out["hills"].append(entry)
    return out


def analyse_metad(run, config: FESConfig | None = None) -> Analysis:
    config = config or FESConfig()
    _check(run)
    hills = check_hills(run.hills)
    kT = kT_eV(run.temperature_K)
    groups = hill_groups(hills, run.n_systems)
    start = int(config.metad_discard_fraction * run.n_samples)
    cv = run.cv[start:]
    if cv.shape[0] < config.metad_blocks:
        raise MLFFError(f"{cv.shape[0]} metaD samples after discarding {config.metad_discard_fraction:.0%}; expected "
                        f"at least {config.metad_blocks} (one per block)")
    pad = 4.0 * hills["sigma"].max()
    lo = min(np.nanmin(cv), hills["center"].min()) - pad
    hi = max(np.nanmax(cv), hills["center"].max()) + pad
    grid = np.linspace(lo, hi, config.metad_grid)
    log_w = _log_weights(run, hills, groups, grid, kT, start)
    lo, hi = config.cv_range if config.cv_range is not None else (np.nanmin(cv), np.nanmax(cv))
    edges = np.linspace(lo, hi, config.bins + 1)
    edges[-1] = np.nextafter(edges[-1], np.inf)
    bin_cv = 0.5 * (edges[1:] + edges[:-1])
    f, rows, counts = reweighted_profile(cv, log_w, edges, config.metad_blocks, config.n_bootstraps, config.seed)
    error = np.nanstd(rows, axis=0, ddof=1) if rows is not None else np.full(f.size, np.nan)
    reweighted = Profile("metaD reweighted (Tiwary-Parrinello c(t))", bin_cv, f - np.nanmin(f), error,
                         "block bootstrap" if rows is not None else "none", None, counts, edges)
    F_hills, hills_error = _hills_profiles(bin_cv, hills, groups, kT)
    from_hills = Profile("metaD from the hills (-(gamma/(gamma-1)) V(s, t_end))", bin_cv, F_hills, hills_error,
                         "spread of walkers" if len(groups) > 1 else "none", key="F_hills")
    barrier = _barrier(bin_cv, f, error, rows, config, run)
    hills_errors = _walker_errors(bin_cv, hills, groups, kT, config)
    w = np.exp(log_w[np.isfinite(log_w)] - np.nanmax(log_w))
    ess = float(w.sum() ** 2 / (w ** 2).sum())
    extra = {**_hills_barrier(bin_cv, F_hills, hills_error, config, run), "hills_barrier_error_kT": hills_errors,
             "effective_sample_size": ess, "n_samples_used": int(np.isfinite(log_w).sum()),
             "biasfactor": hills["gamma"], "n_hills": int(hills["time_fs"].size), "n_biases": len(groups),
             "discarded_samples": start, "f_normalised_kT": f}
    warnings = _warnings(barrier, extra)
    estimator = (f"well-tempered metaD (bias factor {hills['gamma']:g}, {extra['n_hills']} hills, {len(groups)} "
                 f"bias(es)): primary profile by Tiwary-Parrinello c(t) reweighting of the samples after the first "
                 f"{config.metad_discard_fraction:.0%}, histogram on {config.bins} bins, errors by a bootstrap of "
                 f"{config.metad_blocks} time blocks per system ({config.n_bootstraps} resamples, seed {config.seed}); "
                 "second profile from the final bias of the hills (errors: spread of independent walkers)")
    return Analysis("metad", float(run.temperature_K), run.cv_name, run.cv_unit, estimator, [reweighted, from_hills],
                    barrier, warnings, [], None, _convergence(bin_cv, hills, groups, kT, config), extra,
                    dict(run.provenance))


def _warnings(barrier: BarrierEstimate, extra: dict) -> list[str]:
    out = []
    if extra["effective_sample_size"] < 100:
        out.append(f"reweighting keeps an effective sample size of only {extra['effective_sample_size']:.0f}: the "
                   "reweighted profile is noisy; run longer")
    out += resample_warnings(barrier.found, barrier.resamples_with_barrier, barrier.n_resamples)
    if not barrier.found or extra["hills_barrier_kT"] is None:
        if barrier.found != (extra["hills_barrier_kT"] is not None):
            out.append("one of the reweighted and the hills profiles has a barrier and the other has none: the bias "
                       "may not have converged; run longer or check the convergence plot")
        return out
    diff = extra["hills_barrier_kT"]["barrier_forward"] - barrier.values_kT["barrier_forward"]
    err = barrier.errors_kT["barrier_forward"]
    if np.isfinite(err) and abs(diff) > 3.0 * err + 0.5:
        out.append(f"hills and reweighted barriers differ by {diff:+.2f} kT (> 3 sigma + 0.5 kT): the bias may not "
                   "have converged; run longer or check the convergence plot")
    return out
