"""The batched MD state: every atom of every system (replica) in one set of tensors.

Units: positions Å, velocities Å/fs, masses amu, energies eV, forces eV/Å, temperatures K, time fs.
The integrators update the tensors in place (so a captured CUDA graph can replay a step) and keep
every per-system quantity on the device; only ``step`` (a Python int) lives on the host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from ase import Atoms, units
from ase.constraints import FixAtoms

from mlff.errors import MLFFError

__all__ = ["MDState", "fixed_mask", "state_from_atoms", "state_to_atoms", "KB_EV_PER_K", "ACCEL", "KINETIC"]

KB_EV_PER_K = float(units.kB)
ACCEL = float(units.fs) ** 2  # (eV/Å)/amu -> Å/fs²
KINETIC = 1.0 / float(units.fs) ** 2  # amu (Å/fs)² -> eV


@dataclass
class MDState:
    positions: torch.Tensor  # [N,3] Å
    velocities: torch.Tensor  # [N,3] Å/fs (zero on fixed atoms)
    masses: torch.Tensor  # [N] amu
    numbers: torch.Tensor  # [N] int64 atomic numbers
    cell: torch.Tensor  # [S,3,3] Å, rows are cell vectors
    pbc: torch.Tensor  # [S,3] bool
    system_idx: torch.Tensor  # [N] int64 system (replica) of each atom
    fixed: torch.Tensor  # [N] bool, atoms that never move
    forces: torch.Tensor  # [N,3] eV/Å at the current positions (zero on fixed atoms)
    energy: torch.Tensor  # [S] eV potential energy at the current positions
    temperature_K: torch.Tensor  # [S] K target temperature of each system's thermostat
    chain_positions: torch.Tensor  # [S,L] Nose-Hoover chain positions (dimensionless), L=0 without a chain
    chain_velocities: torch.Tensor  # [S,L] 1/fs Nose-Hoover chain velocities
    chain_masses: torch.Tensor  # [S,L] eV fs² Nose-Hoover chain masses Q
    generator: torch.Generator  # random numbers of the stochastic integrators, on the state's device
    step: int = 0  # steps done
    energy_std: torch.Tensor | None = None  # [S] eV committee spread (committees only)
    forces_std: torch.Tensor | None = None  # [N] eV/Å committee spread per atom (committees only)
    xi_atoms: torch.Tensor | None = None  # [S,3] int64 global atom indices (c_formate, h, c4) for xi
    info: list = field(default_factory=list)  # per system: the source Atoms' info dict

    @property
    def n_systems(self) -> int:
        return self.cell.shape[0]

    @property
    def device(self) -> torch.device:
        return self.positions.device

    @property
    def dtype(self) -> torch.dtype:
        return self.positions.dtype

    def free_mask(self) -> torch.Tensor:
        """[N,1] 1.0 on moving atoms, 0.0 on fixed ones, in the positions' dtype."""
        return (~self.fixed).to(self.dtype).unsqueeze(-1)

    def degrees_of_freedom(self) -> torch.Tensor:
        """[S] 3 x (moving atoms) per system (ASE's count: no centre-of-mass correction)."""
        free = (~self.fixed).to(self.dtype)
        return 3.0 * torch.zeros(self.n_systems, dtype=self.dtype, device=self.device).index_add_(0, self.system_idx, free)

    def kinetic_energy(self) -> torch.Tensor:
        """[S] eV."""
        per_atom = 0.5 * KINETIC * self.masses * (self.velocities ** 2).sum(-1)
        return torch.zeros(self.n_systems, dtype=self.dtype, device=self.device).index_add_(0, self.system_idx, per_atom)

    def temperature(self) -> torch.Tensor:
        """[S] K instantaneous kinetic temperature, 2 K / (dof kB)."""
        return 2.0 * self.kinetic_energy() / (self.degrees_of_freedom().clamp(min=1.0) * KB_EV_PER_K)

    def xi(self) -> torch.Tensor | None:
        """[S] Å reaction coordinate d(C_formate-H) - d(H-C4) (molecular clusters; no minimum image)."""
        if self.xi_atoms is None:
            return None
        c, h, c4 = (self.positions[self.xi_atoms[:, k]] for k in range(3))
        return (c - h).norm(dim=-1) - (h - c4).norm(dim=-1)

    def atoms_slices(self) -> list[slice]:
        counts = torch.bincount(self.system_idx, minlength=self.n_systems).tolist()
        starts = np.cumsum([0] + counts)
        return [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]


def fixed_mask(atoms: Atoms) -> np.ndarray:
    """[N] bool: atoms held by FixAtoms or listed in ``atoms.info["fixed"]`` (indices or a boolean mask)."""
    fixed = np.zeros(len(atoms), dtype=bool)
    extra = atoms.info.get("fixed", [])
    extra = np.asarray(extra)
    if extra.dtype == bool and extra.shape == (len(atoms),):
        fixed |= extra
    elif extra.size:
        fixed[extra.astype(int)] = True
    for constraint in atoms.constraints:
        if isinstance(constraint, FixAtoms):
            fixed[constraint.index] = True
        else:
            raise MLFFError(f"constraint {type(constraint).__name__} is not supported by the MD engine; "
                            "only FixAtoms (or atoms.info['fixed'])")
    return fixed


def state_from_atoms(atoms_list: Sequence[Atoms], *, device="cpu", dtype=torch.float64, temperature_K=0.0,
                     seed: int = 0, chain_length: int = 0) -> MDState:
    """A batched state from ASE Atoms (velocities from their momenta, fixed atoms from FixAtoms and
    ``info['fixed']``, ``info['xi_atoms']`` for the reaction coordinate). Forces start at zero: the
    engine evaluates them before the first step."""
    if len(atoms_list) == 0:
        raise MLFFError("need at least one structure")
    device = torch.device(device)
    f = dict(dtype=dtype, device=device)
    fixed = np.concatenate([fixed_mask(a) for a in atoms_list])
    velocities = np.concatenate([a.get_velocities() for a in atoms_list]) * float(units.fs)  # Å/fs
    velocities[fixed] = 0.0
    counts = [len(a) for a in atoms_list]
    offsets = np.cumsum([0] + counts[:-1])
    xi_atoms = None
    if all("xi_atoms" in a.info for a in atoms_list):
        xi_atoms = torch.as_tensor(np.stack([np.asarray(a.info["xi_atoms"], dtype=np.int64) + o
                                             for a, o in zip(atoms_list, offsets)]), device=device)
    n_sys = len(atoms_list)
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    temperature = torch.as_tensor(temperature_K, **f).expand(n_sys).clone()
    return MDState(
        positions=torch.as_tensor(np.concatenate([a.positions for a in atoms_list]), **f),
        velocities=torch.as_tensor(velocities, **f),
        masses=torch.as_tensor(np.concatenate([a.get_masses() for a in atoms_list]), **f),
        numbers=torch.as_tensor(np.concatenate([a.numbers for a in atoms_list]), dtype=torch.int64, device=device),
        cell=torch.as_tensor(np.stack([a.cell.array for a in atoms_list]), **f),
        pbc=torch.as_tensor(np.stack([a.pbc for a in atoms_list]), device=device),
        system_idx=torch.repeat_interleave(torch.arange(n_sys, device=device), torch.as_tensor(counts, device=device)),
        fixed=torch.as_tensor(fixed, device=device),
        forces=torch.zeros(sum(counts), 3, **f), energy=torch.zeros(n_sys, **f), temperature_K=temperature,
        chain_positions=torch.zeros(n_sys, chain_length, **f), chain_velocities=torch.zeros(n_sys, chain_length, **f),
        chain_masses=torch.ones(n_sys, chain_length, **f), generator=generator,
        xi_atoms=xi_atoms, info=[dict(a.info) for a in atoms_list],
    )


def state_to_atoms(state: MDState) -> list[Atoms]:
    """One ASE Atoms per system with positions, velocities, cell, pbc, FixAtoms and a SinglePointCalculator
    holding the state's energy and forces."""
    from ase.calculators.singlepoint import SinglePointCalculator

    pos, vel, forces = (t.detach().cpu().numpy().astype(np.float64) for t in (state.positions, state.velocities, state.forces))
    numbers, fixed = state.numbers.cpu().numpy(), state.fixed.cpu().numpy()
    cells, pbc, energy = state.cell.cpu().numpy(), state.pbc.cpu().numpy(), state.energy.cpu().numpy()
    out = []
    for s, sl in enumerate(state.atoms_slices()):
        atoms = Atoms(numbers=numbers[sl], positions=pos[sl], cell=cells[s], pbc=pbc[s],
                      masses=state.masses[sl].cpu().numpy())
        atoms.set_velocities(vel[sl] / float(units.fs))
        if fixed[sl].any():
            atoms.set_constraint(FixAtoms(indices=np.flatnonzero(fixed[sl])))
        atoms.info.update(state.info[s] if s < len(state.info) else {})
        atoms.info["step"] = state.step
        atoms.calc = SinglePointCalculator(atoms, energy=float(energy[s]), forces=forces[sl])
        out.append(atoms)
    return out
