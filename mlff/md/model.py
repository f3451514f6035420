"""Forces for the MD engine: ``model(state) -> {"energy": [S], "forces": [N,3], ...}``.

``PotentialModel`` evaluates a ``Potential`` (autograd forces in ``Potential.evaluate``) on a graph whose
pairs come from a ``VerletNeighborList`` kept across steps. On the GPU the list lives in CuPy-filled
buffers; each step reads back the rebuild flag and, through the boolean selection of the pairs within the
cutoff, their number: two host syncs per step, which is why this path cannot be captured in a CUDA graph.
``HarmonicModel`` is an exactly solvable stand-in with the same interface (tests, statistics).
"""

from __future__ import annotations

import numpy as np
import torch

from mlff.md.state import MDState
from mlff.models.graph import Graph
from mlff.neighbors import VerletNeighborList

__all__ = ["PotentialModel", "AllPairsModel", "HarmonicModel"]

MAX_ALL_PAIRS_ATOMS = 1000


def _evaluate(potential, graph: Graph, dtype: torch.dtype) -> dict:
    """Energies [S], forces [N,3] (and committee spreads) of ``graph`` in the state's dtype."""
    out = potential.evaluate(graph, forces=True)
    keys = ("energy", "forces", "energy_std", "forces_std")
    return {k: out[k].to(dtype) for k in keys if k in out}


class PotentialModel:
    """A Potential as the engine's force model. ``skin`` (Å): Verlet skin of the neighbour list."""

    def __init__(self, potential, *, skin: float = 0.5):
        self.potential = potential
        self.skin = float(skin)
        self.neighbors = VerletNeighborList(potential.cutoff, skin=skin)
        self._host_cell: tuple[torch.Tensor, np.ndarray, np.ndarray] | None = None

    @property
    def committee_size(self) -> int:
        return self.potential.committee_size

    def _cells(self, state: MDState):
        cached = self._host_cell
        if cached is None or cached[0] is not state.cell:  # the cell is constant in NVE/NVT: read it once
            self._host_cell = (state.cell, state.cell.detach().cpu().numpy().astype(np.float64),
                               state.pbc.cpu().numpy())
        return self._host_cell[1], self._host_cell[2]

    def __call__(self, state: MDState) -> dict:
        cells, pbc = self._cells(state)
        i, j, shifts = self.neighbors.update(state.positions, cells, pbc, state.system_idx)
        graph = Graph(positions=state.positions, numbers=state.numbers, cell=state.cell, pbc=state.pbc,
                      system_idx=state.system_idx, edge_index=torch.stack([i, j]), unit_shifts=shifts.to(state.dtype))
        return _evaluate(self.potential, graph, state.dtype)

    def state_dict(self) -> dict:
        """What a restart needs to rebuild the same neighbour list: the positions of the last build."""
        ref = self.neighbors._ref
        return {} if ref is None else {"reference_positions": ref.positions.cpu()}

    def load_state_dict(self, data: dict, state: MDState) -> None:
        """Rebuild the neighbour list from the saved reference positions (same pairs, same order)."""
        self.neighbors = VerletNeighborList(self.potential.cutoff, skin=self.skin)
        self._host_cell = None  # the restored cell may differ from the one read before
        if "reference_positions" in data:
            cells, pbc = self._cells(state)
            self.neighbors.update(data["reference_positions"].to(state.device, state.dtype), cells, pbc, state.system_idx)


class AllPairsModel:
    """A capture-friendly force model for molecular clusters (no periodic direction).

    Every ordered pair of atoms of a system is an edge, built once. MACE multiplies each edge's radial
    features by a cutoff envelope that is exactly zero beyond r_max, so the pairs beyond the cutoff add
    exact zeros: the energies and forces are those of the cutoff graph. Shapes never change and nothing is
    read back to the host, so a CUDA graph can capture the whole MD step. Edge count: sum of n(n-1).
    """

    def __init__(self, potential, state: MDState):
        from mlff.errors import MLFFError

        if bool(state.pbc.any()):
            raise MLFFError("neighbors: all_pairs is for molecular clusters; this structure has periodic directions "
                            "(use neighbors: verlet)")
        self.potential = potential
        pieces = []
        for sl in state.atoms_slices():
            n = sl.stop - sl.start
            if n > MAX_ALL_PAIRS_ATOMS:
                raise MLFFError(f"neighbors: all_pairs takes systems of at most {MAX_ALL_PAIRS_ATOMS} atoms, "
                                f"got {n} (use neighbors: verlet)")
            idx = torch.arange(sl.start, sl.stop, device=state.device)
            i, j = idx.repeat_interleave(n), idx.repeat(n)
            pieces.append(torch.stack([i, j])[:, i != j])
        self.edge_index = torch.cat(pieces, dim=1)  # [2,E]
        self.unit_shifts = torch.zeros(self.edge_index.shape[1], 3, dtype=state.dtype, device=state.device)  # [E,3]

    @property
    def committee_size(self) -> int:
        return self.potential.committee_size

    def __call__(self, state: MDState) -> dict:
        graph = Graph(positions=state.positions, numbers=state.numbers, cell=state.cell, pbc=state.pbc,
                      system_idx=state.system_idx, edge_index=self.edge_index, unit_shifts=self.unit_shifts)
        return _evaluate(self.potential, graph, state.dtype)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, data: dict, state: MDState) -> None:
        pass


class HarmonicModel:
    """E = sum_i k_i/2 |r_i - r0_i|², per system. spring_eV_per_A2 [N] or a float, reference [N,3] Å."""

    committee_size = 1

    def __init__(self, reference: torch.Tensor, spring_eV_per_A2):
        self.reference = reference  # [N,3] Å
        self.spring = torch.as_tensor(spring_eV_per_A2, dtype=reference.dtype, device=reference.device)  # [N] or []

    def __call__(self, state: MDState) -> dict:
        d = state.positions - self.reference
        per_atom = 0.5 * self.spring * (d * d).sum(-1)
        energy = torch.zeros(state.n_systems, dtype=state.dtype, device=state.device).index_add_(0, state.system_idx, per_atom)
        spring = self.spring.unsqueeze(-1) if self.spring.ndim else self.spring
        return {"energy": energy, "forces": -spring * d}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, data: dict, state: MDState) -> None:
        pass
