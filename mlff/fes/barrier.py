"""Barrier, reaction free energy and Eyring rates from a 1D profile, as functions of arrays.

Reactant and product are regions of the CV (defaults for xi: xi < -0.3 Å and xi > +0.3 Å). A profile has a
barrier only when all of these hold (``locate``; otherwise it raises ``NoBarrier`` with the reason in one line):

1. each region's lowest bin is an interior local minimum of the profile: not the first or last sampled bin
   (F may still fall beyond what was sampled) and no lower than the sampled bins next to it (a lowest bin on the
   region's boundary with F falling past it is a slope, not a minimum);
2. the transition state, the highest bin strictly between the two minima (inside ``ts_region`` when given), is
   a local maximum: no lower than the sampled bins next to it;
3. it rises above both minima by more than ``min_barrier_kT`` (default 1 kT) and, where the bins' statistical
   errors are known, by more than ``noise_z`` (default 2) times the error of the difference (the two bins'
   errors in quadrature): a flat profile within its noise has no barrier.

A monotonic profile fails 1 (a minimum on the profile's edge or on a region's boundary), a flat one fails 3.
Bootstrap resamples apply the same test each; ``barrier_numbers_rows`` marks those with a barrier (``found``)
and ``spread`` gives the error bars over them. All free energies here are in kT unless a name says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlff.errors import MLFFError

__all__ = ["CRITERION", "MIN_BARRIER_KT", "NOISE_Z", "Landmarks", "NoBarrier", "barrier_numbers",
           "barrier_numbers_rows", "locate", "resample_counts", "resample_warnings", "settings", "spread"]

MIN_BARRIER_KT = 1.0  # a barrier must rise more than this above both minima (kT)
NOISE_Z = 2.0  # ... and more than this many standard errors of the difference, where the bins' errors are known
CRITERION = ("the reactant and product minima are interior local minima of the profile, the TS the highest point "
             "strictly between them and a local maximum, rising above both minima by more than min_barrier_kT and "
             "by more than barrier_noise_z times the error of the difference")
KEYS = ("barrier_forward", "barrier_reverse", "reaction")


class NoBarrier(MLFFError):
    """The profile has no barrier between the reactant and product regions (the message says why)."""


@dataclass
class Landmarks:
    reactant: int  # bin index of the reactant minimum
    ts: int  # bin index of the transition state (maximum between the minima)
    product: int  # bin index of the product minimum


def settings(config) -> dict:
    """``locate``'s regions and thresholds from an ``FESConfig``, as keyword arguments."""
    return {"reactant": config.reactant, "product": config.product, "ts_region": config.ts_region,
            "min_barrier_kT": config.min_barrier_kT, "noise_z": config.barrier_noise_z}


def _at(value: float, unit: str) -> str:
    return f"{value:.3g} {unit}".rstrip()


def _inside(centers, region):
    lo, hi = region
    return (centers >= lo) & (centers <= hi)


def _neighbours(finite_idx: np.ndarray, i: int) -> list[int]:
    """The sampled bins next to bin ``i`` (the nearest finite ones on each side)."""
    k = int(np.searchsorted(finite_idx, i))
    return [int(finite_idx[j]) for j in (k - 1, k + 1) if 0 <= j < finite_idx.size]


def _minimum(centers, f, finite, region, name, cv, unit) -> int:
    mask = _inside(centers, region) & finite
    if not mask.any():
        lo, hi = (f"{v:g}" for v in region)  # -inf / inf for open ends
        raise MLFFError(f"no profile bins in the {name} region {cv} in [{lo}, {hi}] {unit} (the profile covers "
                        f"[{np.nanmin(centers[finite]):.3g}, {np.nanmax(centers[finite]):.3g}] {unit}); set "
                        f"--{name} LO HI to a region the windows sample")
    candidates = np.nonzero(mask)[0]
    i = int(candidates[np.argmin(f[candidates])])
    sampled = np.nonzero(finite)[0]
    if i in (sampled[0], sampled[-1]):
        raise NoBarrier(f"no barrier: the {name} region's lowest point is the edge of the profile ({cv} = "
                        f"{_at(centers[i], unit)}), where F may fall further; no {name} minimum was sampled")
    lower = [j for j in _neighbours(sampled, i) if f[j] < f[i]]
    if lower:
        raise NoBarrier(f"no barrier: the {name} region's lowest point ({cv} = {_at(centers[i], unit)}) is on "
                        f"its boundary and F is lower just past it ({cv} = {_at(centers[lower[0]], unit)}): no {name} "
                        "minimum inside the region")
    return i


def _significant(f, error, i_ts, i_min, name, min_barrier_kT, noise_z, cv, unit, centers) -> None:
    height = float(f[i_ts] - f[i_min])
    sigma = float(np.hypot(error[i_ts], error[i_min])) if error is not None else np.nan
    need = max(min_barrier_kT, noise_z * sigma) if np.isfinite(sigma) else min_barrier_kT
    if not height > need:
        noise = f", {noise_z:g} x its error {sigma:.2f} kT" if np.isfinite(sigma) else ""
        raise NoBarrier(f"no barrier: the highest point between the minima ({cv} = {_at(centers[i_ts], unit)}) rises "
                        f"{height:.2f} kT above the {name} minimum, not more than {need:.2f} kT (min_barrier_kT "
                        f"{min_barrier_kT:g}{noise}): the profile is flat there within its noise")


def locate(centers: np.ndarray, f: np.ndarray, reactant, product, ts_region=None, *, error: np.ndarray | None = None,
           min_barrier_kT: float = MIN_BARRIER_KT, noise_z: float = NOISE_Z, cv: str = "cv",
           unit: str = "") -> Landmarks:
    """Indices of the reactant minimum, TS and product minimum of profile ``f`` [B] (kT) on bin centres [B].

    ``error`` [B]: the bins' statistical errors (kT; NaN where unknown). Raises ``NoBarrier`` when the profile
    has no barrier by the criterion of the module docstring, ``MLFFError`` when a region holds no sampled bin."""
    f = np.asarray(f, np.float64)
    finite = np.isfinite(f)
    i_r = _minimum(centers, f, finite, reactant, "reactant", cv, unit)
    i_p = _minimum(centers, f, finite, product, "product", cv, unit)
    lo, hi = sorted((i_r, i_p))
    between = np.zeros_like(finite)
    between[lo + 1:hi] = True
    between &= finite
    if not between.any():
        raise NoBarrier(f"no barrier: the reactant ({_at(centers[i_r], unit)}) and product "
                        f"({_at(centers[i_p], unit)}) minima are neighbouring sampled bins, with nothing between them")
    if ts_region is not None:
        between &= _inside(centers, ts_region)
        if not between.any():
            raise MLFFError(f"no profile bins in the TS search region between the reactant ({centers[i_r]:.3g} "
                            f"{unit}) and product ({centers[i_p]:.3g} {unit}) minima; check --ts-region")
    candidates = np.nonzero(between)[0]
    i_ts = int(candidates[np.argmax(f[candidates])])
    higher = [j for j in _neighbours(np.nonzero(finite)[0], i_ts) if f[j] > f[i_ts]]
    if higher:
        raise NoBarrier(f"no barrier: the highest point of the TS region ({cv} = {_at(centers[i_ts], unit)}) is "
                        f"on its boundary and F is higher just past it ({cv} = {_at(centers[higher[0]], unit)}); widen "
                        "--ts-region")
    error = None if error is None else np.asarray(error, np.float64)
    for name, i_min in (("reactant", i_r), ("product", i_p)):
        _significant(f, error, i_ts, i_min, name, min_barrier_kT, noise_z, cv, unit, centers)
    return Landmarks(i_r, i_ts, i_p)


def barrier_numbers(f: np.ndarray, marks: Landmarks) -> dict:
    """Forward barrier, reverse barrier and reaction free energy (kT) of profile ``f`` at landmarks ``marks``."""
    return {"barrier_forward": float(f[marks.ts] - f[marks.reactant]),
            "barrier_reverse": float(f[marks.ts] - f[marks.product]),
            "reaction": float(f[marks.product] - f[marks.reactant])}


def barrier_numbers_rows(centers: np.ndarray, rows: np.ndarray, reactant, product, ts_region=None,
                         **criterion) -> dict:
    """The same numbers for every row of ``rows`` [R, B] (bootstrap profiles), each row locating its own minima
    and TS (so that the spread includes where they are) by ``locate``'s test (``criterion``: its keywords).
    ``found`` [R]: whether the row has a barrier; rows without one give NaN."""
    out = {key: [] for key in (*KEYS, "ts_cv")}
    found = []
    for row in rows:
        try:
            marks = locate(centers, row, reactant, product, ts_region, **criterion)
        except MLFFError:
            for values in out.values():
                values.append(np.nan)
            found.append(False)
            continue
        for key, value in barrier_numbers(row, marks).items():
            out[key].append(value)
        out["ts_cv"].append(float(centers[marks.ts]))
        found.append(True)
    return {**{key: np.asarray(values) for key, values in out.items()}, "found": np.asarray(found, bool)}


def spread(rows: dict) -> dict:
    """Standard deviations (ddof 1) of the numbers of ``barrier_numbers_rows`` (and of the TS location,
    ``ts_cv``) over the rows with a barrier; NaN with fewer than two such rows."""
    found = rows["found"]
    if found.sum() < 2:
        return {key: float("nan") for key in (*KEYS, "ts_cv")}
    return {key: float(np.std(rows[key][found], ddof=1)) for key in (*KEYS, "ts_cv")}


def resample_counts(rows: dict | None) -> dict:
    """{"resamples_with_barrier": k, "n_resamples": n} of ``barrier_numbers_rows``'s rows ({} without rows)."""
    return {} if rows is None else {"resamples_with_barrier": int(rows["found"].sum()),
                                    "n_resamples": int(rows["found"].size)}


def resample_warnings(found: bool, with_barrier: int | None, n: int | None, what: str = "the profile") -> list[str]:
    """A warning when fewer than 90% of ``n`` bootstrap resamples agree with the profile (``found``) on whether
    there is a barrier at all (``with_barrier`` of them have one)."""
    if not n:
        return []
    if (with_barrier if found else n - with_barrier) >= 0.9 * n:
        return []
    if found:
        return [(f"only {with_barrier} of {n} bootstrap resamples of {what} have a barrier by the same test: "
                 "whether there is one at all is uncertain; sample longer before trusting its numbers")]
    return [f"{what} has no barrier, but {with_barrier} of {n} bootstrap resamples have one: sample longer to tell"]
