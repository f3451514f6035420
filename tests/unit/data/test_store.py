"""The HDF5 dataset store: round trips keeping every field, validation, atomic appends, splits."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms

from mlff.data import Dataset, KeyMap, make_record, read_structures, write_db, write_extxyz
from mlff.data.records import labels
from mlff.errors import MLFFError


def _record(k: int, *, stress: bool = False) -> Atoms:
    rng = np.random.default_rng(k)
    atoms = molecule("CH3CH2OH")
    atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
    if stress:
        atoms.cell, atoms.pbc = np.eye(3) * 9 + rng.normal(0, 0.1, (3, 3)), True
    atoms.set_constraint(FixAtoms(indices=[0, 1]))
    atoms.calc = EMT()
    extra = {"stress": atoms.get_stress()} if stress else {}
    return make_record(atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces(), **extra,
                       charge=k % 2 * 2 - 1 if k % 3 == 0 else 0, multiplicity=1 if k % 3 else 1,
                       xi=float(-1.4 + 0.3 * k), tags=["reactant" if k < 5 else "ts"], source=f"test {k}",
                       provenance={"method": "EMT", "wall_s": 0.1 * k})


@pytest.fixture
def records():
    return [_record(k, stress=k % 2 == 1) for k in range(8)]


def _assert_same(a: Atoms, b: Atoms, atol: float = 1e-12):
    np.testing.assert_array_equal(a.numbers, b.numbers)
    np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=atol)
    np.testing.assert_allclose(a.cell.array, b.cell.array, rtol=0, atol=atol)
    np.testing.assert_array_equal(a.pbc, b.pbc)
    la, lb = labels(a), labels(b)
    assert la.keys() == lb.keys()
    for key in la:
        np.testing.assert_allclose(la[key], lb[key], rtol=0, atol=atol)
    for key in ("charge", "multiplicity", "xi", "tags", "source", "provenance"):
        assert a.info[key] == pytest.approx(b.info[key]) if key == "xi" else a.info[key] == b.info[key], key
    assert [list(c.index) for c in a.constraints] == [list(c.index) for c in b.constraints]


def test_hdf5_round_trip_keeps_every_field(tmp_path, records):
    ds = Dataset.create(tmp_path / "d.h5")
    assert ds.append(records[:3]) == 3 and ds.append(records[3:]) == 8
    back = Dataset(tmp_path / "d.h5").read()
    for a, b in zip(records, back):
        _assert_same(a, b)
    assert ds.read([-1])[0].info["source"] == "test 7"


@pytest.mark.parametrize("keys", [KeyMap(), KeyMap(energy="DFT_energy", forces="DFT_forces", stress="DFT_stress")])
def test_extxyz_to_hdf5_and_back(tmp_path, records, keys):
    write_extxyz(tmp_path / "a.xyz", records, keys=keys)
    ds = Dataset.create(tmp_path / "d.h5")
    ds.append(read_structures(tmp_path / "a.xyz", keys=keys))
    write_extxyz(tmp_path / "b.xyz", ds.read(), keys=keys)
    for a, b in zip(records, read_structures(tmp_path / "b.xyz", keys=keys)):
        _assert_same(a, b, atol=1e-7)  # extxyz writes 8 decimals
    text = (tmp_path / "b.xyz").read_text()
    assert keys.energy in text and keys.forces in text  # what mace-torch's --energy_key/--forces_key read


def test_ase_db_round_trip(tmp_path, records):
    write_db(tmp_path / "a.db", records)
    for a, b in zip(records, read_structures(tmp_path / "a.db")):
        _assert_same(a, b)


def test_plain_ase_outputs_read_through_the_calculator(tmp_path):
    from ase.io import write

    atoms = molecule("H2O")
    atoms.calc = EMT()
    atoms.get_forces()
    write(tmp_path / "plain.traj", atoms)  # what a DFT code's ASE reader gives: a calculator with results
    (back,) = read_structures(tmp_path / "plain.traj")
    assert back.get_potential_energy() == pytest.approx(atoms.get_potential_energy())


def _bad(kind: str) -> Atoms:
    atoms = _record(1)
    e, f = labels(atoms)["energy"], labels(atoms)["forces"]
    if kind == "nan forces":
        f = f.copy()
        f[2, 1] = np.nan
    elif kind == "inf energy":
        e = np.inf
    elif kind == "missing forces":
        f = None
    elif kind == "misshaped forces":
        f = f[:-1]
    elif kind == "overlap":
        atoms.positions[3] = atoms.positions[4] + 0.1
    elif kind == "unknown element":
        atoms.numbers[0] = 0
    elif kind == "nan position":
        atoms.positions[0, 0] = np.nan
    atoms.calc = None
    return make_record(atoms, energy=e, forces=f)


@pytest.mark.parametrize("kind, message", [
    ("nan forces", "forces contain NaN"), ("inf energy", "energy is inf"), ("missing forces", "no forces"),
    ("misshaped forces", "forces have shape (8, 3), expected (9, 3)"), ("overlap", "atoms 3 and 4 overlap"),
    ("unknown element", "unknown atomic number"), ("nan position", "positions contain NaN")])
def test_validation_rejects_bad_records_and_writes_nothing(tmp_path, records, kind, message):
    ds = Dataset.create(tmp_path / "d.h5")
    ds.append(records[:2])
    before = (tmp_path / "d.h5").read_bytes()
    with pytest.raises(MLFFError, match=rf"batch.xyz record 2: .*{message.split('(')[0]}"):
        ds.append([records[2], records[3], _bad(kind)], where="batch.xyz record")
    assert (tmp_path / "d.h5").read_bytes() == before and len(ds) == 2


def test_bad_file_is_named_in_the_error(tmp_path, records):
    bad = records[:3] + [_bad("nan forces")]
    write_extxyz(tmp_path / "bad.xyz", bad)
    with pytest.raises(MLFFError, match=r"bad.xyz record 3: forces contain NaN"):
        read_structures(tmp_path / "bad.xyz")
    with pytest.raises(MLFFError, match=r"bad.xyz record 0: element\(s\) C not in the allowed set"):
        read_structures(tmp_path / "bad.xyz", elements=["H", "O"])


def test_an_append_killed_before_its_rename_leaves_the_file_as_it_was(tmp_path, records, monkeypatch):
    import os

    ds = Dataset.create(tmp_path / "d.h5")
    ds.append(records[:4])
    before = (tmp_path / "d.h5").read_bytes()

    def killed(*args):
        raise KeyboardInterrupt  # stands for SIGKILL between writing the copy and renaming it

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        ds.append(records[4:])
    monkeypatch.undo()
    assert (tmp_path / "d.h5").read_bytes() == before
    assert len(Dataset(tmp_path / "d.h5")) == 4 and not list(tmp_path.glob(".d.h5.tmp-*"))


def test_splits_are_reproducible_disjoint_and_stable_as_data_grows(tmp_path):
    rng = np.random.default_rng(0)
    many = []
    for k in range(200):
        atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7 + rng.random()]])
        many.append(make_record(atoms, energy=float(k), forces=np.zeros((2, 3)), scan=f"scan{k // 20}"))
    ds = Dataset.create(tmp_path / "d.h5")
    ds.append(many[:150])
    first = ds.split(seed=3)
    assert {k: v.tolist() for k, v in first.items()} == {k: v.tolist() for k, v in ds.split(seed=3).items()}
    assert sorted(np.concatenate(list(first.values())).tolist()) == list(range(150))
    assert 0.65 < len(first["train"]) / 150 < 0.95
    ds.append(many[150:])
    grown = ds.split(seed=3)
    for name in first:  # old records keep their split
        assert set(first[name]) == set(grown[name][grown[name] < 150])
    grouped = ds.split({"train": 0.5, "test": 0.5}, seed=1, group_by="scan")
    scans = ds.infos()
    for name, idx in grouped.items():
        other = grouped["test" if name == "train" else "train"]
        assert not {scans[i]["scan"] for i in idx} & {scans[i]["scan"] for i in other}
    with pytest.raises(MLFFError, match="sum to 1"):
        ds.split({"train": 0.5})


def test_subsets_by_tag_and_region(tmp_path, records):
    ds = Dataset.create(tmp_path / "d.h5")
    ds.append(records)
    assert ds.indices(tag="ts").tolist() == [5, 6, 7]
    assert ds.indices(where=lambda info: abs(info["xi"]) < 0.3).tolist() == [4, 5]  # xi -0.2, 0.1
    summary = ds.summary()
    assert summary["records"] == 8 and summary["tags"] == {"reactant": 5, "ts": 3}
    assert summary["elements"] == ["H", "C", "O"] and len(summary["checksum"]) == 64


def test_opening_errors(tmp_path):
    with pytest.raises(MLFFError, match="no dataset at"):
        Dataset(tmp_path / "missing.h5")
    (tmp_path / "x.h5").write_text("not hdf5")
    with pytest.raises(MLFFError, match="cannot open"):
        Dataset(tmp_path / "x.h5")
    Dataset.create(tmp_path / "d.h5")
    with pytest.raises(MLFFError, match="exists"):
        Dataset.create(tmp_path / "d.h5")
