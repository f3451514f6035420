"""Exactly solvable model potentials for the batched engine: one particle per system, ``model(state) ->
{"energy": [S], "forces": [N,3]}`` (analytic forces), and their energies as numpy functions for quadrature.

- ``DoubleWell``: U = barrier [(x/a)^2 - 1]^2 + tilt x/a + k_perp/2 (y^2 + z^2). Along x (the CV) the exact free
  energy is U_x(x) itself (y and z separate): ``DoubleWell.profile_eV(x)``.
- ``MuellerBrown``: the Mueller-Brown surface (Mueller & Brown 1979) scaled by ``scale_eV`` per MB unit, in the
  xy plane (Å), plus k_perp/2 z^2. The exact profile along a CV needs a quadrature over y of ``energy_eV(x, y)``.

    atoms = toy_particles([-1.0, 0.0, 1.0])       # three systems, one H atom each, at x = -1, 0, 1 Å
    engine = BatchEngine(config, atoms[0], None, model=DoubleWell(), structures=atoms)
"""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms

__all__ = ["DoubleWell", "MuellerBrown", "toy_particles"]

# Mueller-Brown parameters: A_k, a_k, b_k, c_k, x0_k, y0_k
_MB = np.array([[-200.0, -1.0, 0.0, -10.0, 1.0, 0.0],
                [-100.0, -1.0, 0.0, -10.0, 0.0, 0.5],
                [-170.0, -6.5, 11.0, -6.5, -0.5, 1.5],
                [15.0, 0.7, 0.6, 0.7, -1.0, 1.0]])


def toy_particles(x_A, *, y_A=0.0, mass_amu: float = 1.008) -> list[Atoms]:
    """One single-atom system per x value (y = ``y_A``, z = 0), no cell."""
    out = []
    for x in np.atleast_1d(x_A):
        atoms = Atoms("H", positions=[[float(x), float(y_A), 0.0]], masses=[mass_amu])
        out.append(atoms)
    return out


class _Toy:
    """Subclasses give ``_energy_forces(positions [N,3]) -> (per-atom energy [N], forces [N,3])`` analytically
    (cheap steps for long statistical tests; ``tests/unit/bias`` checks them against autograd)."""

    committee_size = 1

    def _energy_forces(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __call__(self, state) -> dict:
        per_atom, forces = self._energy_forces(state.positions)
        energy = torch.zeros(state.n_systems, dtype=state.dtype, device=state.device)
        return {"energy": energy.index_add(0, state.system_idx, per_atom), "forces": forces}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, data: dict, state) -> None:
        pass


class DoubleWell(_Toy):
    """Double well along x: minima near x = -a, +a, barrier ``barrier_eV`` at x = 0 (plus ``tilt_eV`` x/a)."""

    def __init__(self, barrier_eV: float = 0.13, a_A: float = 1.0, tilt_eV: float = 0.0, k_perp_eV_per_A2: float = 1.0):
        self.barrier_eV, self.a_A, self.tilt_eV, self.k_perp = float(barrier_eV), float(a_A), float(tilt_eV), float(k_perp_eV_per_A2)

    def _energy_forces(self, positions):
        u = positions[:, 0] / self.a_A
        perp = 0.5 * self.k_perp * (positions[:, 1] ** 2 + positions[:, 2] ** 2)
        energy = self.barrier_eV * (u * u - 1.0) ** 2 + self.tilt_eV * u + perp
        forces = -self.k_perp * positions
        forces[:, 0] = -(4.0 * self.barrier_eV * u * (u * u - 1.0) + self.tilt_eV) / self.a_A
        return energy, forces

    def profile_eV(self, x_A) -> np.ndarray:
        """The exact free energy along x (eV, up to a constant): U_x(x)."""
        u = np.asarray(x_A, dtype=np.float64) / self.a_A
        return self.barrier_eV * (u * u - 1.0) ** 2 + self.tilt_eV * u


class MuellerBrown(_Toy):
    """Mueller-Brown in the xy plane (Å), ``scale_eV`` per MB unit (default: the 106-unit barrier between the
    two deepest minima is ~5 kT at 300 K), harmonic in z."""

    def __init__(self, scale_eV: float = 0.0012, k_perp_eV_per_A2: float = 1.0):
        self.scale_eV, self.k_perp = float(scale_eV), float(k_perp_eV_per_A2)

    def _energy_forces(self, positions):
        x, y = positions[:, 0], positions[:, 1]
        energy = 0.5 * self.k_perp * positions[:, 2] ** 2
        forces = torch.zeros_like(positions)
        forces[:, 2] = -self.k_perp * positions[:, 2]
        for a_k, a, b, c, x0, y0 in _MB:
            dx, dy = x - x0, y - y0
            term = self.scale_eV * a_k * torch.exp(a * dx * dx + b * dx * dy + c * dy * dy)
            energy = energy + term
            forces[:, 0] -= term * (2.0 * a * dx + b * dy)
            forces[:, 1] -= term * (b * dx + 2.0 * c * dy)
        return energy, forces

    def energy_eV(self, x_A, y_A) -> np.ndarray:
        """The xy energy (eV) on numpy arrays (broadcast), for quadratures of exact profiles."""
        x, y = np.asarray(x_A, dtype=np.float64), np.asarray(y_A, dtype=np.float64)
        total = np.zeros(np.broadcast(x, y).shape)
        for a_k, a, b, c, x0, y0 in _MB:
            dx, dy = x - x0, y - y0
            total = total + self.scale_eV * a_k * np.exp(a * dx * dx + b * dx * dy + c * dy * dy)
        return total
