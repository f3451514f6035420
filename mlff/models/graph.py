"""The batched graph that a Potential evaluates: atoms of many systems, with their neighbour pairs."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch

from mlff.errors import MLFFError

__all__ = ["Graph", "batch_atoms"]


@dataclass
class Graph:
    positions: torch.Tensor  # [N,3] Å
    numbers: torch.Tensor  # [N] int64 atomic numbers
    cell: torch.Tensor  # [S,3,3] Å, rows are the cell vectors
    pbc: torch.Tensor  # [S,3] bool
    system_idx: torch.Tensor  # [N] int64, system of each atom
    edge_index: torch.Tensor  # [2,E] int64: (i, j) pairs, vector r_j - r_i + S @ cell
    unit_shifts: torch.Tensor  # [E,3] integer cell shifts S, in the positions' dtype

    @property
    def n_systems(self) -> int:
        return self.cell.shape[0]

    def to(self, device=None, dtype=None) -> "Graph":
        """The graph on ``device`` with floating fields in ``dtype``."""
        fl = dict(device=device, dtype=dtype)
        return replace(self, positions=self.positions.to(**fl), cell=self.cell.to(**fl),
                       unit_shifts=self.unit_shifts.to(**fl), numbers=self.numbers.to(device),
                       pbc=self.pbc.to(device), system_idx=self.system_idx.to(device),
                       edge_index=self.edge_index.to(device))


def batch_atoms(atoms_list: Sequence, cutoff: float, *, device="cpu", dtype=torch.float64,
                neighbors=None) -> Graph:
    """One Graph from a list of ASE Atoms. ``neighbors`` is a ``VerletNeighborList`` to reuse between
    calls (e.g. in a calculator); without it, a fresh list is built with ``mlff.neighbors``."""
    from mlff.neighbors.api import pairs_torch

    if len(atoms_list) == 0:
        raise MLFFError("need at least one structure")
    positions = torch.as_tensor(np.concatenate([a.positions for a in atoms_list]), dtype=dtype, device=device)
    numbers = torch.as_tensor(np.concatenate([a.numbers for a in atoms_list]), dtype=torch.int64, device=device)
    cells = np.stack([np.asarray(a.cell.array, dtype=np.float64) for a in atoms_list])
    pbc = np.stack([np.asarray(a.pbc, dtype=bool) for a in atoms_list])
    counts = torch.as_tensor([len(a) for a in atoms_list], device=device)
    system_idx = torch.repeat_interleave(torch.arange(len(atoms_list), device=device), counts)
    if neighbors is not None:
        i, j, shifts = neighbors.update(positions, cells, pbc, system_idx)
    else:
        i, j, shifts = pairs_torch(positions, cells, pbc, system_idx, cutoff)
    return Graph(positions=positions, numbers=numbers, cell=torch.as_tensor(cells, dtype=dtype, device=device),
                 pbc=torch.as_tensor(pbc, device=device), system_idx=system_idx, edge_index=torch.stack([i, j]),
                 unit_shifts=shifts.to(dtype))
