"""Per-window equilibration detection and decorrelation (pymbar.timeseries), as functions of arrays.

A window's series is its CV samples in time order. Without replica exchange that is one system's trajectory;
with exchange (labels swap, coordinates do not) it is the series of whichever system carried the window at each
sample: correlations along it are usually shorter, and it is what MBAR needs (samples of one Hamiltonian).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlff.errors import MLFFError
from mlff.fes._pymbar import pymbar

__all__ = ["WindowSamples", "decorrelate", "window_samples", "subsample"]


@dataclass
class WindowSamples:
    index: int  # window index into BiasedRun.centers / kappas
    center: float  # cv unit
    kappa: float  # eV / cv_unit²
    series: np.ndarray  # [T_w] all CV samples of the window, time order
    t0: int  # first sample of the equilibrated part
    g: float  # statistical inefficiency of the equilibrated part (samples)
    keep: np.ndarray  # [n] int indices into series of the decorrelated samples (all >= t0)
    sample: np.ndarray | None = None  # [T_w] int: row (sample index t) of each series entry in the BiasedRun
    system: np.ndarray | None = None  # [T_w] int: system that carried the window at that sample

    @property
    def samples(self) -> np.ndarray:
        """[n] decorrelated CV samples."""
        return self.series[self.keep]

    @property
    def production(self) -> np.ndarray:
        """[T_w - t0] equilibrated samples, time order (correlated)."""
        return self.series[self.t0:]


def decorrelate(series: np.ndarray, *, equilibration: str = "detect", subsample: bool = True) -> tuple[int, float, np.ndarray]:
    """``(t0, g, keep)`` of one time series: start of the equilibrated part, statistical inefficiency, kept indices.

    ``detect_equilibration`` maximises the number of uncorrelated samples over the start ``t0``; for long series it
    scans every ``nskip``-th start (about 200 starts) so that it stays cheap.
    """
    ts = pymbar().timeseries
    x = np.asarray(series, dtype=np.float64)
    if x.size < 3 or np.ptp(x) == 0.0:
        return 0, 1.0, np.arange(x.size)  # the caller reports too few samples or a stuck CV
    if equilibration == "detect":
        t0, g, _ = ts.detect_equilibration(x, fast=True, nskip=max(1, x.size // 200))
        t0 = int(t0)
    else:
        t0 = 0
        g = ts.statistical_inefficiency(x, fast=False)
    g = float(max(g, 1.0))
    if not subsample:
        return t0, g, np.arange(t0, x.size)
    keep = np.asarray(ts.subsample_correlated_data(x[t0:], g=g), dtype=np.int64) + t0
    return t0, g, keep


def window_samples(run, *, equilibration: str = "detect", subsample: bool = True,
                   min_samples: int = 10) -> list[WindowSamples]:
    """The decorrelated samples of every umbrella window of ``run`` (a BiasedRun), in window order."""
    out = []
    for w in range(len(run.centers)):
        t, s = np.nonzero(run.window == w)
        order = np.lexsort((s, t))  # time order, as BiasedRun.samples_of_window
        t, s = t[order], s[order]
        finite = np.isfinite(run.cv[t, s])
        t, s = t[finite], s[finite]
        series = run.cv[t, s]
        if series.size and np.ptp(series) == 0.0:
            raise MLFFError(f"window {w} (centre {run.centers[w]:g} {run.cv_unit}): the CV never changes "
                            f"({series[0]:g} in all {series.size} samples); expected a sampled trajectory")
        t0, g, keep = decorrelate(series, equilibration=equilibration, subsample=subsample)
        if keep.size < min_samples:
            raise MLFFError(f"window {w} (centre {run.centers[w]:g} {run.cv_unit}): {keep.size} decorrelated "
                            f"samples of {series.size} (equilibrated from sample {t0}, g = {g:.1f}); expected at "
                            f"least {min_samples}: run the window longer or lower min_samples_per_window")
        out.append(WindowSamples(w, float(run.centers[w]), float(run.kappas[w]), series, t0, g, keep, t, s))
    return out


def subsample(n: int, g: float) -> np.ndarray:
    """Indices 0, g, 2g, ... (rounded, distinct) below ``n``: one sample per statistical inefficiency."""
    keep = np.unique(np.round(np.arange(0.0, n, max(g, 1.0))).astype(np.int64))
    return keep[keep < n]
