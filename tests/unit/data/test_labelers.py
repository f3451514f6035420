"""DFT labellers: PySCF against PySCF called directly, forces against finite differences, D3(BJ) and C-PCM
included, failures recorded (not raised), ASE calculators wrapped, and GPU4PySCF against the CPU reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import CalculationFailed, Calculator, all_changes
from ase.calculators.emt import EMT
from ase.units import Bohr, Hartree

from mlff.data.labelers import ASELabeler, LabelResult, PySCFLabeler, make_labeler
from mlff.errors import MLFFError

pytest.importorskip("pyscf")
pytest.importorskip("pyscf.dispersion")

HA_PER_BOHR = Hartree / Bohr  # eV/Å in one Hartree/Bohr
GAS_HF = dict(functional=None, basis="sto-3g", dispersion=None, solvent_eps=None, density_fit=False)


@pytest.fixture()
def water() -> Atoms:
    atoms = molecule("H2O")
    atoms.rattle(0.03, seed=1)  # no symmetry: every force component non-trivial
    return atoms


@pytest.fixture()
def hydroxide() -> Atoms:
    atoms = Atoms("OH", positions=[[0.0, 0.0, 0.0], [0.1, 0.05, 0.99]])
    atoms.info["charge"] = -1
    return atoms


def _direct_pyscf(atoms, xc, basis, density_fit, grids_level):
    """Energy (Ha) and gradient (Ha/Bohr) from PySCF itself, the reference the labeller must reproduce."""
    from pyscf import dft, gto, scf

    mol = gto.M(atom=[(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
                unit="Angstrom", basis=basis, verbose=0)
    mf = scf.RHF(mol) if xc is None else dft.RKS(mol, xc=xc)
    if xc is not None:
        mf.grids.level = grids_level
    if density_fit:
        mf = mf.density_fit()
    mf.conv_tol = 1e-10
    energy = mf.kernel()
    return energy, mf.nuc_grad_method().kernel()


@pytest.mark.parametrize("xc, density_fit", [(None, False), ("pbe", True)])
def test_pyscf_labeler_matches_pyscf_called_directly(water, xc, density_fit):
    labeler = PySCFLabeler(functional=xc, basis="sto-3g", dispersion=None, solvent_eps=None,
                           density_fit=density_fit, grids_level=1, conv_tol=1e-10)
    result = labeler.compute(water)
    energy_Ha, gradient_Ha_Bohr = _direct_pyscf(water, xc, "sto-3g", density_fit, grids_level=1)
    assert result.converged and result.reason == ""
    assert abs(result.energy_eV / Hartree - energy_Ha) < 1e-8
    assert np.abs(-result.forces_eV_A / HA_PER_BOHR - gradient_Ha_Bohr).max() < 1e-6
    assert result.info["energy_Ha"] == pytest.approx(energy_Ha, abs=1e-8) and result.info["scf_cycles"] > 0
    assert result.wall_s > 0
    level = labeler.level()
    assert level["method"] == ("HF" if xc is None else "DFT") and level["code"] == "pyscf"
    assert level["solvent"] == "gas" and level["dispersion"] == "" and json.dumps(level)


def _fd_errors_Ha_Bohr(options: dict, atoms, components, step_A=5e-4):
    """|analytic - central-difference force| for (atom, axis) components of PySCFLabeler(**options), Ha/Bohr."""
    forces = PySCFLabeler(**options).compute(atoms).forces_eV_A
    energy_only = PySCFLabeler(**{**options, "forces": False})
    errors = []
    for i, axis in components:
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[i, axis] += sign * step_A
            energies.append(energy_only.compute(moved).energy_eV)
        fd_force = -(energies[0] - energies[1]) / (2 * step_A)
        errors.append(abs(fd_force - forces[i, axis]) / HA_PER_BOHR)
    return np.array(errors)


def test_forces_are_minus_the_energy_gradient(water):
    # HF-D3(BJ): the dispersion gradient is checked too. Measured error 1.4e-7 Ha/Bohr with a tight SCF
    # (the h^2 truncation of the central difference at h = 5e-4 Å); 1e-6 leaves room, a wrong sign or unit fails.
    options = {**GAS_HF, "dispersion": "d3bj", "conv_tol": 1e-11}
    components = [(i, axis) for i in range(3) for axis in range(3)]
    assert _fd_errors_Ha_Bohr(options, water, components).max() < 1e-6


def test_cpcm_lowers_an_anion_and_its_forces_stay_consistent(hydroxide):
    gas = PySCFLabeler(**{**GAS_HF, "basis": "3-21g", "forces": False}).compute(hydroxide)
    options = {**GAS_HF, "basis": "3-21g", "solvent_eps": 4.0, "conv_tol": 1e-11}
    pcm = PySCFLabeler(**options)
    solvated = pcm.compute(hydroxide)
    shift_Ha = (solvated.energy_eV - gas.energy_eV) / Hartree
    # Born estimate for a unit charge in a ~1.7 Å cavity at eps = 4: -(1 - 1/4) / (2 * 3.2 Bohr) = -0.12 Ha
    assert -0.2 < shift_Ha < -0.05
    assert solvated.info["solvation_Ha"] < 0 and pcm.level()["solvent"] == "C-PCM eps=4.0"
    # The continuum enters the gradient: PySCF's C-PCM switches surface points on smoothly, so the
    # gradient stays consistent with the energy (measured 2e-7 Ha/Bohr, as in the gas phase); the
    # looser 2e-6 allows for the surface discretisation on other geometries.
    errors = _fd_errors_Ha_Bohr(options, hydroxide, [(0, 0), (1, 1), (1, 2)])
    assert errors.max() < 2e-6
    assert np.abs(solvated.forces_eV_A.sum(axis=0)).max() < 1e-4  # no net force on an isolated ion


def test_d3bj_dispersion_is_added_to_energy_and_forces(water):
    from pyscf import gto
    from pyscf.dispersion import dftd3

    options = dict(functional="b3lyp", basis="sto-3g", solvent_eps=None, grids_level=1, conv_tol=1e-10)
    plain = PySCFLabeler(**options, dispersion=None).compute(water)
    with_d3 = PySCFLabeler(**options, dispersion="d3bj").compute(water)
    mol = gto.M(atom=[(s, tuple(p)) for s, p in zip(water.get_chemical_symbols(), water.positions)],
                unit="Angstrom", basis="sto-3g", verbose=0)
    d3 = dftd3.DFTD3Dispersion(mol, xc="b3lyp", version="d3bj").get_dispersion(grad=True)
    assert d3["energy"] < 0
    assert abs((with_d3.energy_eV - plain.energy_eV) / Hartree - d3["energy"]) < 1e-9
    assert with_d3.info["dispersion_Ha"] == pytest.approx(d3["energy"], abs=1e-12)
    force_shift = (with_d3.forces_eV_A - plain.forces_eV_A) / HA_PER_BOHR
    assert np.abs(force_shift + d3["gradient"]).max() < 1e-8


def test_unconverged_scf_is_a_recorded_failure(water):
    result = PySCFLabeler(**GAS_HF, max_cycle=1).compute(water)
    assert isinstance(result, LabelResult) and not result.converged
    assert result.energy_eV is None and result.forces_eV_A is None
    assert result.reason.startswith("SCF not converged after 1 cycle") and "dE=" in result.reason


def test_an_exception_inside_pyscf_is_a_recorded_failure(water, monkeypatch):
    class Exploding:  # stands in for a PySCF SCF object whose kernel fails (e.g. a CUDA or linear-algebra error)
        def kernel(self, dm0=None):
            raise RuntimeError("linear dependency in the basis\nfull traceback text")

    labeler = PySCFLabeler(**GAS_HF)
    monkeypatch.setattr(labeler, "_mean_field", lambda mol, restricted: Exploding())
    result = labeler.compute(water)
    assert not result.converged and result.energy_eV is None
    assert result.reason == "SCF failed: RuntimeError: linear dependency in the basis"


def test_radical_uses_unrestricted_kohn_sham():
    radical = Atoms("OH", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 0.97]], info={"multiplicity": 2})
    # the default grid (level 3): without grid response a coarse grid breaks translational invariance
    result = PySCFLabeler(functional="pbe", basis="sto-3g", solvent_eps=None).compute(radical)
    assert result.converged
    assert result.info["s2"] == pytest.approx(0.75, abs=0.01)  # a doublet, little spin contamination
    assert np.abs(result.forces_eV_A.sum(axis=0)).max() < 1e-3  # translational invariance
    assert abs(result.forces_eV_A[0, 2]) > 0.1 and np.abs(result.forces_eV_A[:, :2]).max() < 1e-6


@pytest.mark.filterwarnings("ignore:Basis may be available")
def test_configuration_errors_raise(water):
    water.info["multiplicity"] = 2  # 10 electrons cannot be a doublet
    with pytest.raises(MLFFError, match="multiplicity 2 impossible"):
        PySCFLabeler(**GAS_HF).compute(water)
    water.info["multiplicity"] = 1
    with pytest.raises(MLFFError, match="basis 'no-such-basis'"):
        PySCFLabeler(**{**GAS_HF, "basis": "no-such-basis"}).compute(water)
    with pytest.raises(MLFFError, match="unknown functional"):
        PySCFLabeler(functional="not-a-functional")
    with pytest.raises(MLFFError, match="dispersion"):
        PySCFLabeler(functional="b3lyp-d3bj")
    with pytest.raises(MLFFError, match="solvent_eps"):
        PySCFLabeler(solvent_eps=0.5)
    with pytest.raises(MLFFError, match="periodic"):
        PySCFLabeler(**GAS_HF).compute(Atoms(water, cell=[8.0, 8.0, 8.0], pbc=True))


def test_make_labeler_builds_from_plain_dicts():
    labeler = make_labeler({"backend": "pyscf", "functional": "hf", "basis": "sto-3g", "solvent_eps": None,
                            "forces": False})
    assert isinstance(labeler, PySCFLabeler) and labeler.level()["method"] == "HF" and not labeler.forces
    with pytest.raises(MLFFError, match="'grid'"):
        make_labeler({"backend": "pyscf", "grid": 3})
    with pytest.raises(MLFFError, match="backend"):
        make_labeler({"functional": "b3lyp"})
    with pytest.raises(MLFFError, match="only calculator 'emt'"):
        make_labeler({"backend": "ase", "calculator": "orca"})
    try:
        import gpu4pyscf  # noqa: F401
    except ImportError:
        with pytest.raises(MLFFError, match=r"mlff\[dft-gpu\]"):
            make_labeler({"backend": "gpu4pyscf"})


def test_ase_labeler_matches_the_calculator_directly():
    atoms = bulk("Cu", cubic=True).repeat(2)
    atoms.rattle(0.05, seed=2)
    labeler = make_labeler({"backend": "ase", "calculator": "emt"})
    result = labeler.compute(atoms)
    reference = atoms.copy()
    reference.calc = EMT()
    assert result.converged and atoms.calc is None  # computed on a copy
    assert result.energy_eV == pytest.approx(reference.get_potential_energy(), abs=1e-10)
    np.testing.assert_allclose(result.forces_eV_A, reference.get_forces(), atol=1e-10)
    assert np.abs(result.forces_eV_A).max() > 0.01
    level = labeler.level()
    assert level["method"] == "EMT" and level["basis"] == "" and level["code"] == "ase"


class _Broken(Calculator):
    implemented_properties = ["energy", "forces"]

    def __init__(self, value=None):
        super().__init__()
        self.value = value

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if self.value is None:
            raise CalculationFailed("SCF did not converge in 50 iterations\nmore detail")
        self.results = {"energy": self.value, "forces": np.zeros((len(atoms), 3))}


def test_ase_calculator_errors_and_nan_are_recorded_failures():
    atoms = molecule("H2O")
    raising = ASELabeler(lambda a: _Broken(), name="broken", level={"method": "DFT", "code": "fake"})
    result = raising.compute(atoms)
    assert not result.converged and result.energy_eV is None
    assert result.reason == "CalculationFailed: SCF did not converge in 50 iterations"
    nan = ASELabeler(lambda a: _Broken(float("nan")), level={"method": "DFT"}).compute(atoms)
    assert not nan.converged and "not finite" in nan.reason
    with pytest.raises(MLFFError, match="level"):
        ASELabeler(lambda a: EMT(), level="DFT")


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu4pyscf_matches_pyscf_on_the_cpu(cluster):
    pytest.importorskip("gpu4pyscf")
    try:
        from mlff.data.cluster import build_cluster

        atoms = build_cluster("small", "reactant")
    except ImportError:
        atoms = cluster  # the 28-atom H-bonded cluster of tests/conftest.py
    options = dict(functional="b3lyp", basis="def2-svp", dispersion="d3bj", solvent_eps=4.0)
    gpu = PySCFLabeler(**options, device="gpu").compute(atoms)
    cpu = PySCFLabeler(**options, device="cpu").compute(atoms)
    assert gpu.converged and cpu.converged
    assert abs(gpu.energy_eV - cpu.energy_eV) / Hartree < 1e-5
    assert np.abs(gpu.forces_eV_A - cpu.forces_eV_A).max() / HA_PER_BOHR < 1e-4
    assert make_labeler({"backend": "gpu4pyscf"}).level()["code"] == "gpu4pyscf"
