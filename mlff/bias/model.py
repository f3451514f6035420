"""Biases that wrap any force model, for both engines.

``Biases``: one CV and its bias terms (restraints, walls, metaD) plus an optional replica exchange. The bias
forces come from autograd in exactly one place, ``Biases.evaluate``: F_bias = -d(sum_terms E(s(x)))/dx.
Atoms the CV does not name (spectators) and systems other than an atom's own get exactly zero bias force.

``BiasedModel(model, biases)``: the batched engine's force model. It returns what the integrator uses,
``energy`` [S] and ``forces`` [N,3] = physical + bias, and the parts separately: ``physical_energy`` [S],
``physical_forces`` [N,3], ``bias_energy`` [S], ``bias_forces`` [N,3], ``cv`` [S].

``BiasCalculator(biases, calculator=None)``: the same bias as an ASE calculator (one system), optionally on top
of a physical calculator (the ASE engine); ``results`` hold the totals and ``bias_energy`` / ``bias_forces``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from mlff.bias.cv import CV
from mlff.bias.restraint import BiasTerm, HarmonicRestraint

__all__ = ["BiasCalculator", "BiasedModel", "Biases"]


class Biases:
    """A CV, the bias terms acting on it, and an optional ``ReplicaExchange`` of a restraint's labels."""

    def __init__(self, cv: CV, terms: Sequence[BiasTerm], exchange=None):
        self.cv, self.terms, self.exchange = cv, list(terms), exchange
        self.device, self.dtype = torch.device("cpu"), torch.float64
        self.beads, self._shape = 1, None

    def bind(self, counts: Sequence[int], device="cpu", dtype=torch.float64, *, beads: int = 1) -> "Biases":
        """Resolve the CV's atoms for systems of ``counts`` atoms and move the terms to ``device``/``dtype``.

        ``beads`` > 1: path integrals. ``counts`` are the physical systems'; the positions given later hold
        ``beads`` consecutive copies of each (``mlff.md.pimd``'s layout), and the bias acts on each system's
        centroid: in the ring polymer's Hamiltonian it enters as P U(centroid), so every bead feels the full
        force -dU/ds ds/dx of the centroid and carries U in its energy (the beads' energies sum to P U)."""
        self.device, self.dtype = torch.device(device), dtype
        self.beads = int(beads)
        if self.beads > 1:
            if len(set(counts)) != 1:
                raise ValueError("path-integral biases need systems of equal size")
            self._shape = (len(counts), self.beads, int(counts[0]))
        self.cv.bind(counts, self.device)
        for term in self.terms:
            term.to(self.device, dtype)
        if self.exchange is not None:
            self.exchange.to(self.device)
        return self

    @property
    def restraint(self) -> HarmonicRestraint | None:
        return next((t for t in self.terms if isinstance(t, HarmonicRestraint)), None)

    def energy(self, s: torch.Tensor) -> torch.Tensor:
        """[S] eV the summed bias of CV values s [S]."""
        total = torch.zeros_like(s)
        for term in self.terms:
            total = total + term.energy(s)
        return total

    def _centroids(self, positions: torch.Tensor) -> torch.Tensor:
        """The positions the CV sees: the systems' own, or with beads their centroids [S * N, 3]."""
        if self.beads == 1:
            return positions
        S, P, n = self._shape
        return positions.view(S, P, n, 3).mean(1).reshape(S * n, 3)

    def evaluate(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Bias energy [S] eV, bias forces [N,3] eV/Å (autograd through the CV) and CV values [S]; with beads,
        energy per bead [S * P] and CV values per physical system [S]."""
        with torch.enable_grad():
            x = positions.detach().requires_grad_(True)
            s = self.cv(self._centroids(x))
            energy = self.energy(s)
            (grad,) = torch.autograd.grad(energy.sum() * self.beads, x)  # d(P U(centroid))/dx_j = dU/dcentroid
        if self.beads > 1:
            energy = energy.repeat_interleave(self.beads)
        return energy.detach(), -grad, s.detach()

    @torch.no_grad()
    def observe(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CV values [S] and bias energy [S] without gradients (per physical system)."""
        s = self.cv(self._centroids(positions))
        return s, self.energy(s)

    def after_step(self, step: int, positions: torch.Tensor, time_fs: float) -> bool:
        """Deposit hills / attempt exchanges due at ``step``; True when the bias changed (forces need a refresh)."""
        due = [t for t in self.terms if t.due(step)]
        if not due and (self.exchange is None or step % self.exchange.every):
            return False
        with torch.no_grad():
            s = self.cv(self._centroids(positions))
        changed = False
        for term in due:
            changed |= term.after_step(step, s, time_fs)
        if self.exchange is not None:
            changed |= self.exchange.after_step(step, s)
        return changed

    def state_dict(self) -> dict:
        data = {f"term_{k}": term.state_dict() for k, term in enumerate(self.terms)}
        if self.exchange is not None:
            data["exchange"] = self.exchange.state_dict()
        return data

    def load_state_dict(self, data: dict) -> None:
        for k, term in enumerate(self.terms):
            term.load_state_dict(data.get(f"term_{k}", {}))
        if self.exchange is not None:
            self.exchange.load_state_dict(data["exchange"])

    def spec(self) -> dict:
        return {"cv": self.cv.spec(), "terms": [t.spec() for t in self.terms],
                "exchange": None if self.exchange is None else self.exchange.spec()}


class BiasedModel:
    """``model(state)`` plus ``biases``: totals under ``energy`` / ``forces``, the parts under their own keys."""

    def __init__(self, model, biases: Biases):
        self.model, self.biases = model, biases
        self._physical: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def committee_size(self) -> int:
        return getattr(self.model, "committee_size", 1)

    def __call__(self, state) -> dict:
        out = self.model(state)
        energy, forces = out["energy"], out["forces"]
        bias_energy, bias_forces, s = self.biases.evaluate(state.positions)
        self._physical = (energy, forces)
        return {**out, "energy": energy + bias_energy, "forces": forces + bias_forces, "physical_energy": energy,
                "physical_forces": forces, "bias_energy": bias_energy, "bias_forces": bias_forces, "cv": s}

    def refresh(self, state) -> None:
        """After the bias changed between steps (new hill, swapped labels): state's forces and energy from the
        last physical evaluation (same positions) plus the new bias; fixed atoms keep zero force."""
        if self._physical is None:
            raise RuntimeError("BiasedModel.refresh before any evaluation")
        energy, forces = self._physical
        bias_energy, bias_forces, _ = self.biases.evaluate(state.positions)
        state.forces.copy_((forces + bias_forces) * state.free_mask())
        state.energy.copy_(energy + bias_energy)

    def state_dict(self) -> dict:
        """The wrapped model's state plus the last physical energy and forces (a bias update right after a restart
        refreshes the forces from them, exactly as the uninterrupted run does)."""
        data = dict(self.model.state_dict())
        if self._physical is not None:
            data["biased_physical_energy"] = self._physical[0].detach().cpu().clone()
            data["biased_physical_forces"] = self._physical[1].detach().cpu().clone()
        return data

    def load_state_dict(self, data: dict, state) -> None:
        data = dict(data)
        energy, forces = data.pop("biased_physical_energy", None), data.pop("biased_physical_forces", None)
        self.model.load_state_dict(data, state)
        if energy is not None:
            self._physical = (energy.to(state.device, state.dtype), forces.to(state.device, state.dtype))


class _NoNeighbors:
    """What the ASE engine checkpoints of a calculator without an mlff neighbour list (EMT, xTB): nothing."""

    _ref = None


_NO_NEIGHBORS = _NoNeighbors()


class BiasCalculator(Calculator):
    """ASE calculator of ``biases`` on one structure (float64), added to ``calculator`` when one is given.
    ``biases`` must be bound to one system of len(atoms) atoms (``Biases.bind([n])``)."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, biases: Biases, calculator: Calculator | None = None, **kwargs):
        super().__init__(**kwargs)
        self.biases, self.calculator = biases, calculator

    # what the ASE engine reads off its calculator (device, neighbour list, potential) is the physical one's
    @property
    def device(self) -> torch.device:
        return getattr(self.calculator, "device", torch.device("cpu"))

    @property
    def neighbors(self):
        return getattr(self.calculator, "neighbors", _NO_NEIGHBORS)  # other calculators: nothing to checkpoint

    @property
    def potential(self):
        return self.calculator.potential

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        positions = torch.as_tensor(self.atoms.positions, dtype=self.biases.dtype, device=self.biases.device)
        bias_energy, bias_forces, s = self.biases.evaluate(positions)
        bias_e = float(bias_energy[0])
        bias_f = bias_forces.detach().cpu().numpy().astype(np.float64)
        energy, forces = bias_e, bias_f
        self.results = {"bias_energy": bias_e, "bias_forces": bias_f, "cv": float(s[0])}
        if self.calculator is not None:
            physical_e = self.calculator.get_potential_energy(self.atoms)
            physical_f = self.calculator.get_forces(self.atoms)
            energy, forces = physical_e + bias_e, physical_f + bias_f
            self.results.update(physical_energy=physical_e, physical_forces=physical_f)
            for key in ("energy_std", "forces_std"):
                if key in self.calculator.results:
                    self.results[key] = self.calculator.results[key]
        self.results.update(energy=energy, free_energy=energy, forces=forces)
