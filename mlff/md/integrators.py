"""Integrators as step functions ``step(state, model, *, dt_fs, ...) -> state`` on a batched MDState.

No I/O and no host synchronisation inside: every per-system quantity (temperatures, thermostat variables,
degrees of freedom) stays a device tensor. The state's tensors are updated in place (a CUDA graph can
replay the same step on the same buffers) and the state is returned. Fixed atoms have zero velocity and
zero force, so they never move; degrees of freedom count moving atoms only.

- ``nve_step``: velocity Verlet (the same update as ASE's VelocityVerlet).
- ``langevin_step``: BAOAB Langevin (Leimkuhler & Matthews), friction in 1/fs, noise from ``state.generator``.
- ``nhc_step``: Nose-Hoover chain per system (Martyna-Tuckerman-Klein, velocity-Verlet Trotter splitting).
"""

from __future__ import annotations

import math

import torch

from mlff.md.state import ACCEL, KB_EV_PER_K, MDState

__all__ = ["compute_forces", "nve_step", "langevin_step", "nhc_step", "nhc_init", "nhc_energy", "INTEGRATORS"]


def compute_forces(state: MDState, model) -> MDState:
    """Evaluate ``model`` at the current positions; forces on fixed atoms are zeroed."""
    out = model(state)
    state.forces.copy_(out["forces"] * state.free_mask())
    state.energy.copy_(out["energy"])
    if "energy_std" in out:
        state.energy_std, state.forces_std = out["energy_std"], out["forces_std"]
    return state


def _kick(state: MDState, dt_fs: float) -> None:
    state.velocities.add_(state.forces / state.masses.unsqueeze(-1), alpha=dt_fs * ACCEL)


def _drift(state: MDState, dt_fs: float) -> None:
    state.positions.add_(state.velocities, alpha=dt_fs)


def nve_step(state: MDState, model, *, dt_fs: float) -> MDState:
    """One velocity-Verlet step of dt_fs (fs): kick, drift, forces, kick."""
    _kick(state, 0.5 * dt_fs)
    _drift(state, dt_fs)
    compute_forces(state, model)
    _kick(state, 0.5 * dt_fs)
    state.step += 1
    return state


def langevin_step(state: MDState, model, *, dt_fs: float, friction_per_fs: float) -> MDState:
    """One BAOAB Langevin step at each system's ``state.temperature_K``; friction_per_fs (1/fs)."""
    _kick(state, 0.5 * dt_fs)
    _drift(state, 0.5 * dt_fs)
    c1 = math.exp(-friction_per_fs * dt_fs)
    kT = KB_EV_PER_K * state.temperature_K[state.system_idx]  # [N] eV
    sigma = torch.sqrt((1.0 - c1 * c1) * ACCEL * kT / state.masses).unsqueeze(-1)  # [N,1] Å/fs
    noise = torch.randn(state.velocities.shape, generator=state.generator, dtype=state.dtype, device=state.device)
    state.velocities.mul_(c1).addcmul_(sigma * state.free_mask(), noise)
    _drift(state, 0.5 * dt_fs)
    compute_forces(state, model)
    _kick(state, 0.5 * dt_fs)
    state.step += 1
    return state


def nhc_init(state: MDState, *, tau_fs: float, chain_length: int = 3) -> MDState:
    """Chain variables at rest and masses Q_1 = dof kT tau², Q_k = kT tau² (eV fs²) for each system."""
    if chain_length < 1:
        raise ValueError("a Nose-Hoover chain needs at least one thermostat")
    kT = KB_EV_PER_K * state.temperature_K  # [S]
    masses = (kT * tau_fs ** 2).unsqueeze(-1).repeat(1, chain_length)  # [S,L]
    masses[:, 0] *= state.degrees_of_freedom().clamp(min=1.0)
    state.chain_masses = masses
    state.chain_positions = torch.zeros_like(masses)
    state.chain_velocities = torch.zeros_like(masses)
    return state


def _chain_force(state: MDState, k: int, twice_kinetic: torch.Tensor, dof_kT: torch.Tensor, kT: torch.Tensor):
    v, q = state.chain_velocities, state.chain_masses
    if k == 0:
        return (twice_kinetic - dof_kT) / q[:, 0]
    return (q[:, k - 1] * v[:, k - 1] ** 2 - kT) / q[:, k]


def _chain_update(state: MDState, k: int, delta: float, twice_kinetic, dof_kT, kT) -> None:
    v = state.chain_velocities
    if k == v.shape[1] - 1:
        v[:, k] += 0.5 * delta * _chain_force(state, k, twice_kinetic, dof_kT, kT)
        return
    s = torch.exp(-0.25 * delta * v[:, k + 1])
    v[:, k] = (v[:, k] * s + 0.5 * delta * _chain_force(state, k, twice_kinetic, dof_kT, kT)) * s


def _chain_half(state: MDState, delta: float) -> None:
    """Propagate the chain and scale the velocities over delta (fs): exp(iL_NHC delta)."""
    length = state.chain_velocities.shape[1]
    kT = KB_EV_PER_K * state.temperature_K  # [S]
    dof_kT = state.degrees_of_freedom() * kT
    twice_kinetic = 2.0 * state.kinetic_energy()
    for k in reversed(range(length)):
        _chain_update(state, k, delta, twice_kinetic, dof_kT, kT)
    scale = torch.exp(-delta * state.chain_velocities[:, 0])  # [S]
    state.velocities.mul_(scale[state.system_idx].unsqueeze(-1))
    twice_kinetic = twice_kinetic * scale ** 2
    state.chain_positions.add_(state.chain_velocities, alpha=delta)
    for k in range(length):
        _chain_update(state, k, delta, twice_kinetic, dof_kT, kT)


def nhc_step(state: MDState, model, *, dt_fs: float) -> MDState:
    """One Nose-Hoover chain step (call ``nhc_init`` once first): chain half, velocity Verlet, chain half."""
    _chain_half(state, 0.5 * dt_fs)
    _kick(state, 0.5 * dt_fs)
    _drift(state, dt_fs)
    compute_forces(state, model)
    _kick(state, 0.5 * dt_fs)
    _chain_half(state, 0.5 * dt_fs)
    state.step += 1
    return state


def nhc_energy(state: MDState) -> torch.Tensor:
    """[S] eV the chain's energy; E_pot + E_kin + this is conserved by ``nhc_step``."""
    kT = KB_EV_PER_K * state.temperature_K
    kinetic = 0.5 * (state.chain_masses * state.chain_velocities ** 2).sum(-1)
    eta = state.chain_positions
    return kinetic + state.degrees_of_freedom() * kT * eta[:, 0] + kT * eta[:, 1:].sum(-1)


INTEGRATORS = {"nve": nve_step, "langevin": langevin_step, "nhc": nhc_step}
