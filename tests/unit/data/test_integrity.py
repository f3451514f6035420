"""Checksums of content: computed from what the file holds, re-verified record by record; damaged files are
one clear line in every operation; float32 storage keeps hashes exact; version 1 files are still read."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms

import mlff.data.store as store
from mlff.cli import main
from mlff.data import Dataset, make_record
from mlff.data.records import content_hash, geometry_hash
from mlff.errors import MLFFError

REPO = Path(__file__).resolve().parents[3]


def _records(n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        atoms = molecule("CH3CH2OH")
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        atoms.set_constraint(FixAtoms(indices=[0]))
        atoms.calc = EMT()
        out.append(make_record(atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces(), xi=0.1 * k,
                               tags=["ts" if k % 2 else "reactant"], provenance={"method": "EMT", "code": "ase"}))
    return out


def _dataset(path, n=6, **kw) -> Dataset:
    ds = Dataset.create(path, **kw)
    ds.append(_records(n))
    return ds


def test_checksum_follows_the_data_not_the_stored_hashes(tmp_path):
    ds = _dataset(tmp_path / "d.h5")
    before = ds.checksum()
    assert ds.verify() == {"records": 6, "failures": 0}
    assert list(ds.column("content_hash")) == [content_hash(a) for a in _records(6)]
    with h5py.File(ds.path, "a") as f:  # an edit behind the store's back: hashes left as they were
        f["records/forces"][20] = f["records/forces"][20] + 0.01
    assert ds.checksum() != before
    with pytest.raises(MLFFError, match=r"records record 2: its data no longer matches its content hash"):
        ds.verify()
    code = main(["data", "validate", str(ds.path)])
    assert code == 2


def test_an_edited_info_or_geometry_is_found(tmp_path):
    ds = _dataset(tmp_path / "d.h5")
    with h5py.File(ds.path, "a") as f:
        blob = f["records/info_bytes"][()]
        at = bytes(blob).index(b'"reactant"')
        blob[at + 1] = ord("R")
        f["records/info_bytes"][:] = blob
    with pytest.raises(MLFFError, match="record 0: its data no longer matches its content hash"):
        ds.verify()
    ds = _dataset(tmp_path / "e.h5")
    with h5py.File(ds.path, "a") as f:
        f["records/cell"][3] = np.eye(3)
    with pytest.raises(MLFFError, match="record 3: its data no longer matches its geometry hash"):
        ds.verify()


def _damage(path: Path, how: str) -> None:
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return
    with h5py.File(path, "r") as f:  # garbage over the first compressed chunk of positions
        info = f["records/positions"].id.get_chunk_info(0)
    with open(path, "r+b") as handle:
        handle.seek(info.byte_offset)
        handle.write(bytes(range(256))[: info.size])


OPERATIONS = {"open": lambda p: Dataset(p), "len": lambda p: len(Dataset(p)), "read": lambda p: Dataset(p).read(),
              "infos": lambda p: Dataset(p).infos(), "column": lambda p: Dataset(p).column("energy"),
              "split": lambda p: Dataset(p).split(), "checksum": lambda p: Dataset(p).checksum(),
              "summary": lambda p: Dataset(p).summary(), "verify": lambda p: Dataset(p).verify(),
              "append": lambda p: Dataset(p).append(_records(1, seed=9)), "indices": lambda p: Dataset(p).indices(tag="ts")}


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_a_damaged_file_is_one_clear_line_in_every_operation(tmp_path, how):
    path = tmp_path / "d.h5"
    _dataset(path, n=40)
    _damage(path, how)
    refused = 0
    for name, operation in OPERATIONS.items():
        try:
            operation(path)
        except MLFFError as err:
            refused += 1
            assert "\n" not in str(err) and "d.h5" in str(err), name
    assert refused >= (len(OPERATIONS) if how == "truncated" else 4)  # the garbage hits positions only
    with pytest.raises(MLFFError, match="truncated or corrupted|cannot open"):
        Dataset(path).verify()


@pytest.mark.parametrize("command", ["info", "validate"])
def test_cli_on_a_truncated_file_is_one_line(tmp_path, command, capsys):
    path = tmp_path / "d.h5"
    _dataset(path)
    _damage(path, "truncated")
    assert main(["data", command, str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mlff: error: ") and "d.h5" in err[0]


def test_float32_storage_rounds_on_the_way_in_and_keeps_hashes_exact(tmp_path):
    originals = _records(5)
    ds = _dataset(tmp_path / "f.h5", n=5, precision="float32")
    assert ds.precision == "float32" and ds.summary()["precision"] == "float32"
    with h5py.File(ds.path) as f:
        assert f["records/positions"].dtype == np.float32 and f["records/forces"].dtype == np.float32
    back = ds.read()
    for a, b in zip(originals, back):
        assert b.positions.dtype == np.float64 and b.get_forces().dtype == np.float64
        np.testing.assert_array_equal(b.positions, a.positions.astype(np.float32).astype(np.float64))
        np.testing.assert_allclose(b.get_forces(), a.get_forces(), rtol=1e-6, atol=1e-6)
    assert ds.verify()["records"] == 5
    assert list(ds.column("geometry_hash")) == [ds.geometry_hash(a) for a in originals]  # label's skip test
    assert list(ds.column("content_hash")) == [content_hash(b) for b in back]  # = hashes of what is read back
    again = Dataset.create(tmp_path / "again.h5", precision="float32")
    again.append(back)
    assert again.checksum() == ds.checksum()  # a round trip keeps every hash
    wide = Dataset.create(tmp_path / "wide.h5")
    wide.append(back)  # float64 holds float32 values exactly
    assert wide.checksum() == ds.checksum()
    with pytest.raises(MLFFError, match="precision must be one of float64, float32"):
        Dataset.create(tmp_path / "x.h5", precision="float16")


def test_version_1_files_are_read_verified_and_extended(tmp_path, monkeypatch):
    records = _records(4)
    monkeypatch.setattr(store, "VERSION", 1)
    Dataset.create(tmp_path / "v1.h5").append(records[:2])
    monkeypatch.undo()
    old = Dataset(tmp_path / "v1.h5")
    assert old.version == 1
    with h5py.File(old.path) as f:
        assert f["records/info"].dtype.kind == "O" and "info_bytes" not in f["records"]
    assert old.append(records[2:]) == 4  # in its own layout
    new = Dataset.create(tmp_path / "v2.h5")
    new.append(records)
    assert old.verify()["records"] == 4 and old.checksum() == new.checksum()
    assert [a.info for a in old.read()] == [a.info for a in new.read()]
    assert list(old.column("geometry_hash")) == [geometry_hash(a) for a in records]


def test_shipped_datasets_keep_their_recorded_checksums():
    sums = json.loads((REPO / "data" / "fdh-cluster" / "checksums.json").read_text())
    for name in ("pool_small.h5", "isolated_atoms.h5"):
        dataset = Dataset(REPO / "data" / "fdh-cluster" / name)
        assert dataset.checksum() == sums[name]["records_checksum"], name


def test_many_small_appends_reuse_the_space_they_free(tmp_path):
    records = _records(60)
    once = Dataset.create(tmp_path / "once.h5")
    once.append(records)
    one_by_one = Dataset.create(tmp_path / "many.h5")
    for record in records:  # as `label` with checkpoint_every=1 appends
        one_by_one.append([record])
    assert one_by_one.checksum() == once.checksum()
    assert one_by_one.path.stat().st_size < 1.6 * once.path.stat().st_size  # without reuse: ~7x
