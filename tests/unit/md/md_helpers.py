"""Small structures and models shared by the MD tests."""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms

from mlff.md import HarmonicModel, state_from_atoms


def acid_water_file(directory, *, reaction: bool = True) -> str:
    """Formic acid + water (8 atoms), rattled, as DIRECTORY/start.xyz; with ``reaction`` a reaction coordinate
    (info xi_atoms) and one fixed atom."""
    from ase.build import molecule
    from ase.io import write

    acid, water = molecule("HCOOH"), molecule("H2O")
    water.translate((0.3, 2.9, 0.2))
    atoms = acid + water
    atoms.rattle(0.05, seed=3)
    if reaction:
        atoms.info["xi_atoms"] = [1, 3, 0]
        atoms.info["fixed"] = [5]
    path = f"{directory}/start.xyz"
    write(path, atoms)
    return path


def harmonic_systems(n_systems: int, n_atoms: int, seed: int = 0, temperature_K=300.0, chain_length: int = 0):
    """Independent 3D oscillators with random masses (1-16 amu) and springs (0.5-2 eV/Å²), at rest."""
    rng = np.random.default_rng(seed)
    systems = []
    for _ in range(n_systems):
        atoms = Atoms("H" * n_atoms, positions=rng.normal(size=(n_atoms, 3)) * 3.0)
        atoms.set_masses(rng.uniform(1.0, 16.0, n_atoms))
        systems.append(atoms)
    state = state_from_atoms(systems, temperature_K=temperature_K, seed=seed, chain_length=chain_length)
    springs = torch.as_tensor(rng.uniform(0.5, 2.0, len(state.positions)), dtype=state.dtype)
    return state, HarmonicModel(state.positions.clone(), springs)


class NaNAfter:
    """Wraps a model: returns NaN energies and forces from the ``after``-th call on."""

    def __init__(self, model, after: int):
        self.model, self.after, self.calls = model, after, 0

    def __call__(self, state):
        out = self.model(state)
        self.calls += 1
        if self.calls > self.after:
            out = {k: v * float("nan") for k, v in out.items()}
        return out

    def state_dict(self):
        return {}

    def load_state_dict(self, data, state):
        pass


class FakeCommittee:
    """Wraps a model and reports a committee spread that grows linearly with the number of calls."""

    committee_size = 2

    def __init__(self, model, growth_eV_per_call: float):
        self.model, self.growth, self.calls = model, growth_eV_per_call, 0

    def __call__(self, state):
        out = dict(self.model(state))
        self.calls += 1
        out["energy_std"] = torch.full_like(out["energy"], self.growth * self.calls)
        out["forces_std"] = torch.full_like(out["forces"][:, 0], self.growth * self.calls)
        return out

    def state_dict(self):
        return {}

    def load_state_dict(self, data, state):
        pass


def one_thread():
    """Fixture body: run a test on one torch thread (tiny models are faster so on a shared 2-core machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
