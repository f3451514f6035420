"""Verlet neighbour lists: candidates within cutoff + skin, reused until an atom moved more than skin/2.

On the GPU the candidates live in fixed-capacity buffers filled by the CuPy cell list; the kernel counts
every pair even past the capacity, so an overflow is always seen, the capacity grown and the list rebuilt:
no pair is ever dropped. The rebuild test (largest displacement since the last build) runs on the device
and returns one flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from mlff.errors import MLFFError
from mlff.neighbors.api import pairs_torch

__all__ = ["VerletNeighborList"]


@dataclass
class _Reference:
    positions: torch.Tensor  # [N,3] at the last build
    cells: np.ndarray  # [S,3,3]
    pbc: np.ndarray  # [S,3]
    system_idx: torch.Tensor  # [N]


class VerletNeighborList:
    """Neighbour list with a skin for repeated calls on slowly moving atoms (MD, relaxations).

    ``update(positions, cells, pbc, system_idx)`` returns (i, j, S) within ``cutoff`` exactly, like
    ``neighbor_list``; ``n_builds`` counts the rebuilds and ``capacity`` the GPU buffer rows.
    """

    def __init__(self, cutoff: float, skin: float = 0.5, backend: str = "auto", growth: float = 1.5,
                 launch: Callable | None = None):
        if not cutoff > 0 or not skin >= 0:
            raise MLFFError(f"need cutoff > 0 and skin >= 0 (Å), got cutoff={cutoff}, skin={skin}")
        if not growth > 1:
            raise MLFFError(f"growth must be > 1, got {growth}")
        self.cutoff, self.skin, self.backend, self.growth = float(cutoff), float(skin), backend, float(growth)
        self._launch = launch  # the cell-list kernel launcher; default CuPy (tests pass a host launcher)
        self.capacity = 0
        self.n_builds = 0
        self.n_overflows = 0
        self._ref: _Reference | None = None
        self._candidates: tuple[torch.Tensor, ...] = ()

    def needs_rebuild(self, positions: torch.Tensor, cells: np.ndarray, pbc: np.ndarray, system_idx: torch.Tensor) -> bool:
        ref = self._ref
        if (ref is None or ref.positions.shape != positions.shape or ref.positions.device != positions.device
                or not np.array_equal(ref.cells, cells) or not np.array_equal(ref.pbc, pbc)):
            return True
        if ref.system_idx is not system_idx and not torch.equal(ref.system_idx, system_idx):
            return True
        moved2 = ((positions.detach() - ref.positions) ** 2).sum(-1).amax() if len(positions) else positions.new_zeros(())
        return bool(moved2 > (0.5 * self.skin) ** 2)

    def update(self, positions: torch.Tensor, cells, pbc, system_idx: torch.Tensor | None = None):
        """Pairs (i, j, S) within the cutoff; positions [N,3], cells [S,3,3], pbc [S,3], system_idx [N]."""
        cells = np.asarray(cells, dtype=np.float64).reshape(-1, 3, 3)
        pbc = np.asarray(pbc, dtype=bool).reshape(-1, 3)
        if system_idx is None:
            system_idx = torch.zeros(len(positions), dtype=torch.int64, device=positions.device)
        if self.needs_rebuild(positions, cells, pbc, system_idx):
            self._build(positions, cells, pbc, system_idx)
        i, j, shifts = self._candidates
        if self.skin == 0:
            return i, j, shifts
        cell = torch.as_tensor(cells, dtype=positions.dtype, device=positions.device)
        d = positions[j] - positions[i] + torch.einsum("pk,pkl->pl", shifts.to(positions.dtype), cell[system_idx[i]])
        keep = (d * d).sum(-1) < self.cutoff**2
        return i[keep], j[keep], shifts[keep]

    def _build(self, positions, cells, pbc, system_idx):
        reach = self.cutoff + self.skin
        use_gpu = self.backend == "cupy" or (self.backend == "auto" and positions.is_cuda)
        if use_gpu:
            self._candidates = self._build_gpu(positions, cells, pbc, system_idx, reach)
        else:
            self._candidates = pairs_torch(positions, cells, pbc, system_idx, reach, self.backend)
        self._ref = _Reference(positions.detach().clone(), cells.copy(), pbc.copy(), system_idx)
        self.n_builds += 1

    def _build_gpu(self, positions, cells, pbc, system_idx, reach):
        from mlff.neighbors.cell_list import cell_list_pairs
        from mlff.neighbors.cupy_backend import CupyLauncher

        launch = self._launch or CupyLauncher("pair_search")
        while True:
            pairs = cell_list_pairs(positions, cells, pbc, system_idx, reach, launch, capacity=self.capacity or None)
            n = int(pairs.n_pairs)
            if self.capacity == 0:
                self.capacity = int(n * self.growth) + 1
                return pairs.i, pairs.j, pairs.S
            if n <= self.capacity:
                return pairs.i[:n], pairs.j[:n], pairs.S[:n]
            self.n_overflows += 1
            self.capacity = int(n * self.growth) + 1
