"""O(N) cell-list pair search for a batch of systems, on torch tensors (CUDA or CPU).

Binning, sorting and prefix sums are torch operations on the tensors' device; the pair search itself is
the kernel in ``kernels.cu``, launched by a ``launch(n_threads, *args)`` callable: CuPy on the GPU
(``mlff.neighbors.cupy_backend``), or the same source compiled for the host in the tests.

Two passes (count, then fill at prefix-sum offsets) give a deterministic pair order, sorted by ``i``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from mlff.neighbors._geometry import complete_box, face_heights

__all__ = ["CellListPairs", "cell_list_pairs"]

SAFETY = 1e-8  # bins are this much wider than the cutoff, so rounding never hides a pair
BINS_PER_ATOM = 2  # at most this many bins per atom (and at least one per system): bounds memory


@dataclass
class CellListPairs:
    i: torch.Tensor  # [P] int64, first atom
    j: torch.Tensor  # [P] int64, second atom
    S: torch.Tensor  # [P,3] int64, cell shift: D = r[j] - r[i] + S @ cell[system]
    n_pairs: torch.Tensor  # [] int64 on the device: pairs found (may exceed capacity)


def _boxes(cells: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    return np.stack([complete_box(c, p) for c, p in zip(cells, pbc)]) if len(cells) else np.zeros((0, 3, 3))


def _grid(box, pbc, fmin, fmax, n_atoms, cutoff):
    """Bins and stencil per system, on the host. All arrays [S,3] except offsets [S+1]."""
    empty = ~np.isfinite(fmin)
    span = np.where(pbc, 1.0, np.where(empty, 0.0, fmax - fmin))
    origin = np.where(pbc | empty, 0.0, fmin)
    heights = face_heights(box)
    nbins = np.maximum(1, np.floor(heights * span / (cutoff * (1 + SAFETY)))).astype(np.int64)
    cap = np.maximum(1, BINS_PER_ATOM * n_atoms)
    for s in np.flatnonzero(nbins.prod(axis=1) > cap):  # coarser bins stay correct, only slower
        while nbins[s].prod() > cap[s]:
            k = np.argmax(nbins[s])
            nbins[s, k] = max(1, nbins[s, k] // 2)
    length = np.where(span > 0, span, 1.0)
    reach = np.ceil(cutoff * nbins / (heights * length) * (1 + 1e-9)).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(nbins.prod(axis=1))]).astype(np.int64)
    return origin, length, nbins, reach, offsets


def cell_list_pairs(
    positions: torch.Tensor,  # [N,3] Å
    cells: np.ndarray,  # [S,3,3] float64, host
    pbc: np.ndarray,  # [S,3] bool, host
    system_idx: torch.Tensor,  # [N] int64, on the positions' device
    cutoff: float,
    launch: Callable,
    capacity: int | None = None,
) -> CellListPairs:
    """Pairs closer than ``cutoff`` (Å). With ``capacity``, outputs have that many rows, of which the first
    ``min(n_pairs, capacity)`` are valid; without it, exactly ``n_pairs`` rows (one host sync)."""
    device = positions.device
    n_atoms, n_systems = positions.shape[0], len(cells)
    as_dev = lambda a, dtype=torch.int64: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)  # noqa: E731
    box_h = _boxes(cells, pbc)
    box, per = as_dev(box_h, torch.float64), as_dev(pbc, torch.bool)
    r = positions.detach().to(torch.float64)
    frac = torch.einsum("nl,nlk->nk", r, torch.linalg.inv(box)[system_idx])
    periodic = per[system_idx]
    wrap = torch.where(periodic, torch.floor(frac), torch.zeros_like(frac))
    frac = frac - wrap
    index = system_idx[:, None].expand(-1, 3)
    fmin = torch.full((n_systems, 3), torch.inf, dtype=torch.float64, device=device)
    fmin = fmin.scatter_reduce(0, index, frac, "amin")
    fmax = torch.full_like(fmin, -torch.inf).scatter_reduce(0, index, frac, "amax")
    counts_per_system = torch.bincount(system_idx, minlength=n_systems)
    host = torch.stack([fmin, fmax]).cpu().numpy(), counts_per_system.cpu().numpy()
    origin, length, nbins, reach, offsets = _grid(box_h, pbc, host[0][0], host[0][1], host[1], cutoff)
    nb = as_dev(nbins)
    cont = (frac - as_dev(origin, torch.float64)[system_idx]) / as_dev(length, torch.float64)[system_idx]
    bins = torch.minimum(torch.floor(cont * nb[system_idx]).to(torch.int64).clamp_min(0), nb[system_idx] - 1)
    key = as_dev(offsets[:-1])[system_idx] + (bins[:, 0] * nb[system_idx, 1] + bins[:, 1]) * nb[system_idx, 2] + bins[:, 2]
    order = torch.argsort(key, stable=True)
    bin_count = torch.bincount(key, minlength=int(offsets[-1]))
    bin_start = torch.cumsum(bin_count, 0) - bin_count
    wrapped = (r - torch.einsum("nk,nkl->nl", wrap, box[system_idx])).contiguous()
    wrap = wrap.to(torch.int64).contiguous()
    counts = torch.zeros(n_atoms, dtype=torch.int64, device=device)
    args = [np.int64(n_atoms), wrapped, wrap, system_idx.contiguous(), bins.contiguous(), box,
            as_dev(pbc), nb, as_dev(reach), as_dev(offsets[:-1]), order, bin_start, bin_count,
            np.float64(cutoff**2), counts]
    empty = torch.empty(0, dtype=torch.int64, device=device)
    if n_atoms:
        launch(n_atoms, *args, empty, np.int64(0), empty, empty, empty, np.int32(0))
    starts = torch.cumsum(counts, 0) - counts
    n_pairs = counts.sum()
    rows = int(n_pairs) if capacity is None else capacity
    out_i = torch.empty(rows, dtype=torch.int64, device=device)
    out_j = torch.empty(rows, dtype=torch.int64, device=device)
    out_s = torch.empty((rows, 3), dtype=torch.int64, device=device)
    if n_atoms and rows:
        launch(n_atoms, *args[:-1], counts, starts, np.int64(rows), out_i, out_j, out_s, np.int32(1))
    return CellListPairs(out_i, out_j, out_s, n_pairs)
