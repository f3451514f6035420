"""Path-integral MD in the batched state: the P beads of a ring polymer are P systems of one batch.

Layout: a state of ``S * P`` systems holds S physical systems (replicas, umbrella windows), each as P
consecutive systems (its beads ``s * P + j``) with the same atoms; one force call per step evaluates every
bead of every physical system. The ring polymer at temperature T is sampled at the bead temperature P T
(beta_P = beta / P) with springs of frequency omega_P = P k_B T / hbar between neighbouring beads:

    H_P = sum_j [ sum_i p_ij^2 / 2 m_i + V(q_j) ] + sum_j sum_i m_i omega_P^2 |q_ij - q_i,j+1|^2 / 2

The step (``pimd_step``) is BAOAB in the ring polymer's normal modes (Ceriotti, Parrinello, Markland &
Manolopoulos, J. Chem. Phys. 133, 124104 (2010); Korol, Bou-Rabee & Miller, J. Chem. Phys. 151, 124103
(2019) for the Cayley form): half kick by the physical forces, half step of the free ring polymer (exact
rotation of each normal mode, or its Cayley approximation, stable at any P), a full PILE-L Langevin step
(mode k > 0 damped at gamma_k = 2 lambda omega_k, the centroid at ``friction_per_fs``), half free step,
forces, half kick. With P = 1 it is the classical BAOAB ``langevin_step`` exactly.

Estimators per physical system (``ring_polymer_observables``): the centroid, the primitive and the
centroid-virial kinetic energies, the mean bead potential energy and the spring energy.

Units as the rest of ``mlff.md``: Å, Å/fs, amu, eV, fs, K; hbar from ASE's CODATA constants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from ase import units

from mlff.errors import MLFFError
from mlff.md.state import ACCEL, KB_EV_PER_K, KINETIC, MDState

__all__ = [
    "HBAR_EV_FS",
    "RingPolymer",
    "from_normal_modes",
    "harmonic_bead_variance",
    "normal_modes",
    "pimd_step",
    "ring_polymer",
    "ring_polymer_observables",
]

HBAR_EV_FS = float(units._hbar / units._e * 1e15)  # eV fs


def _transform(beads: int, dtype, device) -> torch.Tensor:
    """[P, P] orthogonal matrix C[j, k]: bead j of normal mode k (k = 0: the centroid mode, 1/sqrt(P))."""
    j = torch.arange(beads, dtype=torch.float64).unsqueeze(1)
    k = torch.arange(beads, dtype=torch.float64).unsqueeze(0)
    c = torch.empty(beads, beads, dtype=torch.float64)
    angle = 2.0 * math.pi * j * k / beads
    c[:] = math.sqrt(2.0 / beads) * torch.cos(angle)
    upper = k.squeeze(0) > beads / 2
    c[:, upper] = (math.sqrt(2.0 / beads) * torch.sin(angle))[:, upper]
    c[:, 0] = 1.0 / math.sqrt(beads)
    if beads % 2 == 0:
        c[:, beads // 2] = (-1.0) ** j.squeeze(1) / math.sqrt(beads)
    return c.to(dtype=dtype, device=device)


@dataclass(frozen=True)
class RingPolymer:
    """The ring polymer of ``beads`` beads for physical systems at ``temperature_K`` [S]."""

    beads: int
    transform: torch.Tensor  # [P, P] bead j of normal mode k
    omega_p: torch.Tensor  # [S] 1/fs  P k_B T / hbar
    omega: torch.Tensor  # [S, P] 1/fs  free ring-polymer normal-mode frequencies 2 omega_P sin(k pi / P)

    @property
    def n_physical(self) -> int:
        return self.omega.shape[0]


def ring_polymer(beads: int, temperature_K: torch.Tensor) -> RingPolymer:
    """Normal modes and frequencies of ``beads``-bead ring polymers at ``temperature_K`` [S] (K, > 0)."""
    if beads < 1:
        raise MLFFError(f"beads = {beads}: a ring polymer needs at least 1 bead")
    temperature_K = torch.as_tensor(temperature_K)
    if beads > 1 and bool((temperature_K <= 0).any()):
        raise MLFFError("path-integral MD needs a temperature > 0 K (the ring polymer's springs scale with T)")
    dtype, device = temperature_K.dtype, temperature_K.device
    omega_p = beads * KB_EV_PER_K * temperature_K / HBAR_EV_FS
    k = torch.arange(beads, dtype=dtype, device=device)
    omega = 2.0 * omega_p.unsqueeze(-1) * torch.sin(k * math.pi / beads)
    return RingPolymer(beads, _transform(beads, dtype, device), omega_p, omega)


def _beads_view(x: torch.Tensor, rp: RingPolymer) -> torch.Tensor:
    """[S * P * N, ...] -> [S, P, N, ...] (beads of a physical system consecutive, the same atoms)."""
    total = x.shape[0]
    per = rp.n_physical * rp.beads
    if total % per:
        raise MLFFError(f"{total} atoms do not split into {rp.n_physical} systems of {rp.beads} equal beads")
    return x.view(rp.n_physical, rp.beads, total // per, *x.shape[1:])


def _per_physical(x: torch.Tensor, rp: RingPolymer) -> torch.Tensor:
    """A per-system tensor [S * P] -> its value on each physical system's first bead [S]."""
    return x.view(rp.n_physical, rp.beads)[:, 0]


def normal_modes(x: torch.Tensor, rp: RingPolymer) -> torch.Tensor:
    """Bead coordinates [S*P*N, 3] -> normal-mode coordinates [S, P, N, 3] (mode 0: sqrt(P) x centroid)."""
    return torch.einsum("jk,sjna->skna", rp.transform, _beads_view(x, rp))


def from_normal_modes(modes: torch.Tensor, rp: RingPolymer) -> torch.Tensor:
    """Normal-mode coordinates [S, P, N, 3] -> bead coordinates [S*P*N, 3]."""
    return torch.einsum("jk,skna->sjna", rp.transform, modes).reshape(-1, modes.shape[-1])


def _free_step(state: MDState, rp: RingPolymer, dt_fs: float, cayley: bool) -> None:
    """Propagate the free ring polymer (springs only) by dt_fs in normal modes, exactly or by Cayley."""
    q, v = normal_modes(state.positions, rp), normal_modes(state.velocities, rp)
    w = rp.omega[:, :, None, None]  # [S, P, 1, 1]
    if cayley:
        a2 = (0.5 * dt_fs * w) ** 2
        d = 1.0 + a2
        q_new = (dt_fs * v + (1.0 - a2) * q) / d
        v_new = ((1.0 - a2) * v - w * w * dt_fs * q) / d
    else:
        c, s = torch.cos(w * dt_fs), torch.sin(w * dt_fs)
        sinc = torch.where(w > 0, s / torch.where(w > 0, w, torch.ones_like(w)), torch.full_like(w, dt_fs))
        q_new = c * q + sinc * v
        v_new = c * v - w * s * q
    free = state.free_mask()
    state.positions.copy_(torch.where(free > 0, from_normal_modes(q_new, rp), state.positions))
    state.velocities.copy_(from_normal_modes(v_new, rp) * free)


def _pile_l(state: MDState, rp: RingPolymer, dt_fs: float, friction_per_fs: float, pile_lambda: float) -> None:
    """A full PILE-L Langevin step of dt_fs on the normal-mode velocities at the bead temperature P T."""
    v = normal_modes(state.velocities, rp)
    gamma = 2.0 * pile_lambda * rp.omega.clone()
    gamma[:, 0] = friction_per_fs
    c1 = torch.exp(-gamma * dt_fs)[:, :, None, None]  # [S, P, 1, 1]
    kT_p = rp.beads * KB_EV_PER_K * _per_physical(state.temperature_K, rp)  # [S] the bead temperature P T
    masses = _beads_view(state.masses, rp)  # [S, P, N]: every bead of an atom has its mass
    sigma = torch.sqrt(ACCEL * kT_p[:, None, None] / masses).unsqueeze(-1) * torch.sqrt(1.0 - c1 * c1)
    noise = torch.randn(v.shape, generator=state.generator, dtype=state.dtype, device=state.device)
    state.velocities.copy_(from_normal_modes(c1 * v + sigma * noise, rp) * state.free_mask())


def _kick(state: MDState, dt_fs: float) -> None:
    state.velocities.add_(state.forces / state.masses.unsqueeze(-1), alpha=dt_fs * ACCEL)


def pimd_step(state: MDState, model, *, dt_fs: float, rp: RingPolymer, friction_per_fs: float,
              pile_lambda: float = 0.5, cayley: bool = True) -> MDState:
    """One BAOAB step of path-integral MD (PILE-L thermostat) of dt_fs on the beads of ``state``.

    ``rp``: ``ring_polymer(P, T)`` for the state's physical systems; ``friction_per_fs``: the centroid's
    Langevin friction (1/fs); ``pile_lambda``: internal modes damped at 2 lambda omega_k (1: critical);
    ``cayley``: the Cayley free step (stable for any P and dt), else the exact rotation. Every bead of a
    fixed atom stays where it is."""
    from mlff.md.integrators import compute_forces

    _kick(state, 0.5 * dt_fs)
    _free_step(state, rp, 0.5 * dt_fs, cayley)
    _pile_l(state, rp, dt_fs, friction_per_fs, pile_lambda)
    _free_step(state, rp, 0.5 * dt_fs, cayley)
    compute_forces(state, model)
    _kick(state, 0.5 * dt_fs)
    state.step += 1
    return state


def ring_polymer_observables(state: MDState, rp: RingPolymer) -> dict:
    """Per physical system [S]: ``centroid`` [S, N, 3] (Å), ``kinetic_primitive`` and ``kinetic_virial`` (the
    centroid-virial estimator) of the quantum kinetic energy (eV), ``potential`` (mean over beads, eV) and
    ``spring`` (the spring energy of H_P, eV). Fixed atoms contribute nothing."""
    P = rp.beads
    q = _beads_view(state.positions, rp)  # [S, P, N, 3]
    f = _beads_view(state.forces, rp)
    m = _beads_view(state.masses, rp)[:, 0]  # [S, N]
    free = (~_beads_view(state.fixed, rp)[:, 0]).to(state.dtype)  # [S, N]
    kT = KB_EV_PER_K * _per_physical(state.temperature_K, rp)  # [S]
    centroid = q.mean(1)
    dof = 3.0 * free.sum(-1)
    stretch = ((q - torch.roll(q, -1, dims=1)) ** 2).sum(-1).sum(1)  # [S, N] sum over beads of |q_j - q_j+1|^2
    spring = 0.5 * KINETIC * (m * free * stretch).sum(-1) * rp.omega_p ** 2
    kinetic_primitive = 0.5 * dof * P * kT - spring / P  # the springs of H_P are sampled at beta / P
    virial = ((q - centroid.unsqueeze(1)) * f).sum(-1).sum(1)  # [S, N]
    kinetic_virial = 0.5 * dof * kT - 0.5 / P * (virial * free).sum(-1)
    potential = state.energy.view(rp.n_physical, rp.beads).mean(1)
    return {"centroid": centroid, "kinetic_primitive": kinetic_primitive, "kinetic_virial": kinetic_virial,
            "potential": potential, "spring": spring}


def centroid_state(state: MDState, rp: RingPolymer) -> MDState:
    """The physical systems of a ring-polymer state as a state of S systems (what the runner records and
    monitors): centroid positions and velocities, the bead-mean energy and forces (the centroid's), the largest
    committee spread over the beads, each system's first bead's cell, temperature, xi atoms and info."""
    S, P = rp.n_physical, rp.beads
    n = state.positions.shape[0] // (S * P)

    def mean(x):
        return _beads_view(x, rp).mean(1).reshape(-1, *x.shape[1:])

    def first(x):  # per-system tensors [S * P, ...]
        return x.view(S, P, *x.shape[1:])[:, 0]

    def first_atoms(x):  # per-atom tensors [S * P * N, ...]
        return _beads_view(x, rp)[:, 0].reshape(-1, *x.shape[1:])

    xi_atoms = None
    if state.xi_atoms is not None:
        shift = torch.arange(S, device=state.device) * (P - 1) * n  # bead 0 of system s starts at s P N; now s N
        xi_atoms = first(state.xi_atoms) - shift.unsqueeze(-1)
    return MDState(
        positions=mean(state.positions), velocities=mean(state.velocities), masses=first_atoms(state.masses),
        numbers=first_atoms(state.numbers), cell=first(state.cell), pbc=first(state.pbc),
        system_idx=torch.repeat_interleave(torch.arange(S, device=state.device), n), fixed=first_atoms(state.fixed),
        forces=mean(state.forces), energy=state.energy.view(S, P).mean(1), temperature_K=first(state.temperature_K),
        chain_positions=first(state.chain_positions), chain_velocities=first(state.chain_velocities),
        chain_masses=first(state.chain_masses), generator=state.generator, step=state.step,
        energy_std=None if state.energy_std is None else state.energy_std.view(S, P).amax(1),
        forces_std=None if state.forces_std is None else _beads_view(state.forces_std, rp).amax(1).reshape(-1),
        xi_atoms=xi_atoms, info=state.info[::P])


def harmonic_bead_variance(beads: int, omega_per_fs: float, mass_amu: float, temperature_K: float) -> float:
    """Exact <x^2> (Å^2) of one Cartesian component of a bead of a ``beads``-bead ring polymer in the
    harmonic well m omega^2 x^2 / 2 at T: sum_k k_B T / (m (omega^2 + omega_k^2)); P = 1 is classical, and
    P -> infinity gives the quantum hbar / (2 m omega) coth(beta hbar omega / 2)."""
    kT = KB_EV_PER_K * temperature_K
    omega_p = beads * kT / HBAR_EV_FS
    total = 0.0
    for k in range(beads):
        omega_k = 2.0 * omega_p * math.sin(k * math.pi / beads)
        total += kT / (mass_amu * (omega_per_fs ** 2 + omega_k ** 2) * KINETIC)
    return total
