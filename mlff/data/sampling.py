"""Geometry sampling for the FDH cluster with GFN2-xTB: Langevin MD, restrained scans along xi, normal modes,
and farthest-point selection. xTB only makes geometries here; the labels come from DFT (mlff.data.label).

xi = d(C_formate-H) - d(H-C4) in Å (see mlff.data.cluster). Every frame returned is a copy with its
``info`` carried over plus ``source`` (method, temperature, step) and ``xi``; fixed atoms (FixAtoms) stay put.
"""

from __future__ import annotations

import sys

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator, all_changes
from ase.constraints import FixAtoms

from mlff.data.cluster import reaction_coordinate
from mlff.data.labelers.xtb import xtb_calculator
from mlff.errors import MLFFError

__all__ = ["XiRestraint", "farthest_point_selection", "normal_mode_samples", "scan_xi", "xi_gradient",
           "xtb_calculator", "xtb_md"]

FRICTION_PER_FS = 0.01  # Langevin friction
HBAR_EV_CM = 1.239841984e-4  # h c in eV cm: 1 cm^-1 = 1.2398e-4 eV
MIN_MODE_CM1 = 50.0  # softer (and imaginary) modes are not displaced


def xi_gradient(positions, xi_atoms) -> tuple:
    """xi (Å) and its gradient d xi / d positions [N, 3] (only the three xi atoms are non-zero)."""
    positions = np.asarray(positions, dtype=float)
    c, h, c4 = (int(i) for i in xi_atoms)
    a, b = positions[c] - positions[h], positions[h] - positions[c4]
    da, db = np.linalg.norm(a), np.linalg.norm(b)
    grad = np.zeros_like(positions)
    grad[c], grad[h], grad[c4] = a / da, -a / da - b / db, b / db
    return float(da - db), grad


class XiRestraint(Calculator):
    """Harmonic bias 0.5 k (xi - xi0)^2 on the hydride-transfer coordinate: the house's one xi restraint
    (``mlff.bias``: the xi CV and a harmonic restraint, forces by autograd), as an ASE calculator.

    Add it to xTB with ``ase.calculators.mixing.SumCalculator([xtb, XiRestraint(...)])``.
    """

    implemented_properties = ["energy", "forces"]

    def __init__(self, xi_atoms, xi0_A: float, k_eV_per_A2: float):
        super().__init__()
        if len(xi_atoms) != 3 or k_eV_per_A2 < 0:
            raise MLFFError(f"XiRestraint needs three atoms [c_formate, h, c4] and k >= 0, got {list(xi_atoms)}, "
                            f"k = {k_eV_per_A2}")
        self.xi_atoms = [int(i) for i in xi_atoms]
        self.xi0_A, self.k_eV_per_A2 = float(xi0_A), float(k_eV_per_A2)
        self._biases, self._n_atoms = None, None

    def _bias(self, n_atoms: int):
        from mlff.bias.cv import DistanceDifference
        from mlff.bias.model import Biases
        from mlff.bias.restraint import HarmonicRestraint

        if self._n_atoms != n_atoms:
            self._biases = Biases(DistanceDifference(self.xi_atoms),
                                  [HarmonicRestraint([self.xi0_A], [self.k_eV_per_A2])]).bind([n_atoms])
            self._n_atoms = n_atoms
        return self._biases

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        import torch

        super().calculate(atoms, properties, system_changes)
        biases = self._bias(len(self.atoms))
        energy, forces, _ = biases.evaluate(torch.as_tensor(self.atoms.positions, dtype=torch.float64))
        self.results = {"energy": float(energy[0]), "forces": forces.numpy()}


def _track(iterable, total: int, description: str):
    """A rich progress bar on a terminal, the bare iterable otherwise."""
    if not sys.stderr.isatty():
        return iterable
    from rich.progress import track

    return track(iterable, total=total, description=description, transient=True)


def _frame(atoms: Atoms, source: str, **info) -> Atoms:
    frame = atoms.copy()
    frame.calc = None
    frame.arrays.pop("momenta", None)
    frame.info.update(source=source, xi=reaction_coordinate(frame), **info)
    return frame


def _with_calculator(atoms: Atoms, restraint: XiRestraint | None) -> Atoms:
    atoms = atoms.copy()
    if "fixed" in atoms.info and not any(isinstance(c, FixAtoms) for c in atoms.constraints):
        atoms.set_constraint(FixAtoms(indices=[int(i) for i in atoms.info["fixed"]]))
    xtb = xtb_calculator(atoms)
    if restraint is None:
        atoms.calc = xtb
    else:
        from ase.calculators.mixing import SumCalculator

        atoms.calc = SumCalculator([xtb, restraint])
    return atoms


def _langevin(atoms: Atoms, temperature_K: float, timestep_fs: float, seed: int):
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    rng = np.random.default_rng(seed)
    if not atoms.get_momenta().any():
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
        atoms.set_momenta(atoms.get_momenta(), apply_constraint=True)  # fixed atoms at rest
    return Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature_K,
                    friction=FRICTION_PER_FS / units.fs, fixcm=False, rng=rng)


def xtb_md(atoms: Atoms, *, temperature_K: float, steps: int, timestep_fs: float = 0.5, every: int = 10,
           seed: int = 0, restraint: XiRestraint | None = None, labels: bool = False, _label: str = "") -> list:
    """GFN2-xTB Langevin MD (friction 0.01/fs, fixed atoms at rest); a frame every ``every`` steps.

    Velocities start from a Maxwell-Boltzmann draw (``seed``) unless ``atoms`` carries momenta.
    ``restraint``: an optional XiRestraint added to the xTB forces.
    ``labels``: each frame keeps the xTB energy and forces (the restraint left out) that the MD computed at
    that very geometry, with the labeller's provenance (``XTBLabeler().level()``): labels at no extra cost.
    """
    if steps < 0 or every < 1 or temperature_K <= 0 or timestep_fs <= 0:
        raise MLFFError(f"xtb_md needs steps >= 0, every >= 1, temperature_K > 0 and timestep_fs > 0, got "
                        f"{steps}, {every}, {temperature_K}, {timestep_fs}")
    system = _with_calculator(atoms, restraint)
    dynamics = _langevin(system, temperature_K, timestep_fs, seed)
    bias = "" if restraint is None else f", xi restrained to {restraint.xi0_A:+.3f} Å (k {restraint.k_eV_per_A2} eV/Å²)"
    frames = []
    for step in _track(range(every, steps + 1, every), steps // every, f"xTB MD {temperature_K:.0f} K{_label}"):
        try:
            dynamics.run(every)
        except Exception as error:  # tblite SCF failures and the like: name where it happened
            raise MLFFError(f"GFN2-xTB MD at {temperature_K} K failed near step {step}: {error}") from error
        frame = _frame(system, f"GFN2-xTB Langevin MD {temperature_K:g} K, dt {timestep_fs:g} fs, "
                               f"step {step}, seed {seed}{bias}")
        frames.append(_labelled(frame, _xtb_part(system.calc)) if labels else frame)
    return frames


def _xtb_part(calc):
    """The tblite calculator inside ``calc`` (itself, or the first term of a SumCalculator)."""
    mixer = getattr(calc, "mixer", None)
    return calc if mixer is None else mixer.calcs[0]


def _labelled(frame: Atoms, xtb) -> Atoms:
    """``frame`` with the xTB results of its own geometry and the labeller's provenance."""
    import datetime
    import platform

    from ase.calculators.singlepoint import SinglePointCalculator

    from mlff.data.labelers.xtb import xtb_level

    energy, forces = xtb.results.get("energy"), xtb.results.get("forces")
    if energy is None or forces is None or not np.allclose(xtb.atoms.positions, frame.positions, atol=0, rtol=0):
        raise MLFFError("xtb_md(labels=True): the xTB results do not belong to the frame's geometry")
    frame.info["provenance"] = {**xtb_level(), "scf_converged": True, "labelled_by": "the sampling MD step itself",
                                "geometry_source": frame.info["source"], "host": platform.node(),
                                "labelled_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                                    timespec="seconds")}
    frame.calc = SinglePointCalculator(frame, energy=float(energy), forces=np.array(forces, dtype=np.float64))
    return frame


def _restrained_relax(atoms: Atoms, restraint: XiRestraint, steps: int, fmax_eV_per_A: float) -> Atoms:
    from ase.optimize import BFGS

    system = _with_calculator(atoms, restraint)
    BFGS(system, logfile=None, maxstep=0.1).run(fmax=fmax_eV_per_A, steps=steps)
    return system


def scan_xi(atoms: Atoms, xi_values, *, k_eV_per_A2: float = 20.0, relax_steps: int = 100,
            md_steps_per_window: int = 100, temperature_K: float = 300.0, timestep_fs: float = 0.5,
            every: int = 10, seed: int = 0, fmax_eV_per_A: float = 0.05) -> list:
    """Restrained windows along xi, in the order given, each starting from the previous window's last frame.

    Per window: a restrained BFGS relaxation (up to ``relax_steps``) kept as one frame, then restrained Langevin
    MD (``md_steps_per_window``, a frame every ``every`` steps). Frames carry ``xi`` and ``window_xi0``.
    """
    xi_values = [float(x) for x in np.atleast_1d(xi_values)]
    if not xi_values or k_eV_per_A2 <= 0:
        raise MLFFError(f"scan_xi needs at least one xi value and k > 0, got {xi_values}, k = {k_eV_per_A2}")
    xi_atoms = atoms.info.get("xi_atoms")
    if xi_atoms is None:
        raise MLFFError(f"{atoms.get_chemical_formula()} has no info['xi_atoms']; build it with build_cluster")
    frames, current = [], atoms.copy()
    for w, xi0 in enumerate(_track(xi_values, len(xi_values), "xi windows")):
        restraint = XiRestraint(xi_atoms, xi0, k_eV_per_A2)
        current = _restrained_relax(current, restraint, relax_steps, fmax_eV_per_A)
        tag = f"xi restrained to {xi0:+.3f} Å (k {k_eV_per_A2:g} eV/Å²)"
        frames.append(_frame(current, f"GFN2-xTB relaxation, {tag}", window_xi0=xi0))
        if md_steps_per_window > 0:
            md = xtb_md(current, temperature_K=temperature_K, steps=md_steps_per_window, timestep_fs=timestep_fs,
                        every=every, seed=seed + w, restraint=restraint, _label=f", window {xi0:+.2f}")
            for frame in md:
                frame.info["window_xi0"] = xi0
            frames += md
            if md:
                current = md[-1]
    return frames


def _hessian(atoms: Atoms, free: np.ndarray, delta_A: float) -> np.ndarray:
    """Central finite-difference Hessian [3F, 3F] (eV/Å²) of the free atoms, symmetrized."""
    system = _with_calculator(atoms, None)
    system.set_constraint()
    base = system.positions.copy()
    columns = []
    for k in _track(range(3 * len(free)), 3 * len(free), "xTB Hessian"):
        i, a = free[k // 3], k % 3
        grads = []
        for sign in (1.0, -1.0):
            system.positions = base
            system.positions[i, a] += sign * delta_A
            grads.append(-system.get_forces()[free].ravel())
        columns.append((grads[0] - grads[1]) / (2 * delta_A))
    hessian = np.array(columns)
    return 0.5 * (hessian + hessian.T)


def normal_mode_samples(atoms: Atoms, n: int, *, temperature_K: float = 300.0, seed: int = 0,
                        delta_A: float = 0.005) -> list:
    """``n`` geometries displaced along the GFN2-xTB normal modes of the free atoms (fixed atoms stay put).

    Mode amplitudes are Gaussian with the thermal variance of a quantum harmonic oscillator,
    <q²> = ħ/(2ω) coth(ħω / 2kT) (zero point plus Boltzmann), independent per mode; modes below 50 cm⁻¹
    (and imaginary ones) are left out. ``atoms`` should be a minimum, as build_cluster returns.
    """
    if n < 0 or temperature_K <= 0:
        raise MLFFError(f"normal_mode_samples needs n >= 0 and temperature_K > 0, got {n}, {temperature_K}")
    fixed = set(int(i) for i in atoms.info.get("fixed", []))
    for c in atoms.constraints:
        if isinstance(c, FixAtoms):
            fixed.update(int(i) for i in c.index)
    free = np.array(sorted(set(range(len(atoms))) - fixed), dtype=int)
    masses = np.repeat(atoms.get_masses()[free], 3)
    weighted = _hessian(atoms, free, delta_A) / np.sqrt(np.outer(masses, masses))
    eigenvalues, modes = np.linalg.eigh(weighted)  # eV / (Å² amu)
    hbar = units._hbar * units.J * units.s  # eV * ASE time
    keep = eigenvalues > (MIN_MODE_CM1 * HBAR_EV_CM / hbar) ** 2
    omega, modes = np.sqrt(eigenvalues[keep]), modes[:, keep]
    kt = units.kB * temperature_K
    sigma = np.sqrt(hbar / (2 * omega) / np.tanh(hbar * omega / (2 * kt)))  # sqrt(amu) Å
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        shift = (modes @ (sigma * rng.standard_normal(len(omega)))) / np.sqrt(masses)
        displaced = atoms.copy()
        displaced.positions[free] += shift.reshape(-1, 3)
        frames.append(_frame(displaced, f"GFN2-xTB normal-mode sampling {temperature_K:g} K, sample {k}, "
                                        f"seed {seed}, {keep.sum()} modes"))
    return frames


def _descriptors(frames: list) -> np.ndarray:
    """Inverse interatomic distances [F, N(N-1)/2] (1/Å), float32; frames must share composition and order."""
    numbers = frames[0].numbers
    for k, frame in enumerate(frames):
        if len(frame) != len(numbers) or (frame.numbers != numbers).any():
            raise MLFFError(f"farthest_point_selection needs frames with the same atoms in the same order; frame {k} "
                            f"({frame.get_chemical_formula()}) differs from frame 0 ({frames[0].get_chemical_formula()})")
    i, j = np.triu_indices(len(numbers), k=1)
    out = np.empty((len(frames), len(i)), dtype=np.float32)
    for k, frame in enumerate(frames):
        out[k] = 1.0 / np.linalg.norm(frame.positions[i] - frame.positions[j], axis=1)
    return out


def farthest_point_selection(frames: list, n: int, *, seed: int = 0) -> list:
    """Indices of ``n`` frames picked greedily, each the farthest (Euclidean, inverse-distance descriptor) from
    those already picked; the first is drawn with ``seed``. Deterministic; order of picking."""
    if n < 0 or n > len(frames):
        raise MLFFError(f"cannot select {n} of {len(frames)} frames")
    if n == 0:
        return []
    x = _descriptors(frames)
    first = int(np.random.default_rng(seed).integers(len(frames)))
    chosen = [first]
    distance = np.linalg.norm(x - x[first], axis=1)
    for _ in range(n - 1):
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(x - x[nxt], axis=1))
    return chosen
