"""CPU neighbour lists, one system at a time: vesin (the backend) or brute force (the test oracle)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["cpu_pairs"]


def _vesin(positions, cell, pbc, cutoff):
    from vesin import NeighborList

    return NeighborList(cutoff=cutoff, full_list=True).compute(positions, cell, pbc, "ijS")


def _brute(positions, cell, pbc, cutoff):
    from mlff.neighbors.brute import brute_force_pairs

    return brute_force_pairs(positions, cell, pbc, cutoff)


def cpu_pairs(positions: torch.Tensor, cells: np.ndarray, pbc: np.ndarray, system_idx: torch.Tensor,
              cutoff: float, method: str = "vesin"):
    """(i, j, S) as int64 CPU tensors sorted by (i, j, S), so the order never depends on threads."""
    single = {"vesin": _vesin, "brute": _brute}[method]
    pos = positions.detach().cpu().to(torch.float64).numpy()
    sys = system_idx.cpu().numpy()
    order = np.argsort(sys, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(sys, minlength=len(cells)))])
    found = [[np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros((0, 3), np.int64)]]
    for s in range(len(cells)):
        atoms = order[starts[s] : starts[s + 1]]
        if len(atoms) == 0:
            continue
        i, j, shifts = single(pos[atoms], cells[s], pbc[s], float(cutoff))
        found[0].append(atoms[i])
        found[1].append(atoms[j])
        found[2].append(np.asarray(shifts, dtype=np.int64).reshape(-1, 3))
    i, j, s = (np.concatenate(x).astype(np.int64) for x in found)
    keep = np.lexsort((s[:, 2], s[:, 1], s[:, 0], j, i))
    return tuple(torch.from_numpy(np.ascontiguousarray(x[keep])) for x in (i, j, s))
