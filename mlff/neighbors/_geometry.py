"""Cell geometry shared by every neighbour-list backend: input checks, completed boxes, face heights."""

from __future__ import annotations

import numpy as np

from mlff.errors import MLFFError

__all__ = ["as_cells", "as_pbc", "complete_box", "face_heights"]


def as_cells(cell, n_systems: int | None) -> np.ndarray:
    """Cells as float64 [S,3,3]; a single [3,3] cell is broadcast when ``n_systems`` is given."""
    cells = np.asarray(cell, dtype=np.float64)
    if cells.shape == (3, 3):
        cells = np.broadcast_to(cells, (n_systems or 1, 3, 3))
    if cells.ndim != 3 or cells.shape[1:] != (3, 3):
        raise MLFFError(f"cell must have shape [3,3] or [n_systems,3,3], got {list(cells.shape)}")
    if n_systems is not None and len(cells) != n_systems:
        raise MLFFError(f"got {len(cells)} cells for {n_systems} systems")
    if not np.isfinite(cells).all():
        raise MLFFError("cell contains NaN or inf")
    return np.ascontiguousarray(cells)


def as_pbc(pbc, n_systems: int) -> np.ndarray:
    """Periodicity as bool [S,3] from a bool, a [3] sequence or an [S,3] array."""
    flags = np.asarray(pbc, dtype=bool)
    if flags.ndim == 0:
        flags = np.full(3, bool(flags))
    if flags.shape == (3,):
        flags = np.broadcast_to(flags, (n_systems, 3))
    if flags.shape != (n_systems, 3):
        raise MLFFError(f"pbc must be a bool, [3] or [n_systems,3], got shape {list(flags.shape)}")
    return np.ascontiguousarray(flags)


def complete_box(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """The cell with its non-periodic rows replaced by an orthonormal complement of the periodic ones.

    cell [3,3] (rows a1, a2, a3, Å), pbc [3] -> box [3,3], always invertible. Along open directions the
    cell is irrelevant (no images), so any independent vectors serve for binning.
    """
    periodic = np.flatnonzero(pbc)
    box = np.array(cell, dtype=np.float64)
    if len(periodic) == 0:
        return np.eye(3)
    vectors = box[periodic].T  # [3,p]
    u, sing, _ = np.linalg.svd(vectors, full_matrices=True)
    if sing.min() <= 1e-10 * max(sing.max(), 1e-300):
        raise MLFFError(f"the cell vectors along the periodic directions {periodic.tolist()} are zero or degenerate")
    box[np.flatnonzero(~np.asarray(pbc, dtype=bool))] = u[:, len(periodic):].T
    return box


def face_heights(box: np.ndarray) -> np.ndarray:
    """Distances between opposite faces of each box, [...,3,3] -> [...,3] (Å)."""
    volume = np.abs(np.linalg.det(box))
    crosses = np.stack([np.cross(box[..., (k + 1) % 3, :], box[..., (k + 2) % 3, :]) for k in range(3)], axis=-2)
    return volume[..., None] / np.linalg.norm(crosses, axis=-1)
