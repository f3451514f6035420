"""Barrier, reaction free energy and Eyring rates from a 1D profile, as functions of arrays.

Reactant and product are regions of the CV (defaults for xi: xi < -0.3 Å and xi > +0.3 Å); their minima are the
lowest bins inside them; the transition state is the highest bin between the two minima (or inside ``ts_region``).
All free energies here are in kT (dimensionless) unless a name says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlff.errors import MLFFError

__all__ = ["Landmarks", "locate", "barrier_numbers", "barrier_numbers_rows"]


@dataclass
class Landmarks:
    reactant: int  # bin index of the reactant minimum
    ts: int  # bin index of the transition state (maximum between the minima)
    product: int  # bin index of the product minimum


def _inside(centers, region):
    lo, hi = region
    return (centers >= lo) & (centers <= hi)


def locate(centers: np.ndarray, f: np.ndarray, reactant, product, ts_region=None, *, cv: str = "cv",
           unit: str = "") -> Landmarks:
    """Indices of the reactant minimum, TS and product minimum of profile ``f`` [B] on bin centres [B]."""
    finite = np.isfinite(f)
    names = {"reactant": reactant, "product": product}
    minima = {}
    for name, region in names.items():
        mask = _inside(centers, region) & finite
        if not mask.any():
            lo, hi = (f"{v:g}" for v in region)  # -inf / inf for open ends
            raise MLFFError(f"no profile bins in the {name} region {cv} in [{lo}, {hi}] {unit} (the profile covers "
                            f"[{np.nanmin(centers[finite]):.3g}, {np.nanmax(centers[finite]):.3g}] {unit}); set "
                            f"--{name} LO HI to a region the windows sample")
        candidates = np.nonzero(mask)[0]
        minima[name] = int(candidates[np.argmin(f[candidates])])
    i_r, i_p = minima["reactant"], minima["product"]
    lo, hi = sorted((i_r, i_p))
    between = np.zeros_like(finite)
    between[lo:hi + 1] = True
    if ts_region is not None:
        between &= _inside(centers, ts_region)
    between &= finite
    if not between.any():
        raise MLFFError(f"no profile bins in the TS search region between the reactant ({centers[i_r]:.3g} {unit}) "
                        f"and product ({centers[i_p]:.3g} {unit}) minima; check --ts-region")
    candidates = np.nonzero(between)[0]
    return Landmarks(i_r, int(candidates[np.argmax(f[candidates])]), i_p)


def barrier_numbers(f: np.ndarray, marks: Landmarks) -> dict:
    """Forward barrier, reverse barrier and reaction free energy (kT) of profile ``f`` at landmarks ``marks``."""
    return {"barrier_forward": float(f[marks.ts] - f[marks.reactant]),
            "barrier_reverse": float(f[marks.ts] - f[marks.product]),
            "reaction": float(f[marks.product] - f[marks.reactant])}


def barrier_numbers_rows(centers: np.ndarray, rows: np.ndarray, reactant, product, ts_region=None) -> dict:
    """The same numbers for every row of ``rows`` [R, B] (bootstrap profiles), each row locating its own minima
    and TS (so that the spread includes where they are). Rows whose regions are empty give NaN."""
    out = {"barrier_forward": [], "barrier_reverse": [], "reaction": [], "ts_cv": []}
    for row in rows:
        try:
            marks = locate(centers, row, reactant, product, ts_region)
        except MLFFError:
            for values in out.values():
                values.append(np.nan)
            continue
        for key, value in barrier_numbers(row, marks).items():
            out[key].append(value)
        out["ts_cv"].append(float(centers[marks.ts]))
    return {key: np.asarray(values) for key, values in out.items()}
