"""Brute-force neighbour list: the slow, obvious reference that the fast backends are tested against."""

from __future__ import annotations

import itertools

import numpy as np

from mlff.neighbors._geometry import complete_box, face_heights

__all__ = ["brute_force_pairs"]


def brute_force_pairs(positions, cell, pbc, cutoff: float):
    """All (i, j, S) with |r_j - r_i + S @ cell| < cutoff for one system, by trying every image.

    positions [N,3] Å, cell [3,3], pbc [3] -> i [P], j [P], S [P,3] (numpy int64).
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    box = complete_box(np.asarray(cell, dtype=np.float64), pbc)
    frac = positions @ np.linalg.inv(box)
    wrap = np.where(pbc, np.floor(frac), 0.0)
    wrapped = positions - wrap @ box
    reach = np.where(pbc, np.ceil(cutoff / face_heights(box)) + 1, 0).astype(int)
    found_i, found_j, found_s = [], [], []
    for shift in itertools.product(*(range(-r, r + 1) for r in reach)):
        shift = np.array(shift)
        d = wrapped[None, :, :] - wrapped[:, None, :] + shift @ box  # [i, j, 3]
        close = (d**2).sum(-1) < cutoff**2
        if not shift.any():
            np.fill_diagonal(close, False)
        i, j = np.nonzero(close)
        found_i.append(i)
        found_j.append(j)
        found_s.append(shift + wrap[i] - wrap[j])
    i = np.concatenate(found_i).astype(np.int64)
    j = np.concatenate(found_j).astype(np.int64)
    s = np.concatenate(found_s).reshape(-1, 3).astype(np.int64)
    return i, j, s
