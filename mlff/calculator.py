"""``MLFFCalculator``: the ASE calculator for mlff potentials (GPU neighbour lists kept between calls)."""

from __future__ import annotations

import copy

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from mlff.config import check_device
from mlff.errors import MLFFError
from mlff.geometry import MIN_DISTANCE_A, check_geometry
from mlff.models import Potential, batch_atoms, load_potential
from mlff.neighbors import VerletNeighborList

__all__ = ["MLFFCalculator", "torch_device"]


def torch_device(device: str) -> torch.device:
    """"auto" (CUDA when torch sees it, else the CPU), "cpu", "cuda", "cuda:1", ...; a clear error without CUDA."""
    if isinstance(device, torch.device):
        device = str(device)
    check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MLFFError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise MLFFError(f"device {device!r} asked for, but torch sees {torch.cuda.device_count()} CUDA GPU(s) "
                        f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return torch.device(device)


def _closest_pair_A(graph) -> float:
    """The shortest pair distance (Å) in the graph's neighbour list (inf without pairs)."""
    i, j = graph.edge_index
    if i.numel() == 0:
        return float("inf")
    vectors = graph.positions[j] - graph.positions[i] + graph.unit_shifts @ graph.cell[0]
    return float(vectors.detach().norm(dim=-1).min())


class MLFFCalculator(Calculator):
    """ASE calculator: energy, free_energy, forces, stress (3D-periodic cells) in eV, eV/Å, eV/Å³.

    potential: a ``Potential`` or the path (or shipped name) of a potential directory.
    device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    dtype: "float32" or "float64" (default: the potential's own).
    skin: Verlet skin in Å; the neighbour list is rebuilt only after an atom moved more than skin/2.
    cueq: evaluate through cuEquivariance kernels (CUDA only).
    Committees add ``energy_std`` (eV), ``forces_std`` [N] (eV/Å) and per-member ``energies``.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energy_std", "forces_std", "energies"]

    def __init__(self, potential: Potential | str, device: str = "auto", dtype: str | None = None,
                 skin: float = 0.5, cueq: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.device = torch_device(device)
        if isinstance(potential, Potential):
            wanted = potential.dtype if dtype is None else getattr(torch, dtype)
            if cueq or potential.device != self.device or potential.dtype != wanted:
                # torch converts modules in place: work on a copy, never change the caller's potential
                potential = copy.deepcopy(potential).to(device=self.device, dtype=wanted)
            self.potential = potential
        else:
            self.potential = load_potential(potential, device=self.device, dtype=dtype)
        if cueq:
            if self.device.type != "cuda":
                raise MLFFError("cueq=True needs a CUDA device")
            self.potential.enable_cueq()
        self.neighbors = VerletNeighborList(self.potential.cutoff, skin=skin)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        # refuse, rather than return NaN for a broken structure: the whole check on a new structure or cell; when
        # only positions moved (MD, optimisers) the closest pair comes from the neighbour list already built
        moved_only = not set(system_changes) - {"positions"}
        if not moved_only or not np.isfinite(self.atoms.positions).all():
            check_geometry(self.atoms, "MLFFCalculator")
        want_stress = "stress" in properties
        if want_stress and not self.atoms.pbc.all():
            raise PropertyNotImplementedError("stress needs a cell periodic in all three directions")
        graph = batch_atoms([self.atoms], self.potential.cutoff, device=self.device, dtype=self.potential.dtype,
                            neighbors=self.neighbors)
        out = self.potential.evaluate(graph, forces=True, stress=want_stress)
        energy = float(out["energy"][0])
        if moved_only and _closest_pair_A(graph) < MIN_DISTANCE_A:
            check_geometry(self.atoms, "MLFFCalculator")  # names the overlapping atoms
        if not np.isfinite(energy):
            raise MLFFError(f"MLFFCalculator: the potential returned energy {energy} for this structure")
        self.results = {"energy": energy, "free_energy": energy, "forces": out["forces"].cpu().numpy()}
        if "stress" in out:
            from ase.stress import full_3x3_to_voigt_6_stress

            self.results["stress"] = full_3x3_to_voigt_6_stress(out["stress"][0].cpu().numpy())
        if "energy_std" in out:
            self.results["energy_std"] = float(out["energy_std"][0])
            self.results["forces_std"] = out["forces_std"].cpu().numpy()
            self.results["energies"] = np.asarray(out["energy_members"][:, 0].cpu().numpy())
