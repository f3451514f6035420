"""Umbrella-window analysis: decorrelate, MBAR, histogram profile with analytic and bootstrap errors, overlap,
forward/backward convergence, barrier. Entry point: ``analyse_umbrella(run, config) -> Analysis``."""

from __future__ import annotations

import numpy as np

from mlff.errors import MLFFError
from mlff.fes.barrier import (KEYS, NoBarrier, barrier_numbers, barrier_numbers_rows, locate, resample_counts,
                              resample_warnings, settings, spread)
from mlff.fes.config import FESConfig
from mlff.fes.mbar import analytic_covariance, bin_profile, bootstrap_profiles, fit_mbar, neighbour_overlap
from mlff.fes.result import Analysis, BarrierEstimate, Profile
from mlff.fes.timeseries import WindowSamples, subsample, window_samples
from mlff.fes.units import kT_eV

__all__ = ["analyse_umbrella", "check_umbrella_run"]


def check_umbrella_run(run) -> None:
    """One clear error for a BiasedRun that cannot be an umbrella analysis."""
    K = len(run.centers)
    if run.kind != "umbrella":
        raise MLFFError(f"run kind {run.kind!r}: umbrella analysis expects kind 'umbrella'")
    if K < 2 or len(run.kappas) != K:
        raise MLFFError(f"umbrella run with {K} window centre(s) and {len(run.kappas)} spring(s); expected >= 2 "
                        "windows, one spring each")
    if np.any(~np.isfinite(run.kappas)) or np.any(run.kappas <= 0):
        raise MLFFError(f"umbrella springs {run.kappas.tolist()} eV/{run.cv_unit}^2: expected all > 0")
    if run.n_samples == 0 or not np.isfinite(run.cv).any():
        raise MLFFError("the run holds no CV samples; expected a CV time series per window (colvar)")
    if run.window.min() < 0 or run.window.max() >= K:
        raise MLFFError(f"window labels span [{run.window.min()}, {run.window.max()}]; expected 0..{K - 1}")
    if not run.temperature_K > 0:
        raise MLFFError(f"temperature {run.temperature_K} K; expected > 0")


def _check_gaps(windows: list[WindowSamples], unit: str) -> None:
    """Neighbouring windows whose equilibrated samples do not even interleave are disjoint: one clear error.

    The test is on each window's whole equilibrated series, not on its decorrelated subsample: thinning a short
    window can open a hairline gap between the kept samples of two windows that do sample the same ground
    (seen in the FDH fidelity run: 0.015 Å between two 1.25 ps windows whose series overlap by 0.02 Å). How well
    neighbours overlap is MBAR's overlap matrix's to say (``overlap_threshold`` flags, ``overlap_error`` refuses)."""
    order = sorted(windows, key=lambda w: w.center)
    for a, b in zip(order[:-1], order[1:]):
        pa, pb = a.production, b.production
        if pa.max() < pb.min() or pb.max() < pa.min():
            raise MLFFError(f"windows {a.index} (centre {a.center:g} {unit}) and {b.index} (centre {b.center:g} "
                            f"{unit}) do not overlap: no equilibrated sample of one lies within the other's range; "
                            "add windows between them or soften their springs")


def _edges(config: FESConfig, x_n: np.ndarray) -> np.ndarray:
    lo, hi = config.cv_range if config.cv_range is not None else (x_n.min(), x_n.max())
    edges = np.linspace(lo, hi, config.bins + 1)
    edges[-1] = np.nextafter(edges[-1], np.inf)  # the largest sample belongs to the last bin
    return edges


def _overlap(fit, windows, config: FESConfig, unit: str) -> dict:
    matrix = np.asarray(fit.mbar.compute_overlap()["matrix"], np.float64)
    centers = np.array([w.center for w in windows])
    order, nb = neighbour_overlap(matrix, centers)
    pairs = [{"windows": [int(order[i]), int(order[i + 1])], "centers": [float(centers[order[i]]),
             float(centers[order[i + 1]])], "overlap": float(nb[i]), "poor": bool(nb[i] < config.overlap_threshold)}
             for i in range(len(nb))]
    worst = int(np.argmin(nb))
    if nb[worst] < config.overlap_error:
        a, b = order[worst], order[worst + 1]
        raise MLFFError(f"windows {a} (centre {centers[a]:g} {unit}) and {b} (centre {centers[b]:g} {unit}) have MBAR "
                        f"overlap {nb[worst]:.1e} < {config.overlap_error:g}: the profile across them is undetermined; "
                        "add windows between them")
    return {"matrix": matrix, "neighbour_pairs": pairs, "threshold": config.overlap_threshold,
            "min_neighbour": float(nb[worst]), "poor": any(p["poor"] for p in pairs)}


def _differences_error(cov: np.ndarray, i: int, j: int) -> float:
    return float(np.sqrt(max(cov[i, i] + cov[j, j] - 2.0 * cov[i, j], 0.0)))


def _barrier(bin_cv, f, error, cov, boot, config: FESConfig, run) -> BarrierEstimate:
    """The barrier of profile ``f`` (``error``: its bins' reported errors, for the noise test) with analytic
    and bootstrap errors, or why there is none; the bootstrap resamples each pass the same test."""
    criterion = settings(config)
    rows = barrier_numbers_rows(bin_cv, boot, **criterion, error=error) if boot is not None else None
    method = "bootstrap" if rows is not None else "analytic"
    try:
        marks = locate(bin_cv, f, **criterion, error=error, cv=run.cv_name, unit=run.cv_unit)
    except NoBarrier as none:
        return BarrierEstimate(None, None, method, None, None, None, no_barrier=str(none), **resample_counts(rows))
    values = barrier_numbers(f, marks)
    pairs = {"barrier_forward": (marks.ts, marks.reactant), "barrier_reverse": (marks.ts, marks.product),
             "reaction": (marks.product, marks.reactant)}
    analytic = {key: _differences_error(cov, *ij) for key, ij in pairs.items()}
    boot_values, errors, ts_error = None, analytic, None
    if rows is not None:
        errors = spread(rows)
        ts_error = errors.pop("ts_cv")
        boot_values = {key: rows[key] for key in KEYS}
    return BarrierEstimate(values, errors, method, float(bin_cv[marks.reactant]), float(bin_cv[marks.ts]),
                           float(bin_cv[marks.product]), analytic, boot_values, ts_error, **resample_counts(rows))


def _slice(windows: list[WindowSamples], fraction: float, backward: bool) -> list[np.ndarray] | None:
    out = []
    for w in windows:
        prod = w.production
        n = max(int(round(fraction * prod.size)), 1)
        part = prod[prod.size - n:] if backward else prod[:n]
        kept = part[subsample(part.size, w.g)]
        if kept.size < 2:
            return None
        out.append(kept)
    return out


def _convergence(windows, fit, edges, bin_cv, config: FESConfig, beta: float) -> dict:
    """Profiles and barriers from the first (forward) and last (backward) fractions of every window's
    equilibrated data, decorrelated with the full-data g; MBAR refits start from the full-data solution."""
    out = {"fractions": list(config.slice_fractions), "forward": [], "backward": []}
    for direction in ("forward", "backward"):
        for fraction in config.slice_fractions:
            samples = _slice(windows, fraction, direction == "backward")
            entry = {"fraction": fraction, "f_kT": None, "barrier_forward": None, "reaction": None}
            if samples is not None:
                try:
                    part = fit_mbar(samples, _centers(windows), _kappas(windows), beta, initial_f_k=fit.f_k,
                                    keep_mbar=False)
                    f = bin_profile(part.x_n, part.log_w, edges)[0]
                    entry["f_kT"] = f - np.nanmin(f)
                    entry.update(barrier_numbers(f, locate(bin_cv, f, **settings(config))))
                except MLFFError as err:
                    entry["note"] = str(err)
            out[direction].append(entry)
    return out


def _centers(windows):
    return np.array([w.center for w in windows])


def _kappas(windows):
    return np.array([w.kappa for w in windows])


def _profile(fit, windows, edges, config: FESConfig, beta: float):
    f, counts = bin_profile(fit.x_n, fit.log_w, edges)
    cov = analytic_covariance(fit, edges, counts)
    boot = None
    if config.n_bootstraps:
        boot = bootstrap_profiles([w.samples for w in windows], _centers(windows), _kappas(windows), beta, edges,
                                  fit.f_k, config.n_bootstraps, config.seed)
    return f, counts, cov, boot


def analyse_umbrella(run, config: FESConfig | None = None, committee: dict | None = None) -> Analysis:
    """The MBAR analysis of an umbrella BiasedRun (see the module docstring); with ``committee`` (the members'
    energies on the run's frames) also the model error (``mlff.fes.committee.member_profiles``)."""
    config = config or FESConfig()
    check_umbrella_run(run)
    points = None
    if config.single_points:  # bad single points fail before the long part
        from mlff.fes.levels import frames_of, read_single_points

        points = read_single_points(config.single_points)
        frames_of(run, points)
    beta = 1.0 / kT_eV(run.temperature_K)
    windows = window_samples(run, equilibration=config.equilibration, subsample=config.subsample,
                             min_samples=config.min_samples_per_window)
    _check_gaps(windows, run.cv_unit)
    fit = fit_mbar([w.samples for w in windows], _centers(windows), _kappas(windows), beta)
    overlap = _overlap(fit, windows, config, run.cv_unit)
    edges = _edges(config, fit.x_n)
    bin_cv = 0.5 * (edges[1:] + edges[:-1])
    f, counts, cov, boot = _profile(fit, windows, edges, config, beta)
    if np.isfinite(f).sum() < 3:
        raise MLFFError(f"only {np.isfinite(f).sum()} of {len(f)} profile bins hold samples; check cv_range")
    sigma_analytic = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    sigma_boot = np.nanstd(boot, axis=0, ddof=1) if boot is not None else None
    profile = Profile("MBAR (histogram bins)", bin_cv, f - np.nanmin(f),
                      sigma_boot if boot is not None else sigma_analytic, "bootstrap" if boot is not None else "analytic",
                      sigma_analytic, counts, edges)
    barrier = _barrier(bin_cv, f, profile.error_kT, cov, boot, config, run)
    warnings = _warnings(overlap, config, windows, run) + resample_warnings(barrier.found, barrier.resamples_with_barrier,
                                                                       barrier.n_resamples)
    level = _level(run, points, edges, bin_cv, config, beta, warnings) if points is not None else None
    model = None
    if committee is not None:
        from mlff.fes.committee import member_profiles

        model = member_profiles(run, committee, edges, beta, config)
        if model["min_ess"] < max(30.0, 0.1 * model["n_frames"]):
            warnings.append(f"the committee reweighting keeps an effective sample size of {model['min_ess']:.0f} of "
                            f"{model['n_frames']} frames for one member: the members disagree more than the samples "
                            "can carry, and the model error is a lower bound")
    convergence = _convergence(windows, fit, edges, bin_cv, config, beta)
    extra_samples = [w.samples for w in windows]
    frames, table = _tables(run, windows)
    estimator = (f"MBAR (pymbar) on {fit.x_n.size} decorrelated samples of {len(windows)} harmonic windows "
                 f"(equilibration: {config.equilibration}, subsampled by g: {config.subsample}); histogram profile on "
                 f"{config.bins} bins; errors: {config.n_bootstraps} bootstrap resamples per window (seed "
                 f"{config.seed}) and MBAR asymptotic covariance")
    profiles = [profile] + ([level.pop("profile")] if level else [])
    return Analysis("umbrella", float(run.temperature_K), run.cv_name, run.cv_unit, estimator, profiles, barrier,
                    warnings, table, overlap, convergence,
                    {"f_k_kT": fit.f_k.tolist(), "f_normalised_kT": f, "bootstrap_f_kT": boot,
                     "window_samples": extra_samples, "n_decorrelated": int(fit.x_n.size), "level": level,
                     "frames": frames, "committee": model},
                    dict(run.provenance))


def _tables(run, windows: list[WindowSamples]) -> tuple[dict, list[dict]]:
    """The decorrelated frames (step, system, window, cv) and the per-window table of fes.json."""
    frames = {"step": np.concatenate([run.step[w.sample[w.keep]] for w in windows]),
              "system": np.concatenate([w.system[w.keep] for w in windows]),
              "window": np.concatenate([np.full(w.keep.size, w.index) for w in windows]),
              "cv": np.concatenate([w.samples for w in windows])}
    units = {"center": run.cv_unit, "kappa": f"eV/{run.cv_unit}^2", "t0": "samples", "g": "samples"}
    table = [{"window": w.index, "center": w.center, "kappa": w.kappa, "n_samples": int(w.series.size),
              "t0": int(w.t0), "g": float(w.g), "n_decorrelated": int(w.keep.size), "units": units} for w in windows]
    return frames, table


def _level(run, points, edges, bin_cv, config: FESConfig, beta: float, warnings: list[str]) -> dict:
    """The profile reweighted to the level of theory of the single ``points`` and its numbers (kT)."""
    from mlff.fes.levels import reweight_to_level

    out = reweight_to_level(run, points, edges, beta, config.n_bootstraps, config.seed)
    f, rows = out["f_target"], out["bootstrap"]
    error = np.nanstd(rows, axis=0, ddof=1) if rows is not None else np.full(f.size, np.nan)
    out["profile"] = Profile(f"MBAR + FEP to the single-point level ({out['n_frames']} frames)", bin_cv,
                             f - np.nanmin(f), error, "bootstrap" if rows is not None else "none",
                             None, out["counts"], edges, key="F_target_level")
    criterion = settings(config)
    boot = barrier_numbers_rows(bin_cv, rows, **criterion, error=error) if rows is not None else None
    out.update(resample_counts(boot))
    try:
        marks = locate(bin_cv, f, **criterion, error=error, cv=run.cv_name, unit=run.cv_unit)
    except NoBarrier as none:
        out.update(values_kT=None, errors_kT=None, cv_ts=None, no_barrier=str(none))
    else:
        out.update(values_kT=barrier_numbers(f, marks), cv_ts=float(bin_cv[marks.ts]), no_barrier=None,
                   errors_kT=({k: float("nan") for k in KEYS} if boot is None else
                              {k: v for k, v in spread(boot).items() if k != "ts_cv"}))
    warnings += resample_warnings(out["no_barrier"] is None, out.get("resamples_with_barrier"), out.get("n_resamples"),
                                  "the single-point-level profile")
    if out["ess_target"] < max(30.0, 0.1 * out["n_frames"]):
        warnings.append(f"reweighting to the single-point level keeps an effective sample size of "
                        f"{out['ess_target']:.0f} of {out['n_frames']} frames: the two levels sample different "
                        "configurations and the target profile is an extrapolation; sample at the target level")
    return out


def _bias_mismatch(run) -> str | None:
    """A warning when the recorded bias energies are not the harmonic restraints of the windows (walls?)."""
    expected = 0.5 * run.kappas[run.window] * (run.cv - run.centers[run.window]) ** 2
    ok = np.isfinite(run.bias_energy) & np.isfinite(expected)
    if not ok.any():
        return None
    worst = float(np.max(np.abs(run.bias_energy[ok] - expected[ok])))
    if worst <= 1e-6 + 1e-6 * float(np.max(np.abs(expected[ok]))):
        return None
    return (f"the recorded bias energies differ from the windows' harmonic restraints by up to {worst:.3g} eV (walls "
            "or other bias terms?): the analysis assumes purely harmonic windows")


def _warnings(overlap: dict, config: FESConfig, windows, run) -> list[str]:
    out = [w for w in [_bias_mismatch(run)] if w]
    poor = [p for p in overlap["neighbour_pairs"] if p["poor"]]
    if poor:
        listing = ", ".join(f"{p['windows'][0]}-{p['windows'][1]} ({p['centers'][0]:g}/{p['centers'][1]:g} "
                            f"{run.cv_unit}: {p['overlap']:.3f})" for p in poor)
        out.append(f"poor overlap (< {config.overlap_threshold:g}) between neighbouring windows {listing}: the MBAR "
                   "analytic errors are not meaningful across these gaps"
                   + ("; the error bars reported are bootstrap errors" if config.n_bootstraps else
                      "; no bootstrap was run (n_bootstraps 0): rerun with bootstraps before trusting the error bars"))
    short = [w.index for w in windows if w.keep.size < 50]
    if short:
        out.append(f"windows {short} have fewer than 50 decorrelated samples: error bars are rough")
    return out
