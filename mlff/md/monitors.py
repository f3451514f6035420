"""Monitors: watch a run for NaN, huge forces, committee spread and runaway temperature.

``update(state)`` after every step keeps running maxima as device tensors (no host sync); ``check()``
reads them back once (every ``monitor_every`` steps) and returns the reason to stop, or None.
``EnergyDrift`` measures the NVE drift of the total energy per atom per ps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mlff.md.state import MDState

__all__ = ["Monitors", "Thresholds", "EnergyDrift"]


@dataclass
class Thresholds:
    max_force_eV_per_A: float | None = None
    max_force_std_eV_per_A: float | None = None
    max_energy_std_eV: float | None = None
    max_temperature_K: float | None = None


class Monitors:
    """Running maxima since the last check: |F| (eV/Å), force and energy spread, temperature (K), NaN."""

    NAMES = ("nonfinite", "max_force_eV_per_A", "max_force_std_eV_per_A", "max_energy_std_eV", "max_temperature_K")

    def __init__(self, thresholds: Thresholds):
        self.thresholds = thresholds
        self._peak: torch.Tensor | None = None  # [5] running maxima, on the state's device
        self._first_step: int | None = None
        self.last: dict[str, float] = {}

    def update(self, state: MDState) -> None:
        zero = state.energy.new_zeros(())
        values = torch.stack([
            (~torch.isfinite(state.positions).all() | ~torch.isfinite(state.forces).all()
             | ~torch.isfinite(state.energy).all()).to(state.dtype),
            state.forces.norm(dim=-1).amax() if len(state.forces) else zero,
            state.forces_std.amax() if state.forces_std is not None else zero,
            state.energy_std.amax() if state.energy_std is not None else zero,
            state.temperature().amax(),
        ]).nan_to_num(nan=float("inf"))
        self._peak = values if self._peak is None else torch.maximum(self._peak, values)
        if self._first_step is None:
            self._first_step = state.step

    def check(self, step: int) -> str | None:
        """The reason to stop (one line), or None; resets the running maxima."""
        if self._peak is None:
            return None
        peak = dict(zip(self.NAMES, self._peak.tolist()))
        since = self._first_step
        self._peak, self._first_step, self.last = None, None, peak
        where = f"between steps {since} and {step}"
        if peak["nonfinite"] > 0:
            return f"NaN or inf in positions, forces or energies {where}"
        t = self.thresholds
        for name, limit, label, unit in (
                ("max_force_eV_per_A", t.max_force_eV_per_A, "force", "eV/Å"),
                ("max_force_std_eV_per_A", t.max_force_std_eV_per_A, "committee force spread", "eV/Å"),
                ("max_energy_std_eV", t.max_energy_std_eV, "committee energy spread", "eV"),
                ("max_temperature_K", t.max_temperature_K, "temperature", "K")):
            if limit is not None and peak[name] > limit:
                return (f"{label} reached {peak[name]:.4g} {unit} {where}, above {name}={limit:g}: "
                        "the trajectory has left the potential's domain")
        return None


class EnergyDrift:
    """Total-energy drift per system in eV per atom per ps, from a least-squares line through E_tot(t)."""

    def __init__(self):
        self.times_fs: list[float] = []
        self.energies: list[torch.Tensor] = []  # each [S] eV

    def add(self, time_fs: float, total_energy: torch.Tensor) -> None:
        self.times_fs.append(time_fs)
        self.energies.append(total_energy.detach().to(torch.float64))

    def per_atom_per_ps(self, atoms_per_system: torch.Tensor) -> list[float] | None:
        if len(self.times_fs) < 2:
            return None
        t = torch.tensor(self.times_fs, dtype=torch.float64) * 1e-3  # ps
        e = torch.stack(self.energies).cpu()  # [T,S]
        tc = t - t.mean()
        slope = (tc[:, None] * (e - e.mean(0))).sum(0) / (tc * tc).sum()  # [S] eV/ps
        return (slope / atoms_per_system.cpu().to(torch.float64)).tolist()
