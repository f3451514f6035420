"""The FDH active-site cluster: the shipped geometries are relaxed GFN2-xTB minima with the designed chemistry."""

import numpy as np
import pytest
from ase.constraints import FixAtoms

from mlff.data.cluster import SIZES, STATES, build_cluster, isolated_atoms, load_cluster, reaction_coordinate
from mlff.errors import MLFFError

pytest.importorskip("tblite")

FORMULAS = {"small": "C10H20N5O4", "medium": "C16H31N8O5", "large": "C24H51N10O7"}  # 39, 60, 92 atoms


def _xtb_forces(atoms):
    from mlff.data.sampling import xtb_calculator

    atoms = atoms.copy()
    atoms.calc = xtb_calculator(atoms)
    return atoms.get_forces(apply_constraint=False)


@pytest.mark.parametrize("size", SIZES)
def test_shipped_reactant_has_the_designed_chemistry(size):
    atoms = load_cluster(size, "reactant")
    assert atoms.get_chemical_formula(mode="hill") == FORMULAS[size]
    assert (atoms.info["charge"], atoms.info["multiplicity"]) == (1, 1)  # formate-, NAD+ model+, Arg+
    c, h, c4 = atoms.info["xi_atoms"]
    assert atoms.get_distance(c, h) == pytest.approx(1.11, abs=0.04)  # formate C-H intact
    assert 2.0 < atoms.get_distance(h, c4) < 3.0  # hydride poised over C4
    assert -1.8 < reaction_coordinate(atoms) < -0.9
    for hydrogen, acceptor in atoms.info["hbonds"]:  # every imposed H-bond to formate survives relaxation
        assert atoms.get_distance(int(hydrogen), int(acceptor)) < 2.3, (hydrogen, acceptor)
    fixed = [c for c in atoms.constraints if isinstance(c, FixAtoms)]
    assert fixed and sorted(fixed[0].index.tolist()) == atoms.info["fixed"]
    assert set(atoms.numbers[atoms.info["fixed"]]) == {1, 6}  # the caps: methyl C and their H


@pytest.mark.parametrize("size", ["small", "medium"])
def test_shipped_clusters_are_minima_of_xtb_with_the_caps_fixed(size):
    for state in STATES:
        atoms = load_cluster(size, state)
        forces = _xtb_forces(atoms)
        free = np.setdiff1d(np.arange(len(atoms)), atoms.info["fixed"])
        assert np.linalg.norm(forces[free], axis=1).max() < 0.05, state  # relaxed to fmax 0.03 eV/Å
        assert np.linalg.norm(forces[atoms.info["fixed"]], axis=1).max() > 0.05  # caps held, not relaxed


def test_product_has_the_hydride_on_c4_and_neutral_co2():
    reactant, product = load_cluster("small", "reactant"), load_cluster("small", "product")
    assert (product.numbers == reactant.numbers).all() and product.info["xi_atoms"] == reactant.info["xi_atoms"]
    c, h, c4 = product.info["xi_atoms"]
    assert product.get_distance(h, c4) == pytest.approx(1.11, abs=0.04)
    assert reaction_coordinate(product) > 0.9
    o1, o2 = 1, 2
    assert product.get_angle(o1, c, o2) > 170  # CO2 is linear once the hydride has left
    np.testing.assert_allclose(product.positions[product.info["fixed"]], reactant.positions[reactant.info["fixed"]])


@pytest.mark.slow
def test_build_cluster_relaxes_the_small_reactant_from_scratch():
    pytest.importorskip("rdkit")
    atoms = build_cluster("small", "reactant", seed=0)
    shipped = load_cluster("small", "reactant")
    assert atoms.get_chemical_formula() == shipped.get_chemical_formula()
    assert atoms.info["fixed"] == shipped.info["fixed"] and atoms.info["xi_atoms"] == shipped.info["xi_atoms"]
    assert reaction_coordinate(atoms) == pytest.approx(reaction_coordinate(shipped), abs=0.1)


def test_isolated_atoms_have_ground_state_multiplicities():
    atoms = isolated_atoms()
    assert {s: a.info["multiplicity"] for s, a in atoms.items()} == {"H": 2, "C": 3, "N": 4, "O": 3}


def test_clear_errors():
    with pytest.raises(MLFFError, match="cluster size 'huge' unknown"):
        load_cluster("huge")
    with pytest.raises(MLFFError, match="cluster state 'ts' unknown"):
        build_cluster("small", "ts")
    with pytest.raises(MLFFError, match="no info\\['xi_atoms'\\]"):
        from ase.build import molecule

        reaction_coordinate(molecule("H2O"))
