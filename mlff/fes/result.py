"""What an analysis produces: profiles, barrier numbers, diagnostics (free energies in kT; converted on output)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Profile", "BarrierEstimate", "Analysis"]


@dataclass
class Profile:
    label: str  # the estimator, e.g. "MBAR (histogram bins)"
    cv: np.ndarray  # [B] bin centres or grid points (cv unit)
    f_kT: np.ndarray  # [B] free energy, kT, lowest finite point 0; NaN where nothing was sampled
    error_kT: np.ndarray  # [B] the error bar reported (see error_method); NaN where unknown
    error_method: str  # "bootstrap", "analytic", "block bootstrap", "spread of walkers" or "none"
    error_analytic_kT: np.ndarray | None = None  # [B] MBAR asymptotic error (normalisation reference)
    counts: np.ndarray | None = None  # [B] samples per bin
    edges: np.ndarray | None = None  # [B+1] bin edges when the profile is a histogram
    key: str = "F"  # column name in fes.csv (F, F_hills, F_target_level)


@dataclass
class BarrierEstimate:
    """The barrier numbers of a profile, or why it has none (``no_barrier``; then the values, errors and
    landmarks are None). The test is ``mlff.fes.barrier.locate``'s; bootstrap resamples apply it each."""

    values_kT: dict | None  # barrier_forward, barrier_reverse, reaction
    errors_kT: dict | None  # the error bar reported for each value (error_method)
    error_method: str
    cv_reactant: float | None
    cv_ts: float | None
    cv_product: float | None
    errors_analytic_kT: dict | None = None
    bootstrap_kT: dict | None = None  # [n] per value: the bootstrap distribution (NaN where a resample has no barrier)
    cv_ts_error: float | None = None  # spread of the TS location over the bootstrap
    no_barrier: str | None = None  # one line: why the profile has no barrier; None when it has one
    resamples_with_barrier: int | None = None  # how many of the n_resamples bootstrap profiles have a barrier
    n_resamples: int | None = None

    @property
    def found(self) -> bool:
        return self.no_barrier is None


@dataclass
class Analysis:
    kind: str  # "umbrella" or "metad"
    temperature_K: float
    cv_name: str
    cv_unit: str
    estimator: str  # one sentence naming the estimator and its settings
    profiles: list[Profile]  # the primary profile first
    barrier: BarrierEstimate  # of the primary profile; see its no_barrier
    warnings: list[str] = field(default_factory=list)
    windows: list[dict] = field(default_factory=list)  # umbrella: per window centre, kappa, samples, t0, g, kept
    overlap: dict | None = None  # umbrella: matrix [K, K], neighbour pairs, flags
    convergence: dict | None = None  # forward/backward slices (umbrella) or time slices of the hills (metaD)
    extra: dict = field(default_factory=dict)  # estimator-specific numbers (e.g. metaD reweighting ESS)
    provenance: dict = field(default_factory=dict)  # BiasedRun.provenance
