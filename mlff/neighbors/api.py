"""``neighbor_list``: one function, any array type in, the same type out, for one system or a batch."""

from __future__ import annotations

import numpy as np
import torch

from mlff.errors import MLFFError
from mlff.neighbors._geometry import as_cells, as_pbc, complete_box

__all__ = ["neighbor_list", "pairs_torch", "BACKENDS"]

BACKENDS = ("auto", "cupy", "vesin", "brute")


def _is_cupy(x) -> bool:
    return type(x).__module__.startswith("cupy")


def _to_torch(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if _is_cupy(x):
        return torch.from_dlpack(x)
    return torch.from_numpy(np.ascontiguousarray(x))


def _to_host(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if _is_cupy(x):
        return x.get()
    return np.asarray(x)


def _like(reference, t: torch.Tensor):
    """Return ``t`` as the array type of ``reference`` (numpy, torch on its device, or cupy)."""
    if isinstance(reference, torch.Tensor):
        return t
    if _is_cupy(reference):
        import cupy

        return cupy.from_dlpack(t)
    return t.cpu().numpy()


def pairs_torch(positions: torch.Tensor, cells: np.ndarray, pbc: np.ndarray, system_idx: torch.Tensor,
                cutoff: float, backend: str = "auto"):
    """The backend dispatch on torch inputs: (i, j, S) int64 tensors on the positions' device."""
    if backend == "auto":
        backend = "cupy" if positions.is_cuda else "vesin"
    if backend == "cupy":
        if not positions.is_cuda:
            raise MLFFError("backend 'cupy' needs positions on a CUDA device")
        from mlff.neighbors.cell_list import cell_list_pairs
        from mlff.neighbors.cupy_backend import CupyLauncher

        pairs = cell_list_pairs(positions, cells, pbc, system_idx, cutoff, CupyLauncher("pair_search"))
        return pairs.i, pairs.j, pairs.S
    if backend in ("vesin", "brute"):
        from mlff.neighbors.cpu import cpu_pairs

        pairs = cpu_pairs(positions, cells, pbc, system_idx, cutoff, method=backend)
        return tuple(t.to(positions.device) for t in pairs)
    raise MLFFError(f"unknown neighbour-list backend {backend!r}; expected one of {', '.join(BACKENDS)}")


def neighbor_list(positions, cell, pbc, cutoff: float, *, system_idx=None, backend: str = "auto"):
    """Full neighbour list with the meaning of ``ase.neighborlist.neighbor_list("ijS", ...)``.

    positions [N,3] Å; cell [3,3] (or [S,3,3] with ``system_idx``); pbc bool, [3] or [S,3];
    cutoff Å; system_idx [N] int system of each atom (atoms of different systems are never paired).
    Returns (i [P], j [P], S [P,3]) with D = positions[j] - positions[i] + S @ cell[system] and |D| < cutoff,
    each pair in both directions. numpy in gives numpy out, torch gives torch on the same device, cupy
    gives cupy. backend: "auto" (CuPy cell list for GPU arrays, vesin on the CPU), "cupy", "vesin", "brute".
    """
    pos = _to_torch(positions)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise MLFFError(f"positions must have shape [N,3], got {list(pos.shape)}")
    if not torch.isfinite(pos).all():
        raise MLFFError("positions contain NaN or inf")
    if not cutoff > 0:
        raise MLFFError(f"cutoff must be positive, got {cutoff}")
    if system_idx is None:
        sys = torch.zeros(len(pos), dtype=torch.int64, device=pos.device)
        n_systems = 1
    else:
        sys = _to_torch(system_idx).to(device=pos.device, dtype=torch.int64)
        if sys.shape != (len(pos),):
            raise MLFFError(f"system_idx must have shape [{len(pos)}], got {list(sys.shape)}")
        cell_shape = np.shape(_to_host(cell))
        n_systems = cell_shape[0] if len(cell_shape) == 3 else (int(sys.max()) + 1 if len(sys) else 1)
        if len(sys) and (int(sys.min()) < 0 or int(sys.max()) >= n_systems):
            raise MLFFError(f"system_idx must lie in [0, {n_systems}) for {n_systems} cells")
    cells = as_cells(_to_host(cell), n_systems)
    flags = as_pbc(_to_host(pbc), n_systems)
    for c, p in zip(cells, flags):
        complete_box(c, p)  # raises on degenerate periodic cell vectors
    i, j, shifts = pairs_torch(pos, cells, flags, sys, float(cutoff), backend)
    return _like(positions, i), _like(positions, j), _like(positions, shifts)
