"""Any ASE calculator as the batched engine's force model (one structure per system, looped on the host).

    model = AseCalculatorModel(lambda atoms: EMT())                         # or mlff.data.sampling.xtb_calculator
    engine = BatchEngine(config, atoms, None, model=model, structures=windows)

Each system gets its own calculator (``factory(atoms)`` with that system's Atoms, info included: charge and
multiplicity for xTB), so calculators that keep a wavefunction between steps keep one per system. Energies
and forces are read back in float64 and returned in the state's dtype and device. A calculator's internal
state (SCF guesses) is not in the checkpoint: restarts continue, but bit for bit only for stateless ones.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from ase import Atoms

from mlff.errors import MLFFError

__all__ = ["AseCalculatorModel"]


class AseCalculatorModel:
    """``model(state) -> {"energy": [S], "forces": [N,3]}`` from ``factory(atoms)`` calculators, one per system."""

    committee_size = 1

    def __init__(self, factory: Callable[[Atoms], object], *, name: str = "ASE calculator"):
        self.factory, self.name = factory, name
        self._systems: list[tuple[Atoms, slice]] | None = None

    def _build(self, state) -> None:
        numbers, cells, pbc = state.numbers.cpu().numpy(), state.cell.cpu().numpy(), state.pbc.cpu().numpy()
        positions = state.positions.detach().cpu().numpy().astype(np.float64)
        systems = []
        for s, sl in enumerate(state.atoms_slices()):
            atoms = Atoms(numbers=numbers[sl], positions=positions[sl], cell=cells[s], pbc=pbc[s])
            info = state.info[s] if s < len(state.info) else {}
            atoms.info.update({k: v for k, v in info.items() if k in ("charge", "multiplicity", "xi_atoms")})
            atoms.calc = self.factory(atoms)
            systems.append((atoms, sl))
        self._systems = systems

    def __call__(self, state) -> dict:
        if self._systems is None:
            self._build(state)
        positions = state.positions.detach().cpu().numpy().astype(np.float64)
        energies, forces = [], np.zeros_like(positions)
        for s, (atoms, sl) in enumerate(self._systems):
            atoms.positions = positions[sl]
            try:
                energies.append(atoms.get_potential_energy())
                forces[sl] = atoms.get_forces()
            except MLFFError:
                raise
            except Exception as err:  # noqa: BLE001 - SCF failures and the like: name the system and step
                raise MLFFError(f"{self.name} failed on system {s} at step {state.step}: {type(err).__name__}: {err}") from err
        f = dict(dtype=state.dtype, device=state.device)
        return {"energy": torch.as_tensor(np.array(energies), **f), "forces": torch.as_tensor(forces, **f)}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, data: dict, state) -> None:
        pass
