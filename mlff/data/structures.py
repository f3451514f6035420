"""Ready-made structures for tests, benchmarks and demos."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from scipy.spatial.transform import Rotation

__all__ = ["water_box"]

AMU_PER_G = 6.02214076e23  # amu in one gram
WATER_AMU = 18.015


def water_box(n_molecules: int, density_g_cm3: float = 1.0, seed: int = 0) -> Atoms:
    """A cubic periodic box of rigid, randomly oriented waters on a jittered lattice (O-H 0.9572 Å, 104.52°).

    The edge follows from the density; molecules sit on the nearest cubic lattice with room for all of them,
    so no two molecules overlap (O-O at least about 2.4 Å at 1 g/cm³). Atoms ordered O, H, H per molecule.
    """
    if n_molecules < 1 or density_g_cm3 <= 0:
        raise ValueError("need at least one molecule and a positive density")
    rng = np.random.default_rng(seed)
    volume = n_molecules * WATER_AMU / (density_g_cm3 * AMU_PER_G) * 1e24  # Å³
    edge = volume ** (1 / 3)
    per_side = int(np.ceil(n_molecules ** (1 / 3)))
    spacing = edge / per_side
    sites = np.stack(np.meshgrid(*[np.arange(per_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    sites = sites[rng.permutation(len(sites))[:n_molecules]]
    centres = (sites + 0.5) * spacing + rng.uniform(-0.08, 0.08, (n_molecules, 3)) * spacing
    half = np.deg2rad(104.52) / 2
    local = 0.9572 * np.array([[0, 0, 0], [np.sin(half), np.cos(half), 0], [-np.sin(half), np.cos(half), 0]])
    rotations = Rotation.random(n_molecules, random_state=seed)
    positions = np.concatenate([r.apply(local) + c for r, c in zip(rotations, centres)])
    return Atoms("OH2" * n_molecules, positions=positions, cell=[edge] * 3, pbc=True)
