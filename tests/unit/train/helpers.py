"""Data and configs for the training tests: small molecules rattled and labelled with ASE's EMT, the tiny MACE."""

from __future__ import annotations

import numpy as np
import torch
from ase.build import molecule
from ase.calculators.emt import EMT

from mlff.data import make_record

MOLECULES = ["CH4", "H2O", "NH3", "CO", "CH3OH", "HCOOH"]
REGIONS = ["reactant", "ts", "product"]


def emt_records(n: int, seed: int = 0, rattle_A: float = 0.08) -> list:
    """``n`` rattled small molecules with EMT energies/forces, region tags and a reaction coordinate xi."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        atoms = molecule(MOLECULES[k % len(MOLECULES)])
        atoms.positions += rng.normal(0.0, rattle_A, atoms.positions.shape)
        atoms.calc = EMT()
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = None
        out.append(make_record(atoms, energy=e, forces=f, tags=[REGIONS[k % 3]], xi=float(k % 7) / 7,
                               source=f"emt test {seed}:{k}"))
    return out


def scan_records(n: int = 6) -> list:
    """A held-out 'scan': water with one O-H bond stretched, tagged holdout-scan, xi = bond length."""
    out = []
    for k in range(n):
        atoms = molecule("H2O")
        d = 0.95 + 0.05 * k
        vec = atoms.positions[1] - atoms.positions[0]
        atoms.positions[1] = atoms.positions[0] + vec / np.linalg.norm(vec) * d
        atoms.calc = EMT()
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = None
        out.append(make_record(atoms, energy=e, forces=f, tags=["holdout-scan"], xi=d, scan="OH-stretch"))
    return out



def config(model: dict, data_path, out, **overrides) -> dict:
    """A training config for the tiny model ``model`` (tests/conftest.py SMALL, E0s left to the fit)."""
    model = {k: v for k, v in model.items() if k != "E0s"}
    c = {"data": {"paths": [str(data_path)]}, "model": model, "out": str(out), "max_epochs": 2,
         "batch_size": 4, "progress": False, "plots": False, "optim": {"lr": 0.01}}
    c.update(overrides)
    return c


def weights(potential) -> dict:
    return {f"{k}.{n}": p.detach().clone() for k, m in enumerate(potential.members) for n, p in m.state_dict().items()}


def assert_equal_weights(a, b) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
