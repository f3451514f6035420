"""One geometry check (mlff.geometry) before the first step: MD (both engines), the ASE calculator and the
data validator refuse the same broken structures with the same one-line message; sound structures pass,
and the overlap test finds exactly the pairs closer than 0.5 Å, across periodic boundaries too."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from mlff.calculator import MLFFCalculator
from mlff.data.records import validate
from mlff.errors import MLFFError
from mlff.geometry import MIN_DISTANCE_A, check_geometry, geometry_problem
from mlff.md import load_md_config
from mlff.md.engines import AseEngine, BatchEngine


def _water_pair() -> Atoms:
    a, b = molecule("H2O"), molecule("H2O")
    b.translate((2.9, 0.0, 0.0))
    return a + b


def _broken(kind: str) -> Atoms:
    atoms = _water_pair()
    if kind == "empty":
        return Atoms()
    if kind == "nan position":
        atoms.positions[2, 1] = np.nan
    elif kind == "inf cell":
        atoms.cell = [[np.inf, 0, 0], [0, 10, 0], [0, 0, 10]]
        atoms.pbc = True
    elif kind == "zero cell":
        atoms.pbc = True  # periodic, but molecule() leaves the cell all zeros
    elif kind == "flat cell":
        atoms.cell = [[10, 0, 0], [0, 10, 0], [5, 5, 0]]  # third vector in the plane of the first two
        atoms.pbc = True
    elif kind == "overlap":
        atoms.positions[4] = atoms.positions[1] + [0.2, 0.1, 0.0]
    elif kind == "same position":
        atoms.positions[3] = atoms.positions[0]
    elif kind == "overlap across the boundary":
        atoms.cell, atoms.pbc = [[6.0, 0, 0], [0.5, 8.0, 0], [0.3, 0.2, 8.0]], True  # triclinic
        atoms.positions[3] = atoms.positions[0] + atoms.cell[0] + [0.3, 0, 0]
    elif kind == "own periodic image":
        atoms = Atoms("H", positions=[[0.1, 0.1, 0.1]], cell=[0.4, 5.0, 5.0], pbc=True)
    return atoms


BROKEN = {
    "empty": "no atoms",
    "nan position": "positions contain NaN or inf (atom 2)",
    "inf cell": "cell contains NaN or inf",
    "zero cell": "the periodic cell has no volume",
    "flat cell": "are zero or linearly dependent",
    "overlap": "atoms 1 and 4 overlap (0.224 Å apart, minimum 0.5 Å)",
    "same position": "atoms 0 and 3 overlap (0.000 Å apart",
    "overlap across the boundary": "atoms 0 and 3 overlap (0.300 Å apart",
    "own periodic image": "atom 0 overlaps its own periodic image (0.400 Å apart",
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_md_calculator_and_validator_refuse_the_same_structures(kind, small_potential):
    atoms, message = _broken(kind), BROKEN[kind]
    problem = geometry_problem(atoms.positions, atoms.cell.array, atoms.pbc)
    assert problem is not None and message in problem and "\n" not in problem
    with pytest.raises(MLFFError, match=r"^record 7: ") as caught:
        validate(atoms, "record 7", require=())
    assert str(caught.value) == f"record 7: {problem}"
    atoms.calc = MLFFCalculator(small_potential, device="cpu")
    with pytest.raises(MLFFError) as caught:
        atoms.get_potential_energy()  # refused, not a NaN energy
    assert str(caught.value) == f"MLFFCalculator: {problem}"
    for engine, cls in (("gpu", BatchEngine), ("ase", AseEngine)):
        config = load_md_config({"structure": "start.xyz", "engine": engine, "device": "cpu", "dtype": "float64"})
        with pytest.raises(MLFFError) as caught:
            cls(config, atoms, small_potential)
        assert str(caught.value) == f"structure start.xyz: {problem}"


def test_sound_structures_pass(cluster, periodic_box, small_potential):
    for atoms in (cluster, periodic_box, _water_pair(), Atoms("H", positions=[[0, 0, 0]])):
        assert geometry_problem(atoms.positions, atoms.cell.array, atoms.pbc) is None
    slab = _water_pair()
    slab.cell, slab.pbc = [[8.0, 0, 0], [0, 8.0, 0], [0, 0, 0]], [True, True, False]  # 2D periodic: no c vector
    check_geometry(slab)
    cluster.calc = MLFFCalculator(small_potential, device="cpu")
    assert np.isfinite(cluster.get_potential_energy())


@pytest.mark.parametrize("cell", ["open", "orthorhombic", "triclinic", "slab"])
def test_the_closest_pair_is_the_minimum_image_distance(cell):
    """Random gas of 20 atoms, some pairs closer than 0.5 Å: the reported pair and distance are ASE's
    minimum-image closest pair, across faces, edges and corners of the cell."""
    rng = np.random.default_rng({"open": 0, "orthorhombic": 1, "triclinic": 2, "slab": 3}[cell])
    box = {"open": np.diag([6.0, 6.0, 6.0]), "orthorhombic": np.diag([5.0, 6.0, 7.0]),
           "triclinic": np.array([[6.0, 0, 0], [1.5, 5.5, 0], [-1.0, 0.8, 6.2]]),
           "slab": np.array([[6.0, 0, 0], [2.0, 5.5, 0], [0, 0, 6.0]])}[cell]
    pbc = {"open": False, "slab": [True, True, False]}.get(cell, True)
    found = 0
    for trial in range(16):
        atoms = Atoms("H" * 20, scaled_positions=rng.random((20, 3)), cell=box, pbc=pbc)
        if cell != "open":
            atoms.positions += rng.normal(0, 4.0, 3)  # positions outside the cell are fine
        d = atoms.get_all_distances(mic=cell != "open")
        d[np.tril_indices(len(atoms))] = np.inf
        a, b = np.unravel_index(np.argmin(d), d.shape)
        problem = geometry_problem(atoms.positions, atoms.cell.array, atoms.pbc)
        if d[a, b] < MIN_DISTANCE_A:
            found += 1
            assert problem == f"atoms {a} and {b} overlap ({d[a, b]:.3f} Å apart, minimum {MIN_DISTANCE_A} Å)"
        else:
            assert problem is None
    assert 0 < found < 16  # both outcomes exercised


def test_a_corner_image_is_found():
    """Two atoms near opposite corners of a skewed cell: they touch only through the (+1, +1, +1) image."""
    cell = np.array([[5.0, 0, 0], [1.0, 5.0, 0], [0.5, 0.5, 5.0]])
    atoms = Atoms("H2", scaled_positions=[[0.01, 0.01, 0.01], [0.98, 0.99, 0.985]], cell=cell, pbc=True)
    expected = atoms.get_distance(0, 1, mic=True)
    assert expected < 0.5 < atoms.get_distance(0, 1)
    assert geometry_problem(atoms.positions, cell, True) == (f"atoms 0 and 1 overlap ({expected:.3f} Å apart, "
                                                            f"minimum 0.5 Å)")


def test_the_calculator_checks_every_call(small_potential):
    """An optimiser or MD step that moves two atoms onto each other is refused at the next force call."""
    atoms = _water_pair()
    atoms.calc = MLFFCalculator(small_potential, device="cpu")
    atoms.get_forces()
    atoms.positions[3] = atoms.positions[0] + [0.1, 0, 0]
    with pytest.raises(MLFFError, match="atoms 0 and 3 overlap"):
        atoms.get_forces()
