"""Errors of a potential on the precomputed data: per split, per region of the reaction coordinate, and
along a held-out scan. Energies in meV/atom, forces in meV/Å, scan errors in kcal/mol."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Predictions", "predict", "error_summary", "scan_errors", "KCAL_PER_MOL_EV"]

KCAL_PER_MOL_EV = 23.060547830619  # kcal/mol per eV


@dataclass
class Predictions:
    """Model and reference labels of records ``index`` (in that order)."""
    index: np.ndarray  # [R] record indices
    n_atoms: np.ndarray  # [R]
    energy: np.ndarray  # [R] eV, model
    energy_ref: np.ndarray  # [R] eV
    forces: np.ndarray  # [A,3] eV/Å, model (atoms of the records in order)
    forces_ref: np.ndarray  # [A,3] eV/Å
    energy_std: np.ndarray | None = None  # [R] eV, committee spread

    def subset(self, mask: np.ndarray) -> "Predictions":
        atom_mask = np.repeat(mask, self.n_atoms)
        return Predictions(self.index[mask], self.n_atoms[mask], self.energy[mask], self.energy_ref[mask],
                           self.forces[atom_mask], self.forces_ref[atom_mask],
                           None if self.energy_std is None else self.energy_std[mask])


def predict(potential, graphs, index, batch_size: int = 32) -> Predictions:
    """Energies and forces of records ``index`` (a GraphSet's), evaluated in batches without a graph."""
    index = np.asarray(index, dtype=np.int64)
    e, e_ref, f, f_ref, std = [], [], [], [], []
    for start in range(0, len(index), batch_size):
        graph, labels = graphs.batch(index[start:start + batch_size])
        out = potential.evaluate(graph, forces=True)
        e.append(out["energy"].double().cpu())
        f.append(out["forces"].double().cpu())
        e_ref.append(labels["energy"].double().cpu())
        f_ref.append(labels["forces"].double().cpu())
        if "energy_std" in out:
            std.append(out["energy_std"].double().cpu())
    cat = (lambda xs, shape: torch.cat(xs).numpy() if xs else np.zeros(shape))
    return Predictions(index, graphs.n_atoms.cpu().numpy()[index], cat(e, (0,)), cat(e_ref, (0,)), cat(f, (0, 3)),
                       cat(f_ref, (0, 3)), cat(std, (0,)) if std else None)


def error_summary(p: Predictions) -> dict:
    """RMSE/MAE of energy per atom (meV/atom) and force components (meV/Å)."""
    if len(p.index) == 0:
        return {"n_records": 0}
    de = (p.energy - p.energy_ref) / p.n_atoms * 1000.0
    df = (p.forces - p.forces_ref) * 1000.0
    out = {"n_records": int(len(p.index)), "n_atoms": int(p.n_atoms.sum()),
           "energy_rmse_meV_atom": float(np.sqrt(np.mean(de**2))), "energy_mae_meV_atom": float(np.mean(np.abs(de))),
           "forces_rmse_meV_A": float(np.sqrt(np.mean(df**2))), "forces_mae_meV_A": float(np.mean(np.abs(df)))}
    if p.energy_std is not None:  # committee spread: compare with the errors to judge how far to trust it
        out["energy_std_mean_meV_atom"] = float(np.mean(p.energy_std / p.n_atoms) * 1000.0)
    return out


def scan_errors(p: Predictions, xi: np.ndarray, groups: list) -> dict:
    """Energies along held-out scans (sorted by ``xi``, one curve per group), compared with DFT.

    Two alignments of the model curve to the DFT curve are reported: ``mean`` subtracts the mean
    difference (the constant offset that best fits the shape) and ``min`` aligns the two minima.
    """
    out = {}
    for name in sorted(set(groups), key=str):
        mask = np.array([g == name for g in groups])
        order = np.argsort(xi[mask])
        e_model, e_ref = p.energy[mask][order], p.energy_ref[mask][order]
        diff = (e_model - e_ref) * KCAL_PER_MOL_EV
        rel_min = ((e_model - e_model.min()) - (e_ref - e_ref.min())) * KCAL_PER_MOL_EV
        out[str(name)] = {
            "n_points": int(mask.sum()), "xi": xi[mask][order].tolist(),
            "energy_ref_kcal_mol": ((e_ref - e_ref.min()) * KCAL_PER_MOL_EV).tolist(),
            "energy_model_kcal_mol": ((e_model - e_model.min()) * KCAL_PER_MOL_EV).tolist(),
            "max_abs_error_kcal_mol_mean_aligned": float(np.max(np.abs(diff - diff.mean()))),
            "max_abs_error_kcal_mol_min_aligned": float(np.max(np.abs(rel_min))),
        }
    return out
