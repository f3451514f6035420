"""Per-element reference energies (E0s) by least squares, and MACE's scale/shift statistics from data."""

from __future__ import annotations

import warnings

import numpy as np
from ase.data import chemical_symbols

from mlff.errors import MLFFError

__all__ = ["fit_e0s", "composition", "scale_shift", "average_neighbors", "isolated_atom_e0s"]


def composition(atoms_list, atomic_numbers) -> np.ndarray:
    """[R, n_species] counts of each species (in ``atomic_numbers`` order) in each record."""
    column = {int(z): k for k, z in enumerate(atomic_numbers)}
    counts = np.zeros((len(atoms_list), len(atomic_numbers)))
    for r, atoms in enumerate(atoms_list):
        for z, c in zip(*np.unique(atoms.numbers, return_counts=True)):
            if int(z) not in column:
                raise MLFFError(f"element {chemical_symbols[int(z)]} is not among the model's species")
            counts[r, column[int(z)]] = c
    return counts


def fit_e0s(atoms_list, energies_eV, atomic_numbers) -> dict[str, float]:
    """E0 per element (eV) minimising sum_r (E_r - sum_Z n_rZ E0_Z)^2 over the records.

    Elements absent from the data get 0; when compositions are linearly dependent (e.g. every record has
    the same formula, as in a cluster dataset) the minimum-norm solution is returned, as mace-torch does, with a
    warning: such E0s are not isolated-atom energies, so give them (``e0s: {H: ...}`` or a dataset of isolated
    atoms) when the potential must transfer to other compositions.
    """
    counts = composition(atoms_list, atomic_numbers)
    present = counts.sum(0) > 0
    solution = np.zeros(len(atomic_numbers))
    if present.any():
        solution[present], _, rank, _ = np.linalg.lstsq(counts[:, present], np.asarray(energies_eV, np.float64),
                                                        rcond=None)
        if rank < present.sum():
            warnings.warn(f"E0 fit underdetermined: the training compositions span {rank} of {present.sum()} "
                          "elements, so the fitted E0s are a minimum-norm solution, not atomic energies; give e0s "
                          "(values or an isolated-atoms dataset) for a potential that transfers", stacklevel=2)
    return {chemical_symbols[int(z)]: float(e) for z, e in zip(atomic_numbers, solution)}


def scale_shift(atoms_list, energies_eV, forces_eVA: np.ndarray, e0s: dict, atomic_numbers) -> tuple[float, float]:
    """mace-torch's "rms_forces_scaling": shift = mean interaction energy per atom, scale = force RMS (eV/Å)."""
    counts = composition(atoms_list, atomic_numbers)
    e0 = np.array([e0s[chemical_symbols[int(z)]] for z in atomic_numbers])
    per_atom = (np.asarray(energies_eV) - counts @ e0) / counts.sum(1)
    scale = float(np.sqrt(np.mean(np.square(forces_eVA))))
    return float(np.mean(per_atom)), scale if scale > 0 else 1.0


def average_neighbors(graphs, index=None) -> float:
    """Mean number of neighbours per atom within the cutoff (mace-torch's avg_num_neighbors), over records
    ``index`` of a GraphSet (all by default)."""
    n_edges, n_atoms = graphs.n_edges.cpu().numpy(), graphs.n_atoms.cpu().numpy()
    if index is not None:
        n_edges, n_atoms = n_edges[np.asarray(index)], n_atoms[np.asarray(index)]
    return float(n_edges.sum()) / max(float(n_atoms.sum()), 1.0)


def isolated_atom_e0s(path) -> dict[str, float]:
    """E0s (eV) from an mlff dataset of isolated atoms: one single-atom record per element."""
    from mlff.data import Dataset

    e0s = {}
    for k, atoms in enumerate(Dataset(path).read()):
        energy = (getattr(atoms.calc, "results", None) or {}).get("energy")
        if len(atoms) != 1 or energy is None:
            raise MLFFError(f"e0s: {path} record {k} is not a labelled isolated atom (1 atom with an energy)")
        e0s[atoms.get_chemical_symbols()[0]] = float(energy)
    return e0s
