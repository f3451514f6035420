"""The semiclassical kinetic isotope effect: harmonic transition-state theory at the reactant minimum and the
transition state, with Wigner and Bell tunnelling corrections.

    KIE = k_H / k_D = [Q_vib(TS, H) / Q_vib(R, H)] / [Q_vib(TS, D) / Q_vib(R, D)] x rotational factor x
          kappa_H / kappa_D

(Bigeleisen & Mayer, J. Chem. Phys. 15, 261 (1947), the harmonic partition functions with zero-point energy; the
TS's imaginary mode left out; the electronic barrier is the same for H and D (Born-Oppenheimer) and cancels.)
A cluster with fixed atoms has no free translation or rotation: its partial Hessian over the moving atoms is
used as it is (``rigid=False``). A free molecule (``rigid=True``) has its 6 (5 if linear) rigid-body modes
projected out, and the ratio of its rotational partition functions (sqrt(I_A I_B I_C)) enters the KIE.

Tunnelling through the top of a parabolic barrier of imaginary frequency nu: Wigner, kappa = 1 + u^2 / 24;
Bell (infinite parabola), kappa = (u / 2) / sin(u / 2); with u = h nu / k_B T, Bell valid for u < 2 pi (deep
tunnelling, u >= 2 pi, needs the barrier's shape: path integrals).
"""

from __future__ import annotations

import math

import numpy as np
from ase import units

from mlff.errors import MLFFError

__all__ = [
    "CM1_PER_SQRT_EV_A2_AMU",
    "bell",
    "harmonic_frequencies",
    "kie_from_frequencies",
    "minimise",
    "saddle",
    "semiclassical_kie",
    "vibrational_free_energy",
    "wigner",
]

# omega = sqrt(k / m) for k in eV/Å^2 and m in amu, as a wavenumber: omega / (2 pi c) in cm^-1
CM1_PER_SQRT_EV_A2_AMU = float(math.sqrt(units._e / (1e-20 * units._amu)) / (2 * math.pi * units._c * 100))
_HC_EV_CM = float(units._hplanck * units._c * 100 / units._e)  # h c in eV cm: wavenumber -> energy
_KB = float(units.kB)


def _rigid_basis(positions: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Orthonormal mass-weighted translations and rotations [3N, 6 or 5]."""
    sqrt_m = np.sqrt(masses)
    centre = (masses[:, None] * positions).sum(0) / masses.sum()
    r = positions - centre
    vectors = []
    for axis in np.eye(3):
        vectors.append((sqrt_m[:, None] * axis).reshape(-1))
        vectors.append((sqrt_m[:, None] * np.cross(axis, r)).reshape(-1))
    q, s, _ = np.linalg.svd(np.array(vectors).T, full_matrices=False)
    return q[:, s > 1e-6 * s.max()]


def harmonic_frequencies(hessian: np.ndarray, masses: np.ndarray, *, positions: np.ndarray | None = None,
                         rigid: bool = False) -> np.ndarray:
    """Harmonic wavenumbers (cm^-1, ascending; an imaginary one as a negative number) of ``hessian`` [3n, 3n]
    (eV/Å^2) with ``masses`` [n] (amu). ``rigid``: project out the rigid-body modes of a free molecule (at
    ``positions`` [n, 3]) and drop them."""
    masses = np.asarray(masses, dtype=np.float64)
    n = len(masses)
    if hessian.shape != (3 * n, 3 * n):
        raise MLFFError(f"a Hessian of shape {hessian.shape} does not fit {n} atoms")
    inv = 1.0 / np.sqrt(np.repeat(masses, 3))
    weighted = hessian * inv[:, None] * inv[None, :]
    drop = 0
    if rigid:
        if positions is None:
            raise MLFFError("rigid=True needs the positions (the rigid-body modes are built from them)")
        basis = _rigid_basis(np.asarray(positions, dtype=np.float64), masses)
        projector = np.eye(3 * n) - basis @ basis.T
        weighted = projector @ weighted @ projector
        drop = basis.shape[1]
    eigenvalues = np.linalg.eigvalsh(0.5 * (weighted + weighted.T))
    if drop:  # the rigid-body modes are the eigenvalues nearest zero
        keep = np.sort(np.argsort(np.abs(eigenvalues))[drop:])
        eigenvalues = eigenvalues[keep]
    return np.sign(eigenvalues) * np.sqrt(np.abs(eigenvalues)) * CM1_PER_SQRT_EV_A2_AMU


def vibrational_free_energy(wavenumbers_cm: np.ndarray, temperature_K: float) -> float:
    """-k_B T ln Q_vib (eV) of harmonic modes (zero-point energy included) of the real wavenumbers given."""
    x = _HC_EV_CM * np.asarray(wavenumbers_cm, dtype=np.float64) / (_KB * temperature_K)  # h nu / k_B T
    return float(_KB * temperature_K * np.sum(0.5 * x + np.log1p(-np.exp(-x))))


def wigner(imaginary_cm: float, temperature_K: float) -> float:
    """Wigner's tunnelling correction 1 + u^2 / 24, u = h |nu| / k_B T."""
    u = _HC_EV_CM * abs(imaginary_cm) / (_KB * temperature_K)
    return 1.0 + u * u / 24.0


def bell(imaginary_cm: float, temperature_K: float) -> float:
    """Bell's tunnelling correction through an infinite parabolic barrier, (u / 2) / sin(u / 2) (u < 2 pi)."""
    u = _HC_EV_CM * abs(imaginary_cm) / (_KB * temperature_K)
    if u >= 2.0 * math.pi:
        raise MLFFError(f"Bell's parabolic correction diverges at u = h nu / kT = {u:.2f} >= 2 pi "
                        f"({abs(imaginary_cm):.0f} cm^-1 at {temperature_K:g} K): deep tunnelling needs path integrals")
    return (u / 2.0) / math.sin(u / 2.0)


def _split_ts(wavenumbers: np.ndarray, where: str) -> tuple[float, np.ndarray]:
    imaginary = wavenumbers[wavenumbers < 0]
    if len(imaginary) != 1:
        raise MLFFError(f"{where}: a transition state has exactly one imaginary frequency, this one has "
                        f"{len(imaginary)} ({', '.join(f'{w:.0f}i' for w in -imaginary) or 'none'} cm^-1)")
    return float(-imaginary[0]), wavenumbers[wavenumbers >= 0]


def _check_minimum(wavenumbers: np.ndarray, where: str, tolerance_cm: float = 50.0) -> np.ndarray:
    bad = wavenumbers[wavenumbers < -tolerance_cm]
    if len(bad):
        raise MLFFError(f"{where}: not a minimum: imaginary frequencies {', '.join(f'{w:.0f}i' for w in -bad)} cm^-1")
    return np.abs(wavenumbers)


def kie_from_frequencies(reactant: dict, ts: dict, temperature_K: float, *, rotational_log_ratio: float = 0.0) -> dict:
    """The KIE from harmonic wavenumbers: ``reactant`` and ``ts`` map "H" and "D" to wavenumber arrays (cm^-1,
    the TS with one imaginary mode as a negative number). ``rotational_log_ratio``: ln of the rotational
    partition-function ratio [Q_rot(TS,H)/Q_rot(R,H)] / [Q_rot(TS,D)/Q_rot(R,D)] (0 for a cluster with fixed
    atoms). Returns the KIE without tunnelling and with Wigner's and Bell's corrections, the zero-point
    energies, the imaginary frequencies and the corrections."""
    kT = _KB * temperature_K
    out = {"temperature_K": float(temperature_K)}
    free = {}
    for iso in ("H", "D"):
        real_r = _check_minimum(np.asarray(reactant[iso], dtype=np.float64), f"reactant ({iso})")
        imag, real_ts = _split_ts(np.asarray(ts[iso], dtype=np.float64), f"transition state ({iso})")
        free[iso] = vibrational_free_energy(real_ts, temperature_K) - vibrational_free_energy(real_r, temperature_K)
        out[f"imaginary_cm_{iso}"] = imag
        out[f"zpe_barrier_shift_eV_{iso}"] = 0.5 * _HC_EV_CM * (real_ts.sum() - real_r.sum())
        out[f"wigner_{iso}"] = wigner(imag, temperature_K)
        try:
            out[f"bell_{iso}"] = bell(imag, temperature_K)
        except MLFFError:
            out[f"bell_{iso}"] = None
    kie = math.exp((free["D"] - free["H"]) / kT + rotational_log_ratio)
    out["kie"] = kie
    out["kie_wigner"] = kie * out["wigner_H"] / out["wigner_D"]
    out["kie_bell"] = None if out["bell_H"] is None or out["bell_D"] is None else kie * out["bell_H"] / out["bell_D"]
    out["kie_zpe_only"] = math.exp((out["zpe_barrier_shift_eV_D"] - out["zpe_barrier_shift_eV_H"]) / kT)
    return out


def _moving(atoms) -> np.ndarray:
    from mlff.md.state import fixed_mask

    return np.flatnonzero(~fixed_mask(atoms))


def _log_rotational(atoms) -> float:
    moments = np.clip(atoms.get_moments_of_inertia(), 1e-12, None)
    return 0.5 * float(np.sum(np.log(moments[moments > 1e-6 * moments.max()])))


def semiclassical_kie(potential, reactant, ts, isotope: int, temperature_K: float = 300.0, *,
                      mass_D: float = 2.01410178) -> dict:
    """The KIE of replacing atom ``isotope`` (H) by D at ``temperature_K``, from the reactant minimum and the
    transition state (ASE Atoms, optimised with ``potential``). Atoms fixed in the structures (``FixAtoms`` or
    ``info["fixed"]``) stay out of the Hessian (a partial Hessian); with no fixed atom the molecule is free
    (rigid-body modes projected out, rotational partition functions in the KIE). Returns
    ``kie_from_frequencies``'s record plus the wavenumbers."""
    from mlff.models.potential import hessian

    if reactant.get_chemical_symbols() != ts.get_chemical_symbols():
        raise MLFFError("reactant and transition state must hold the same atoms in the same order")
    if reactant[isotope].symbol != "H":
        raise MLFFError(f"atom {isotope} is {reactant[isotope].symbol}, not H")
    moving = _moving(reactant)
    if not np.array_equal(moving, _moving(ts)):
        raise MLFFError("reactant and transition state must fix the same atoms")
    rigid = len(moving) == len(reactant)
    wavenumbers, log_rot = {"reactant": {}, "ts": {}}, {}
    for name, atoms in (("reactant", reactant), ("ts", ts)):
        h = hessian(potential, atoms, indices=moving)
        for iso in ("H", "D"):
            masses = atoms.get_masses()
            if iso == "D":
                masses[isotope] = mass_D
            wavenumbers[name][iso] = harmonic_frequencies(h, masses[moving], positions=atoms.positions[moving],
                                                          rigid=rigid)
            if rigid:
                heavy = atoms.copy()
                heavy.set_masses(masses)
                log_rot[(name, iso)] = _log_rotational(heavy)
    rotational = 0.0
    if rigid:
        rotational = (log_rot[("ts", "H")] - log_rot[("reactant", "H")]) - (log_rot[("ts", "D")] - log_rot[("reactant", "D")])
    out = kie_from_frequencies(wavenumbers["reactant"], wavenumbers["ts"], temperature_K,
                               rotational_log_ratio=rotational)
    out.update(isotope=int(isotope), mass_D=float(mass_D), partial_hessian=not rigid, moving_atoms=len(moving),
               wavenumbers_cm={f"{n}_{i}": w.tolist() for n, d in wavenumbers.items() for i, w in d.items()})
    return out


def minimise(atoms, *, fmax: float = 0.005, steps: int = 2000) -> dict:
    """Relax ``atoms`` (its calculator attached; fixed atoms held) to a minimum with ASE's BFGS, in place;
    refuses one that did not converge within ``steps``."""
    from ase.optimize import BFGS

    from mlff.md.engines import pin_fixed_atoms

    pin_fixed_atoms(atoms)
    optimiser = BFGS(atoms, logfile=None)
    converged = bool(optimiser.run(fmax=fmax, steps=steps))
    largest = float(np.abs(atoms.get_forces()).max())
    if not converged:
        raise MLFFError(f"minimise: no minimum within {steps} steps (largest force {largest:.3f} eV/Å > {fmax})")
    return {"steps": int(optimiser.nsteps), "energy_eV": float(atoms.get_potential_energy()), "max_force": largest}


def saddle(atoms, mode: np.ndarray, *, fmax: float = 0.005, steps: int = 2000) -> dict:
    """Walk ``atoms`` (its calculator attached; fixed atoms held) to a first-order saddle point with ASE's dimer
    method, starting along ``mode`` [N, 3] (e.g. the gradient of the reaction coordinate), in place."""
    from ase.mep.dimer import DimerControl, MinModeAtoms, MinModeTranslate

    from mlff.md.engines import pin_fixed_atoms
    from mlff.md.state import fixed_mask

    pin_fixed_atoms(atoms)
    mode = np.asarray(mode, dtype=np.float64).reshape(len(atoms), 3).copy()
    mode[fixed_mask(atoms)] = 0.0
    if not np.linalg.norm(mode) > 0:
        raise MLFFError("saddle: the initial mode has no component on a moving atom")
    control = DimerControl(initial_eigenmode_method="displacement", displacement_method="vector", logfile=None,
                           mask=list(~fixed_mask(atoms)))
    dimer = MinModeAtoms(atoms, control)
    dimer.displace(displacement_vector=1e-3 * mode / np.linalg.norm(mode))
    optimiser = MinModeTranslate(dimer, trajectory=None, logfile=None)
    converged = bool(optimiser.run(fmax=fmax, steps=steps))
    largest = float(np.abs(atoms.get_forces()).max())
    if not converged:
        raise MLFFError(f"saddle: no saddle point within {steps} steps (largest force {largest:.3f} eV/Å > {fmax})")
    return {"steps": int(optimiser.nsteps), "energy_eV": float(atoms.get_potential_energy()), "max_force": largest,
            "curvature": float(dimer.get_curvature())}
