"""Geometry checks shared by MD, the ASE calculator and the data validator: one function, one message each.

A structure is refused (``MLFFError("<where>: <what>")``) when it has no atoms, non-finite positions or
cell, a periodic cell without volume (zero or linearly dependent cell vectors along its periodic
directions), or two atoms (or an atom and its own periodic image) closer than ``MIN_DISTANCE_A``.
Open structures and orthorhombic boxes use a k-d tree (tens of µs for a 40-atom cluster, ms for 10^4
atoms: cheap enough for every force call); other periodic cells ``mlff.neighbors.neighbor_list`` with the
overlap distance as cutoff. Both are linear in the number of atoms.
"""

from __future__ import annotations

import numpy as np

from mlff.errors import MLFFError

__all__ = ["MIN_DISTANCE_A", "check_geometry", "geometry_problem"]

MIN_DISTANCE_A = 0.5  # closer atoms are an overlap, not a configuration


def check_geometry(atoms, where: str = "structure", *, min_distance_A: float = MIN_DISTANCE_A) -> None:
    """Raise ``MLFFError(f"{where}: ...")`` unless ``atoms`` (ase.Atoms) is a geometry a force model can take."""
    problem = geometry_problem(atoms.positions, atoms.cell.array, atoms.pbc, min_distance_A=min_distance_A)
    if problem is not None:
        raise MLFFError(f"{where}: {problem}")


def geometry_problem(positions, cell, pbc, *, min_distance_A: float = MIN_DISTANCE_A) -> str | None:
    """What is wrong with one structure (positions [N,3] Å, cell [3,3] Å rows, pbc [3]), or None."""
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    if positions.ndim != 2 or positions.shape[1] != 3:
        return f"positions must have shape (N, 3), got {positions.shape}"
    if len(positions) == 0:
        return "no atoms (an empty structure)"
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if len(bad):
        return f"positions contain NaN or inf (atom {bad[0]}{f' and {len(bad) - 1} more' if len(bad) > 1 else ''})"
    if cell.shape != (3, 3):
        return f"cell must have shape (3, 3), got {cell.shape}"
    if not np.isfinite(cell).all():
        return "cell contains NaN or inf"
    problem = _cell_problem(cell, pbc)
    if problem is None and min_distance_A > 0 and len(positions) > (0 if pbc.any() else 1):
        problem = _overlap_problem(positions, cell, pbc, min_distance_A)
    return problem


def _cell_problem(cell: np.ndarray, pbc: np.ndarray) -> str | None:
    periodic = np.flatnonzero(pbc)
    if len(periodic) == 0:
        return None
    sing = np.linalg.svd(cell[periodic], compute_uv=False)
    if sing.min() <= 1e-9 * max(sing.max(), 1.0):
        return (f"the periodic cell has no volume: its vectors along the periodic directions {periodic.tolist()} "
                f"are zero or linearly dependent (give a cell, or pbc=False)")
    return None


def _overlap_problem(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, min_distance_A: float) -> str | None:
    """The closest pair below ``min_distance_A``: a k-d tree for open structures and orthorhombic boxes (fast
    enough to run before every force call), mlff's neighbour list for any other periodic cell."""
    pair = _closest_pair_kdtree(positions, cell, pbc, min_distance_A)
    if pair is None:
        pair = _closest_pair_neighbor_list(positions, cell, pbc, min_distance_A)
    a, b, distance = pair
    if not distance < min_distance_A:
        return None
    if a == b:
        return f"atom {a} overlaps its own periodic image ({distance:.3f} Å apart, minimum {min_distance_A} Å)"
    return f"atoms {a} and {b} overlap ({distance:.3f} Å apart, minimum {min_distance_A} Å)"


def _closest_pair_kdtree(positions, cell, pbc, min_distance_A):
    """(a, b, distance) of the closest pair within reach, (0, 0, inf) if none; None where a k-d tree cannot
    represent the cell (triclinic, partly periodic, or a box shorter than twice the overlap distance)."""
    from scipy.spatial import cKDTree

    if not pbc.any():
        tree = cKDTree(positions)
    else:
        lengths = np.diag(cell)
        if not pbc.all() or np.abs(cell - np.diag(lengths)).max() > 0 or (lengths < 2 * min_distance_A).any():
            return None
        wrapped = np.mod(positions, lengths)
        wrapped[wrapped >= lengths] = 0.0  # np.mod can round up to the length itself
        tree = cKDTree(wrapped, boxsize=lengths)
    pairs = tree.query_pairs(min_distance_A, output_type="ndarray")
    if len(pairs) == 0:
        return 0, 0, np.inf
    data = tree.data
    delta = data[pairs[:, 1]] - data[pairs[:, 0]]
    if pbc.any():
        delta -= np.round(delta / lengths) * lengths
    d = np.linalg.norm(delta, axis=1)
    k = int(np.argmin(d))
    return int(pairs[k, 0]), int(pairs[k, 1]), float(d[k])


def _closest_pair_neighbor_list(positions, cell, pbc, min_distance_A):
    from mlff.neighbors import neighbor_list

    i, j, shifts = neighbor_list(positions, cell, pbc, min_distance_A)
    if len(i) == 0:
        return 0, 0, np.inf
    d = np.linalg.norm(positions[j] - positions[i] + shifts @ cell, axis=1)
    k = int(np.argmin(d))
    return min(int(i[k]), int(j[k])), max(int(i[k]), int(j[k])), float(d[k])
