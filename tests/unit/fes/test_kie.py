"""The semiclassical KIE against textbook numbers: wavenumbers from a Hessian, the C-H stretch lost at the TS
(KIE ~ 8 at 300 K from zero-point energy alone), Wigner and Bell corrections, and the checks that refuse a
'transition state' without exactly one imaginary mode."""

import math

import numpy as np
import pytest

from mlff.errors import MLFFError
from mlff.fes.kie import bell, harmonic_frequencies, kie_from_frequencies, semiclassical_kie, wigner

C2_CM_K = 1.438776877  # second radiation constant h c / k_B (CODATA 2018), cm K


def test_wavenumbers_of_a_spring_and_of_a_free_diatomic():
    assert harmonic_frequencies(np.eye(3), np.ones(1))[0] == pytest.approx(521.47, rel=1e-4)  # 1 eV/Å^2, 1 amu
    k, m1, m2 = 30.0, 12.0, 1.008  # a C-H bond along x, free in space
    h = np.zeros((6, 6))
    h[0, 0] = h[3, 3] = k
    h[0, 3] = h[3, 0] = -k
    positions = np.array([[0.0, 0.0, 0.0], [1.09, 0.0, 0.0]])
    w = harmonic_frequencies(h, np.array([m1, m2]), positions=positions, rigid=True)
    assert len(w) == 1  # 5 rigid-body modes of a linear molecule projected out
    assert w[0] == pytest.approx(521.47 * math.sqrt(k * (m1 + m2) / (m1 * m2)), rel=1e-4)
    with pytest.raises(MLFFError, match="does not fit"):
        harmonic_frequencies(np.eye(4), np.ones(2))


def test_a_stretch_lost_at_the_transition_state_gives_the_textbook_zero_point_kie():
    nu_h = 3000.0
    nu_d = nu_h / math.sqrt(2.0)  # a heavy partner: the reduced mass doubles
    reactant = {"H": [nu_h, 1500.0], "D": [nu_d, 1500.0]}
    ts = {"H": [-1200.0, 1500.0], "D": [-1200.0 / math.sqrt(2.0), 1500.0]}
    out = kie_from_frequencies(reactant, ts, 300.0)
    zpe = math.exp(C2_CM_K * (nu_h - nu_d) / (2 * 300.0))
    # the infinitely heavy partner's limit, 8.2 at 300 K (real C-H / C-D ratios, ~1.35, give the textbook ~7)
    assert out["kie"] == pytest.approx(zpe, rel=1e-3) and 8.0 < out["kie"] < 8.5
    assert out["kie_zpe_only"] == pytest.approx(zpe, rel=1e-5)  # ASE's CODATA vs 2018 in the 7th digit
    assert out["kie_wigner"] > out["kie"] and out["kie_bell"] > out["kie_wigner"]  # H tunnels more than D
    u = C2_CM_K * 1200.0 / 300.0
    assert out["wigner_H"] == pytest.approx(1 + u * u / 24, rel=1e-5)


def test_tunnelling_corrections_at_known_points():
    u = C2_CM_K * 1000.0 / 300.0
    assert wigner(-1000.0, 300.0) == pytest.approx(1 + u * u / 24, rel=1e-5)
    assert bell(1000.0, 300.0) == pytest.approx((u / 2) / math.sin(u / 2), rel=1e-5)
    assert bell(10.0, 300.0) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(MLFFError, match="deep tunnelling"):
        bell(2000.0, 300.0)


def test_a_transition_state_needs_exactly_one_imaginary_mode_and_a_reactant_none():
    with pytest.raises(MLFFError, match="exactly one imaginary frequency.*none"):
        kie_from_frequencies({"H": [3000.0], "D": [2121.0]}, {"H": [1000.0], "D": [707.0]}, 300.0)
    with pytest.raises(MLFFError, match=r"reactant \(H\): not a minimum"):
        kie_from_frequencies({"H": [-300.0, 3000.0], "D": [-212.0, 2121.0]}, {"H": [-1000.0], "D": [-707.0]}, 300.0)


def test_semiclassical_kie_refuses_a_structure_that_is_no_transition_state(committee_potential):
    from ase.build import molecule

    atoms = molecule("HCOOH")
    with pytest.raises(MLFFError, match="not H"):
        semiclassical_kie(committee_potential, atoms, atoms, isotope=0)
    hydrogen = [a.index for a in atoms if a.symbol == "H"][0]
    with pytest.raises(MLFFError, match="imaginary"):
        semiclassical_kie(committee_potential, atoms, atoms, isotope=hydrogen)


class _Well(__import__("ase.calculators.calculator", fromlist=["Calculator"]).Calculator):
    """One atom in V = a (x^2 - 1)^2 + b y^2 + c z^2 (eV, Å): minima at x = +-1, a saddle at the origin."""

    implemented_properties = ["energy", "forces"]
    a, b, c = 0.5, 2.0, 3.0

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        super().calculate(atoms, properties, system_changes)
        x, y, z = self.atoms.positions[0]
        self.results["energy"] = self.a * (x * x - 1) ** 2 + self.b * y * y + self.c * z * z
        self.results["forces"] = -np.array([[4 * self.a * x * (x * x - 1), 2 * self.b * y, 2 * self.c * z]])


def test_minimise_and_saddle_find_the_stationary_points_of_a_double_well():
    from ase import Atoms

    from mlff.fes.kie import minimise, saddle

    atoms = Atoms("H", positions=[[0.7, 0.2, -0.1]])
    atoms.calc = _Well()
    minimise(atoms, fmax=1e-4)
    assert np.allclose(atoms.positions[0], [1.0, 0.0, 0.0], atol=1e-3)
    atoms = Atoms("H", positions=[[0.15, 0.1, 0.05]])
    atoms.calc = _Well()
    out = saddle(atoms, np.array([[1.0, 0.0, 0.0]]), fmax=1e-4)
    assert np.allclose(atoms.positions[0], 0.0, atol=1e-3) and out["curvature"] < 0
    # the saddle's Hessian has one negative eigenvalue, -4a along x
    w = harmonic_frequencies(np.diag([-4 * _Well.a, 2 * _Well.b, 2 * _Well.c]), np.ones(1))
    assert (w < 0).sum() == 1
