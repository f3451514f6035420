"""Select: which candidate frames to label.

1. The committee spread of each frame, ``s_raw`` = max over moving atoms of the per-atom force std (eV/Å),
   times the calibration slope of the last labelled batch (``calibrate.py``): ``s = slope * s_raw``.
2. Uncertain frames: ``s >= lo``; selectable frames: ``lo <= s <= hi`` (the trust window; above ``hi`` the
   frame is taken as unphysical, as DP-GEN does).
3. Diversity: greedy farthest-point selection in MACE descriptor space (the invariant node features of the
   committee's first member, averaged over atoms, or those of the three xi atoms concatenated), measured
   from the frames already labelled; at most ``max_per_bin`` per xi bin (width ``xi_bin_A``), at most the
   iteration's budget. The first pick without labelled frames is the most uncertain frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mlff.errors import MLFFError

__all__ = ["FrameScores", "score_frames", "select_frames", "fixed_of"]

_BATCH = 16  # frames per committee evaluation


@dataclass
class FrameScores:
    spread_eV_A: np.ndarray  # [F] max over moving atoms of the committee force std (uncalibrated)
    max_error_eV_A: np.ndarray | None  # [F] max over moving atoms of |F_mean - F_ref| (labelled frames only)
    descriptors: np.ndarray  # [F, D] per-frame MACE descriptor


def fixed_of(atoms) -> np.ndarray:
    from mlff.md.state import fixed_mask

    return fixed_mask(atoms)


def _frame_descriptor(features: torch.Tensor, atoms, kind: str) -> np.ndarray:
    """[D] from the node features [n, F] of one frame."""
    if kind == "xi_atoms":
        if "xi_atoms" not in atoms.info:
            raise MLFFError("select.descriptor: xi_atoms needs info['xi_atoms'] in the structure")
        return features[[int(i) for i in atoms.info["xi_atoms"]]].reshape(-1).cpu().numpy()
    return features.mean(0).cpu().numpy()


def score_frames(potential, frames: list, *, descriptor: str = "mean", with_errors: bool = False) -> FrameScores:
    """Committee spread, descriptors (and, for labelled frames, the true max force error) of ``frames``."""
    from mlff.models.graph import batch_atoms
    from mlff.models.potential import node_descriptors

    if potential.committee_size < 2:
        raise MLFFError(f"active learning needs a committee (>= 2 members) for the force spread; the potential has "
                        f"{potential.committee_size}: set committee in the training config")
    spread, error, desc = [], [], []
    for start in range(0, len(frames), _BATCH):
        chunk = frames[start:start + _BATCH]
        graph = batch_atoms(chunk, potential.cutoff, device=potential.device, dtype=potential.dtype)
        out = potential.evaluate(graph, forces=True)
        features = node_descriptors(potential, graph)
        offset = 0
        for atoms in chunk:
            n = len(atoms)
            moving = torch.as_tensor(~fixed_of(atoms), device=out["forces"].device)
            std = out["forces_std"][offset:offset + n][moving]
            spread.append(float(std.max()) if std.numel() else 0.0)
            if with_errors:
                ref = torch.as_tensor(atoms.calc.results["forces"], dtype=out["forces"].dtype, device=moving.device)
                diff = (out["forces"][offset:offset + n] - ref).norm(dim=-1)[moving]
                error.append(float(diff.max()) if diff.numel() else 0.0)
            desc.append(_frame_descriptor(features[offset:offset + n], atoms, descriptor))
            offset += n
    width = desc[0].shape[0] if desc else 0
    return FrameScores(np.array(spread, np.float64), np.array(error, np.float64) if with_errors else None,
                       np.array(desc, np.float64).reshape(len(desc), width))


def xi_bins(xi: np.ndarray, width_A: float) -> np.ndarray:
    """[F] integer bin of each xi (NaN, no xi: one bin of its own, -10**9)."""
    bins = np.full(len(xi), -10**9, np.int64)
    ok = np.isfinite(xi)
    bins[ok] = np.floor(xi[ok] / width_A).astype(np.int64)
    return bins


def select_frames(spread: np.ndarray, xi: np.ndarray, descriptors: np.ndarray, *, window: tuple[float, float],
                  xi_bin_A: float, max_per_bin: int, budget: int, labelled: np.ndarray | None = None,
                  fill_from_above: bool = False) -> dict:
    """Indices of the frames to label (in the order picked) and the counts behind them.

    ``spread`` [F] calibrated (eV/Å); ``xi`` [F] (NaN: none); ``descriptors`` [F, D]; ``labelled`` [L, D]:
    descriptors of the frames labelled before (distances are measured from them too). ``fill_from_above``:
    when the window holds too few frames, the rest of the budget goes to frames above it, least uncertain
    first, under the same per-bin cap (an early committee may put every frame above ``hi``)."""
    lo, hi = window
    spread, xi = np.asarray(spread, np.float64), np.asarray(xi, np.float64)
    uncertain = spread >= lo
    eligible = uncertain & (spread <= hi)
    bins = xi_bins(xi, xi_bin_A)
    chosen: list[int] = []
    counts: dict[int, int] = {}
    distance = np.full(len(spread), math.inf)
    if labelled is not None and len(labelled) and len(spread):
        for row in labelled:
            distance = np.minimum(distance, np.linalg.norm(descriptors - row, axis=1))
    open_ = eligible.copy()
    while len(chosen) < budget and open_.any():
        if math.isinf(distance[open_].max()):  # nothing picked yet: the most uncertain first
            pick = int(np.flatnonzero(open_)[np.argmax(spread[open_])])
        else:
            pick = int(np.flatnonzero(open_)[np.argmax(distance[open_])])
        chosen.append(pick)
        counts[int(bins[pick])] = counts.get(int(bins[pick]), 0) + 1
        distance = np.minimum(distance, np.linalg.norm(descriptors - descriptors[pick], axis=1))
        open_[pick] = False
        if counts[int(bins[pick])] >= max_per_bin:
            open_ &= bins != bins[pick]
    filled = []
    if fill_from_above:
        for k in np.argsort(spread, kind="stable"):
            if len(chosen) + len(filled) >= budget:
                break
            if spread[k] > hi and counts.get(int(bins[k]), 0) < max_per_bin:
                filled.append(int(k))
                counts[int(bins[k])] = counts.get(int(bins[k]), 0) + 1
    return {"chosen": chosen + filled, "from_above_window": filled, "candidates": int(len(spread)),
            "uncertain": int(uncertain.sum()),
            "in_window": int(eligible.sum()), "above_window": int((spread > hi).sum()),
            "below_window": int((spread < lo).sum()),
            "per_bin": {(f"{b * xi_bin_A:+.3f}" if b != -10**9 else "no xi"): c for b, c in sorted(counts.items())}}
