"""DFT (or Hartree-Fock) labels from PySCF on the CPU or GPU4PySCF on the GPU, through one code path.

GPU4PySCF mirrors PySCF's API (``scf.hf.RHF``, ``scf.uhf.UHF``, ``dft.rks.RKS``, ``dft.uks.UKS``,
``.density_fit()``, ``.PCM()``, ``mf.disp``, ``.nuc_grad_method()``), so the two devices differ only in
which package supplies those classes. Both packages are optional and imported when a labeller is made.

Units: positions in Å go in; energies come out in eV and forces (minus the analytic gradient, with
the dispersion and continuum-solvent terms) in eV/Å, converted from Hartree and Hartree/Bohr with
``ase.units``. A failed calculation (SCF not converged, an exception inside PySCF) is returned as a
``LabelResult`` with ``converged=False`` and its reason; it never raises. Configuration errors (unknown
functional or basis, impossible charge/multiplicity, a periodic structure) raise ``MLFFError``.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
from ase.units import Bohr, Hartree

from mlff.data.labelers.base import LabelResult, charge_and_multiplicity
from mlff.errors import MLFFError

__all__ = ["PySCFLabeler"]

_GUESSES = ("minao", "nearest")
_KEPT_DENSITIES = 8  # scf_guess="nearest" remembers the orbitals of this many converged labels
_DISPERSIONS = ("d3bj", "d3zero", "d3bjm", "d3zerom", "d3op", "d4")  # pyscf.scf.dispersion.DISP_VERSIONS


def _load_backend(device: str) -> SimpleNamespace:
    """The package that supplies the SCF classes: pyscf (CPU) or gpu4pyscf (GPU), imported now."""
    try:
        import pyscf
        from pyscf import gto
    except ImportError as err:
        raise MLFFError(f"the PySCF labeller needs PySCF: pip install 'mlff[dft]' ({err})") from None
    if device == "cpu":
        from pyscf import dft, scf

        return SimpleNamespace(name="pyscf", version=pyscf.__version__, gto=gto, scf=scf, dft=dft)
    try:
        import gpu4pyscf
        from gpu4pyscf import dft, scf
    except ImportError as err:
        raise MLFFError(f"device='gpu' needs GPU4PySCF and CuPy: pip install 'mlff[dft-gpu]' ({err})") from None
    return SimpleNamespace(name="gpu4pyscf", version=f"{gpu4pyscf.__version__} (pyscf {pyscf.__version__})",
                           gto=gto, scf=scf, dft=dft)


def _check_lebedev(order, solvent_eps):
    """The C-PCM Lebedev order (None: PySCF's default), one PySCF knows; an error without a continuum."""
    if order is None:
        return None
    from pyscf.dft.gen_grid import LEBEDEV_ORDER

    if solvent_eps is None:
        raise MLFFError("pcm_lebedev_order sets the C-PCM surface; it needs solvent_eps (the gas phase has none)")
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or int(order) not in LEBEDEV_ORDER:
        raise MLFFError(f"pcm_lebedev_order must be one of PySCF's Lebedev orders "
                        f"({', '.join(str(k) for k in sorted(LEBEDEV_ORDER) if k)}), got {order!r}")
    return int(order)


def _check_functional(functional: str | None) -> str | None:
    """The functional in lower case (None for Hartree-Fock); MLFFError when libxc does not know it."""
    if functional is None or str(functional).lower() in ("hf", "rhf", "uhf"):
        return None
    xc = str(functional).lower()
    if "-d3" in xc or "-d4" in xc:
        raise MLFFError(f"functional {functional!r} carries its own dispersion; give it separately, "
                        f"e.g. functional='b3lyp', dispersion='d3bj'")
    from pyscf.dft import libxc

    try:
        libxc.parse_xc(xc)
    except (KeyError, ValueError, NotImplementedError) as err:
        raise MLFFError(f"unknown functional {functional!r} ({_one_line(err)})") from None
    return xc


def _check_dispersion(dispersion: str | None) -> str:
    """The dispersion correction in lower case ("" for none); MLFFError when unknown or not installed."""
    if dispersion is None or str(dispersion).lower() in ("", "none"):
        return ""
    disp = str(dispersion).lower()
    version = disp.removesuffix("atm").removesuffix("2b")
    if version not in _DISPERSIONS:
        raise MLFFError(f"unknown dispersion {dispersion!r}; expected one of {', '.join(_DISPERSIONS)} or None")
    try:
        import pyscf.dispersion  # noqa: F401
    except ImportError as err:
        raise MLFFError(f"dispersion {dispersion!r} needs pyscf-dispersion: pip install 'mlff[dft]' ({err})") from None
    return disp


def _positive(name: str, value, kind=float, allow_zero: bool = False):
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise MLFFError(f"{name} must be a {kind.__name__}, got {value!r}") from None
    if number < 0 or (number == 0 and not allow_zero):
        raise MLFFError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return number


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def _numpy(array) -> np.ndarray:
    """A NumPy float64 copy of a NumPy or CuPy array."""
    if hasattr(array, "__cuda_array_interface__"):
        array = array.get()
    return np.array(array, dtype=np.float64)


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _projected_density(overlap: np.ndarray, mo_coeff: np.ndarray, mo_occ: np.ndarray) -> np.ndarray:
    """The density matrix of another geometry's occupied orbitals, Löwdin-orthonormalised in this geometry's
    overlap metric, so that it is idempotent and holds the right number of electrons (a raw density matrix
    from another geometry is neither). Restricted (``mo_occ`` [nmo]) or unrestricted ([2, nmo])."""
    if mo_occ.ndim == 2:
        return np.stack([_projected_density(overlap, c, occ) for c, occ in zip(mo_coeff, mo_occ)])
    occupied = mo_occ > 0
    c, weights = mo_coeff[:, occupied], mo_occ[occupied]
    values, vectors = np.linalg.eigh(c.T @ overlap @ c)
    c = c @ (vectors / np.sqrt(values)) @ vectors.T
    return (c * weights) @ c.T


class _SCFTrace:
    """SCF callback keeping the last energy change (PySCF and GPU4PySCF pass their loop's locals)."""

    def __init__(self):
        self.last_dE_Ha: float | None = None

    def __call__(self, env: dict) -> None:
        e_tot, e_last = _float(env.get("e_tot")), _float(env.get("last_hf_e"))
        if e_tot is not None and e_last is not None:
            self.last_dE_Ha = e_tot - e_last


class PySCFLabeler:
    """Kohn-Sham DFT (restricted for singlets, unrestricted otherwise) or HF labels from (GPU4)PySCF.

    ``functional=None`` or ``"hf"`` gives Hartree-Fock. ``dispersion`` ("d3bj", ...; None for none)
    is added through ``mf.disp`` (pyscf-dispersion) to the energy and the gradient. ``solvent_eps``:
    C-PCM continuum with that dielectric constant, in the energy and the gradient (None: gas phase).
    ``forces=False`` computes the energy only (e.g. def2-TZVP single points). ``device``: "cpu"
    (PySCF) or "gpu" (GPU4PySCF). ``max_memory_mb``: PySCF's memory cap (None: PySCF's default).

    Speed options (their measured cost in accuracy: ``benchmarks/dft_speed.py``):
    ``pcm_lebedev_order``: points per atomic sphere of the C-PCM surface (None: PySCF's default, 29);
    ``scf_guess``: "minao" (PySCF's default) or "nearest", the occupied orbitals of the closest geometry
    this labeller has labelled in this process (same atoms, charge and spin; Cartesian RMSD <=
    ``guess_max_rmsd`` Å, unaligned, since orbitals in the atomic-orbital basis turn with the molecule),
    orthonormalised in the new geometry's overlap; else "minao". The guess changes the SCF path, not the
    converged answer.
    """

    def __init__(self, functional: str | None = "b3lyp", basis: str = "def2-svp", dispersion: str | None = "d3bj",
                 solvent_eps: float | None = 4.0, density_fit: bool = True, forces: bool = True,
                 conv_tol: float = 1e-9, max_cycle: int = 100, grids_level: int = 3, device: str = "cpu",
                 verbose: int = 0, max_memory_mb: float | None = None, pcm_lebedev_order: int | None = None,
                 scf_guess: str = "minao", guess_max_rmsd: float = 0.5):
        if device not in ("cpu", "gpu"):
            raise MLFFError(f"device must be 'cpu' or 'gpu', got {device!r}")
        if not isinstance(basis, str) or not basis.strip():
            raise MLFFError(f"basis must be a basis-set name such as 'def2-svp', got {basis!r}")
        self._backend = _load_backend(device)
        self.name, self.device = self._backend.name, device
        self.functional, self.basis = _check_functional(functional), basis.strip().lower()
        self.dispersion = _check_dispersion(dispersion)
        self.solvent_eps = None if solvent_eps is None else _positive("solvent_eps", solvent_eps)
        if self.solvent_eps is not None and self.solvent_eps <= 1.0:
            raise MLFFError(f"solvent_eps must be > 1 (a dielectric constant) or None for gas phase, got {solvent_eps}")
        self.density_fit, self.forces = bool(density_fit), bool(forces)
        self.conv_tol = _positive("conv_tol", conv_tol)
        self.max_cycle = _positive("max_cycle", max_cycle, int)
        self.grids_level = _positive("grids_level", grids_level, int, allow_zero=True)
        if self.grids_level > 9:
            raise MLFFError(f"grids_level must be 0 to 9, got {grids_level}")
        self.verbose = int(verbose)
        self.max_memory_mb = None if max_memory_mb is None else _positive("max_memory_mb", max_memory_mb)
        self.pcm_lebedev_order = _check_lebedev(pcm_lebedev_order, self.solvent_eps)
        if scf_guess not in _GUESSES:
            raise MLFFError(f"scf_guess must be one of {', '.join(_GUESSES)}, got {scf_guess!r}")
        self.scf_guess, self.guess_max_rmsd = scf_guess, _positive("guess_max_rmsd", guess_max_rmsd)
        # for scf_guess='nearest': (numbers, charge, multiplicity, positions, (mo_coeff, mo_occ)) of the last few
        # converged labels; assignable (e.g. restored from a file by a resumed run)
        self.kept_orbitals: list[tuple] = []

    def __repr__(self) -> str:
        method = self.functional or "hf"
        return (f"PySCFLabeler({method}/{self.basis}, dispersion={self.dispersion or None}, "
                f"solvent_eps={self.solvent_eps}, device={self.device!r})")

    def level(self) -> dict:
        """The level of theory and code, recorded as provenance with every label."""
        return {"method": "HF" if self.functional is None else "DFT", "functional": self.functional or "",
                "basis": self.basis, "dispersion": self.dispersion,
                "solvent": "gas" if self.solvent_eps is None else f"C-PCM eps={self.solvent_eps}",
                "density_fit": self.density_fit, "grids_level": self.grids_level, "conv_tol_Ha": self.conv_tol,
                **({} if self.solvent_eps is None else {"pcm_lebedev_order": self.pcm_lebedev_order or 29}),
                "code": self.name, "code_version": self._backend.version}

    def _molecule(self, atoms, charge: int, multiplicity: int):
        if np.any(atoms.pbc):
            raise MLFFError(f"{self.name} labels molecules and clusters; {atoms.get_chemical_formula()} is periodic")
        extra = {} if self.max_memory_mb is None else {"max_memory": self.max_memory_mb}
        try:
            return self._backend.gto.M(atom=[(int(z), tuple(p)) for z, p in zip(atoms.numbers, atoms.positions)],
                                       unit="Angstrom", basis=self.basis, charge=charge, spin=multiplicity - 1,
                                       verbose=self.verbose, **extra)
        except Exception as err:  # unknown basis / element: the same for every structure, so a user error
            raise MLFFError(f"cannot build {atoms.get_chemical_formula()} in basis {self.basis!r} "
                            f"({_one_line(err)}); expected a basis PySCF knows for every element, e.g. "
                            "'def2-svp'") from None

    def check(self, structures) -> None:
        """Refuse now, without a calculation, what would fail every label of ``structures``: a basis PySCF does
        not know (or that lacks one of their elements), an impossible charge or multiplicity, a periodic
        structure. Builds one molecule (no SCF) per distinct composition, charge and multiplicity."""
        seen = set()
        for k, atoms in enumerate(structures):
            try:
                charge, multiplicity = charge_and_multiplicity(atoms)
            except MLFFError as err:
                raise MLFFError(f"structure {k}: {err}") from None
            key = (tuple(int(z) for z in atoms.numbers), charge, multiplicity, bool(np.any(atoms.pbc)))
            if key not in seen:
                seen.add(key)
                self._molecule(atoms, charge, multiplicity)

    def _mean_field(self, mol, restricted: bool):
        scf, dft = self._backend.scf, self._backend.dft
        if self.functional is None:
            mf = scf.hf.RHF(mol) if restricted else scf.uhf.UHF(mol)
        else:
            mf = dft.rks.RKS(mol, xc=self.functional) if restricted else dft.uks.UKS(mol, xc=self.functional)
            mf.grids.level = self.grids_level
        if self.density_fit:
            mf = mf.density_fit()
        if self.solvent_eps is not None:
            mf = mf.PCM()
            mf.with_solvent.method = "C-PCM"
            mf.with_solvent.eps = self.solvent_eps
            if self.pcm_lebedev_order is not None:
                mf.with_solvent.lebedev_order = self.pcm_lebedev_order
        mf.disp = self.dispersion or None
        mf.conv_tol, mf.max_cycle, mf.verbose, mf.chkfile = self.conv_tol, self.max_cycle, self.verbose, None
        return mf

    def _scf_info(self, mf, energy_Ha: float, restricted: bool) -> dict:
        from pyscf import lib

        summary = getattr(mf, "scf_summary", {}) or {}
        # threads: labels per core-hour are wall time x threads (two one-thread labels side by side beat one two-thread)
        info = {"scf_cycles": int(getattr(mf, "cycles", -1)), "energy_Ha": energy_Ha, "threads": int(lib.num_threads())}
        for key, name in (("dispersion", "dispersion_Ha"), ("e_solvent", "solvation_Ha")):
            if _float(summary.get(key)) is not None:
                info[name] = _float(summary[key])
        if not restricted:
            info["s2"] = float(mf.spin_square()[0])
        return info

    def _nearest_density(self, key: tuple, positions: np.ndarray, mf):
        """(initial density matrix or None, how the SCF starts) for ``scf_guess``."""
        if self.scf_guess == "minao":
            return None, "minao"
        best, best_rmsd = None, np.inf
        for numbers, charge, multiplicity, kept, orbitals in self.kept_orbitals:
            if (numbers, charge, multiplicity) == key:
                rmsd = float(np.sqrt(np.mean(np.sum((kept - positions) ** 2, axis=1))))
                if rmsd < best_rmsd:
                    best, best_rmsd = orbitals, rmsd
        if best is None or best_rmsd > self.guess_max_rmsd:
            return None, f"minao (no labelled geometry within {self.guess_max_rmsd:g} Å)"
        dm = _projected_density(_numpy(mf.get_ovlp()), *best)
        if self.device == "gpu":
            import cupy

            dm = cupy.asarray(dm)
        return dm, f"nearest (RMSD {best_rmsd:.3f} Å)"

    def _keep_density(self, key: tuple, positions: np.ndarray, mf) -> None:
        if self.scf_guess == "nearest":  # the last few converged orbitals: a campaign moves on
            orbitals = (_numpy(mf.mo_coeff), _numpy(mf.mo_occ))
            kept = (*key, np.array(positions, dtype=float), orbitals)
            self.kept_orbitals = [*self.kept_orbitals[-(_KEPT_DENSITIES - 1):], kept]

    def compute(self, atoms) -> LabelResult:
        """Energy (eV) and, with ``forces=True``, forces (eV/Å) of ``atoms``; failures returned, not raised."""
        start = time.perf_counter()
        charge, multiplicity = charge_and_multiplicity(atoms)
        restricted = multiplicity == 1
        mf = self._mean_field(self._molecule(atoms, charge, multiplicity), restricted)
        trace = _SCFTrace()
        mf.callback = trace

        def failed(reason: str, info: dict | None = None) -> LabelResult:
            return LabelResult(None, None, False, reason, time.perf_counter() - start, info or {})

        key = (tuple(int(z) for z in atoms.numbers), charge, multiplicity)
        dm0, guess = self._nearest_density(key, atoms.positions, mf)
        try:
            energy_Ha = float(mf.kernel(dm0=dm0))
        except Exception as err:  # anything raised inside PySCF is this structure's failure
            return failed(f"SCF failed: {_one_line(err)}")
        info = {**self._scf_info(mf, energy_Ha, restricted), "scf_guess": guess}
        if not mf.converged:
            dE = "n/a" if trace.last_dE_Ha is None else f"{trace.last_dE_Ha:.1e} Ha"
            cycles = info["scf_cycles"]
            return failed(f"SCF not converged after {cycles} cycle{'' if cycles == 1 else 's'} (last dE={dE})", info)
        if not np.isfinite(energy_Ha):
            return failed(f"SCF energy is not finite ({energy_Ha})", info)
        self._keep_density(key, atoms.positions, mf)
        forces_eV_A = None
        if self.forces:
            try:
                gradient_Ha_Bohr = _numpy(mf.nuc_grad_method().kernel())
            except Exception as err:  # as above: a failure of this structure inside PySCF
                return failed(f"gradient failed: {_one_line(err)}", info)
            if gradient_Ha_Bohr.shape != (len(atoms), 3) or not np.all(np.isfinite(gradient_Ha_Bohr)):
                return failed(f"gradient is not finite or has shape {gradient_Ha_Bohr.shape}", info)
            forces_eV_A = -gradient_Ha_Bohr * (Hartree / Bohr)
        return LabelResult(energy_Ha * Hartree, forces_eV_A, True, "", time.perf_counter() - start, info)
