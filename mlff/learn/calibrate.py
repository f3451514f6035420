"""Calibrate the committee spread against the true error of the frames just labelled.

For the frames labelled in an iteration (selected with that iteration's committee), the predicted spread
``s`` (max over moving atoms of the committee force std, eV/Å) and the true error ``e`` (max over moving
atoms of |F_committee - F_oracle|, eV/Å) are fitted by a line through the origin, ``e ~ slope * s``
(least squares: slope = sum(s e) / sum(s^2)). The next selection multiplies its spreads by the slope, so
its trust window is a window on the expected true error. The fit is stored in ``iter_NNN/calibration.json``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_through_origin", "calibrate"]


def fit_through_origin(spread: np.ndarray, error: np.ndarray) -> dict:
    """slope of error ~ slope * spread, its R^2 (uncentred), Pearson r and the points; slope None without data."""
    s, e = np.asarray(spread, np.float64), np.asarray(error, np.float64)
    ok = np.isfinite(s) & np.isfinite(e)
    s, e = s[ok], e[ok]
    if len(s) == 0 or not np.any(s > 0):
        return {"slope": None, "n": int(len(s)), "spread_eV_A": s.tolist(), "error_eV_A": e.tolist()}
    slope = float(np.dot(s, e) / np.dot(s, s))
    residual = e - slope * s
    r2 = float(1.0 - np.dot(residual, residual) / np.dot(e, e)) if np.dot(e, e) > 0 else None
    pearson = float(np.corrcoef(s, e)[0, 1]) if len(s) > 2 and s.std() > 0 and e.std() > 0 else None
    return {"slope": slope, "n": int(len(s)), "r2_through_origin": r2, "pearson_r": pearson,
            "spread_eV_A": s.tolist(), "error_eV_A": e.tolist()}


def calibrate(potential, labels_path, iteration: int, previous_slope: float, descriptor: str) -> dict:
    """The calibration of ``potential`` (the committee that selected them) on the records of ``labels_path``
    labelled in ``iteration``; keeps ``previous_slope`` when there are none."""
    from mlff.data.store import Dataset
    from mlff.learn.select import score_frames

    records = []
    if labels_path.is_file():
        ds = Dataset(labels_path)
        index = [k for k, info in enumerate(ds.infos()) if info.get("learn_iteration") == iteration]
        records = ds.read(index) if index else []
    if records:
        scores = score_frames(potential, records, descriptor=descriptor, with_errors=True)
        fit = fit_through_origin(scores.spread_eV_A, scores.max_error_eV_A)
    else:
        fit = fit_through_origin(np.zeros(0), np.zeros(0))
    fit["previous_slope"] = previous_slope
    fit["used_slope"] = fit["slope"] if fit["slope"] is not None else previous_slope
    return fit
