"""``FESConfig``: the settings of one free-energy analysis (typed, unknown keys refused by name).

CV values and regions are in the CV's own unit (Å for xi); energies in the outputs are kcal/mol.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from mlff.config import from_dict, load_yaml
from mlff.errors import MLFFError

__all__ = ["FESConfig", "load_fes_config"]


def _interval(value, name: str) -> tuple[float, float]:
    """``[lo, hi]`` with ``None`` for an open end, as floats (-inf/inf)."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise MLFFError(f"fes: {name} must be [lo, hi] (null for an open end), got {value!r}")
    lo = -math.inf if value[0] is None else float(value[0])
    hi = math.inf if value[1] is None else float(value[1])
    if not lo < hi:
        raise MLFFError(f"fes: {name} = [{lo}, {hi}] is empty; expected lo < hi")
    return lo, hi


@dataclass
class FESConfig:
    bins: int = 50  # histogram bins of the profile over cv_range
    cv_range: tuple[float, float] | None = None  # profile range (cv unit); default: the range of the analysed samples
    n_bootstraps: int = 200  # bootstrap resamples of the decorrelated samples (per window) for error bars
    seed: int = 0  # seed of the bootstrap (deterministic)
    equilibration: str = "detect"  # "detect" (pymbar.timeseries.detect_equilibration per window) or "none"
    subsample: bool = True  # keep samples spaced by the statistical inefficiency g (pymbar.timeseries)
    min_samples_per_window: int = 10  # fewer decorrelated samples in a window is an error
    overlap_threshold: float = 0.03  # neighbouring-window MBAR overlap below this is flagged
    overlap_error: float = 1e-4  # below this the windows are disconnected: the profile is undetermined (error)
    reactant: tuple[float, float] = (None, -0.3)  # reactant region of the CV, [lo, hi]; null = open end
    product: tuple[float, float] = (0.3, None)  # product region
    ts_region: tuple[float, float] | None = None  # where to search the TS; default: between the two minima
    # a barrier rises above both minima by more than this (kT) and by more than barrier_noise_z times the error of
    # the difference; otherwise the profile has none (mlff.fes.barrier)
    min_barrier_kT: float = 1.0
    barrier_noise_z: float = 2.0
    slice_fractions: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)  # forward/backward convergence slices
    metad_discard_fraction: float = 0.2  # metaD reweighting: leading fraction of the samples dropped (transient)
    metad_blocks: int = 10  # metaD reweighting: contiguous blocks for the block bootstrap
    metad_grid: int = 400  # metaD: points of the grid the hills are summed on
    single_points: str | None = None  # umbrella: CSV of E_target - E_reference on frames, to reweight to that level
    # umbrella: the model error, the run's samples reweighted to each member of its committee (mlff.fes.committee)
    committee: bool = False
    plots: bool = True

    def __post_init__(self):
        if int(self.bins) < 3:
            raise MLFFError(f"fes: bins = {self.bins}; expected an integer >= 3")
        self.bins = int(self.bins)
        if self.cv_range is not None:
            self.cv_range = _interval(self.cv_range, "cv_range")
            if not all(math.isfinite(v) for v in self.cv_range):
                raise MLFFError(f"fes: cv_range = {list(self.cv_range)}; expected two finite numbers")
        if int(self.n_bootstraps) != 0 and int(self.n_bootstraps) < 10:
            raise MLFFError(f"fes: n_bootstraps = {self.n_bootstraps}; expected 0 (none) or >= 10")
        self.n_bootstraps = int(self.n_bootstraps)
        if self.equilibration not in ("detect", "none"):
            raise MLFFError(f"fes: equilibration = {self.equilibration!r}; expected 'detect' or 'none'")
        if int(self.min_samples_per_window) < 2:
            raise MLFFError(f"fes: min_samples_per_window = {self.min_samples_per_window}; expected >= 2")
        if not 0.0 < self.overlap_threshold < 1.0 or not 0.0 <= self.overlap_error < self.overlap_threshold:
            raise MLFFError(f"fes: overlap_error = {self.overlap_error}, overlap_threshold = {self.overlap_threshold}; "
                            "expected 0 <= overlap_error < overlap_threshold < 1")
        self.reactant = _interval(self.reactant, "reactant")
        self.product = _interval(self.product, "product")
        if self.ts_region is not None:
            self.ts_region = _interval(self.ts_region, "ts_region")
        if not self.min_barrier_kT >= 0.0 or not self.barrier_noise_z >= 0.0:
            raise MLFFError(f"fes: min_barrier_kT = {self.min_barrier_kT}, barrier_noise_z = {self.barrier_noise_z}; "
                            "expected numbers >= 0")
        self.min_barrier_kT, self.barrier_noise_z = float(self.min_barrier_kT), float(self.barrier_noise_z)
        fractions = tuple(float(f) for f in self.slice_fractions)
        if not fractions or any(not 0.0 < f <= 1.0 for f in fractions):
            raise MLFFError(f"fes: slice_fractions = {list(self.slice_fractions)}; expected numbers in (0, 1]")
        self.slice_fractions = fractions
        if not 0.0 <= self.metad_discard_fraction < 1.0:
            raise MLFFError(f"fes: metad_discard_fraction = {self.metad_discard_fraction}; expected a number in [0, 1)")
        if int(self.metad_blocks) < 2 or int(self.metad_grid) < 10:
            raise MLFFError(f"fes: metad_blocks = {self.metad_blocks}, metad_grid = {self.metad_grid}; "
                            "expected >= 2 blocks and >= 10 grid points")

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        for key in ("cv_range", "reactant", "product", "ts_region"):
            if out[key] is not None:
                out[key] = [None if math.isinf(v) else v for v in out[key]]
        return out


def load_fes_config(source: str | Path | dict | None = None, **overrides) -> FESConfig:
    """A config from a YAML file or a dict (or the defaults), with CLI ``overrides`` (None values ignored)."""
    data = {} if source is None else dict(source) if isinstance(source, dict) else load_yaml(source)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(FESConfig, data, "fes config")
