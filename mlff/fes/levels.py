"""Reweighting an umbrella profile to another level of theory from single points on subsampled frames.

Given, for some frames (step, system) of the run, the energy difference dE = E_target - E_reference (eV; the
reference is the potential that drove the run), MBAR on those frames gives their weights w_n in the unbiased
reference ensemble and the target ensemble has weights w_n exp(-dE_n / kT) (free-energy perturbation through
MBAR). The profile on the same bins, its bootstrap errors (frames resampled within each window), the free-energy
difference of the whole ensemble, and Kish's effective sample size of the target weights (how many of the
frames effectively carry the target profile) come back. A small effective sample size means the two levels
sample different configurations: the target profile is then an extrapolation and is flagged.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlff.errors import MLFFError
from mlff.fes.mbar import bin_profile, fit_mbar

__all__ = ["SinglePoints", "read_single_points", "frames_of", "reweight_to_level"]


@dataclass
class SinglePoints:
    step: np.ndarray  # [M] int: MD step of each frame
    system: np.ndarray  # [M] int: system of each frame
    delta_eV: np.ndarray  # [M] E_target - E_reference of each frame (eV)
    source: str = ""


def read_single_points(path: str | Path) -> SinglePoints:
    """CSV with columns step, system and delta_energy_eV, or target_energy_eV and reference_energy_eV."""
    path = Path(path)
    if not path.is_file():
        raise MLFFError(f"single-point file not found: {path}")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(line for line in handle if not line.startswith("#")))
    if not rows:
        raise MLFFError(f"{path}: no single points; expected a CSV header and one row per frame")
    columns = set(rows[0])
    if not {"step", "system"} <= columns or not ("delta_energy_eV" in columns or
                                                {"target_energy_eV", "reference_energy_eV"} <= columns):
        raise MLFFError(f"{path}: columns {sorted(columns)}; expected step, system and delta_energy_eV (or "
                        "target_energy_eV and reference_energy_eV)")
    try:
        step = np.array([int(r["step"]) for r in rows])
        system = np.array([int(r["system"]) for r in rows])
        if "delta_energy_eV" in columns:
            delta = np.array([float(r["delta_energy_eV"]) for r in rows])
        else:
            delta = np.array([float(r["target_energy_eV"]) - float(r["reference_energy_eV"]) for r in rows])
    except (TypeError, ValueError) as err:
        raise MLFFError(f"{path}: a value is not a number ({err})") from err
    if not np.all(np.isfinite(delta)):
        raise MLFFError(f"{path}: energies must be finite numbers")
    return SinglePoints(step, system, delta, str(path))


def frames_of(run, points: SinglePoints) -> tuple[np.ndarray, np.ndarray]:
    """``(cv [M], window [M])`` of the frames of ``points`` in ``run``; a frame not in the run is an error."""
    row = {int(s): t for t, s in enumerate(run.step)}
    t = np.array([row.get(int(s), -1) for s in points.step])
    bad = np.nonzero((t < 0) | (points.system < 0) | (points.system >= run.n_systems))[0]
    if bad.size:
        i = int(bad[0])
        raise MLFFError(f"single point {i} (step {points.step[i]}, system {points.system[i]}) is not a CV sample of "
                        f"the run ({run.n_samples} samples, steps {run.step[0]}..{run.step[-1]}, {run.n_systems} systems)")
    return run.cv[t, points.system], run.window[t, points.system]


def _target_profile(samples, delta, centers, kappas, beta, edges, initial_f_k=None, keep_mbar=False):
    fit = fit_mbar(samples, centers, kappas, beta, initial_f_k=initial_f_k, keep_mbar=keep_mbar)
    d = np.concatenate(delta)
    log_target = fit.log_w - beta * (d - d.mean())
    shift = log_target.max()
    total = np.log(np.exp(log_target - shift).sum()) + shift
    f_ref, counts = bin_profile(fit.x_n, fit.log_w, edges)
    f_target, _ = bin_profile(fit.x_n, log_target - total, edges)
    delta_A = (-total) / beta + d.mean()  # eV: -kT ln <exp(-dE/kT)>_reference
    return fit, f_ref, f_target, counts, log_target - total, delta_A


def _kish(log_w: np.ndarray) -> float:
    w = np.exp(log_w - log_w.max())
    return float(w.sum() ** 2 / (w ** 2).sum())


def reweight_to_level(run, points: SinglePoints, edges: np.ndarray, beta_per_eV: float, n_bootstraps: int,
                      seed: int) -> dict:
    """The target-level profile (kT, -ln p normalised over all frames) and its diagnostics (see the module)."""
    cv, window = frames_of(run, points)
    used = [w for w in range(len(run.centers)) if np.any(window == w)]
    if len(used) < 2:
        raise MLFFError(f"single points cover {len(used)} window(s); expected frames from at least 2 windows")
    samples = [cv[window == w] for w in used]
    delta = [points.delta_eV[window == w] for w in used]
    centers, kappas = run.centers[used], run.kappas[used]
    fit, f_ref, f_target, counts, log_target, delta_A = _target_profile(samples, delta, centers, kappas, beta_per_eV,
                                                                       edges, keep_mbar=False)
    rows = None
    if n_bootstraps:
        rng = np.random.default_rng(seed)
        rows = np.full((n_bootstraps, len(edges) - 1), np.nan)
        for b in range(n_bootstraps):
            pick = [rng.integers(0, len(s), len(s)) for s in samples]
            rows[b] = _target_profile([s[i] for s, i in zip(samples, pick)], [d[i] for d, i in zip(delta, pick)],
                                      centers, kappas, beta_per_eV, edges, initial_f_k=fit.f_k)[2]
    return {"f_target": f_target, "f_reference": f_ref, "counts": counts, "bootstrap": rows,
            "n_frames": int(fit.x_n.size), "windows_used": used, "delta_A_eV": float(delta_A),
            "ess_target": _kish(log_target), "ess_reference": _kish(fit.log_w), "source": points.source}
