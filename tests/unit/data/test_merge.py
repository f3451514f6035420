"""Shards of a pool labelled separately and merged in the pool's order equal one serial run, record for
record; a stop signal ends a labelling run cleanly (resumable); the CLI's --shard, --labeler and merge."""

import os
import signal

import numpy as np
import pytest

from emt_labeler import EMTLabeler, structures
from mlff.cli import main
from mlff.data import Dataset, label
from mlff.data.merge import merge, shard
from mlff.data.records import labels
from mlff.errors import MLFFError


def _comparable(path):
    out = []
    for table in ("records", "failures"):
        for atoms in Dataset(path).read(table=table):
            prov = {k: v for k, v in atoms.info["provenance"].items() if k not in ("labelled_utc", "host", "wall_s")}
            out.append((table, atoms.info["k"], atoms.positions.tobytes(),
                        {k: np.asarray(v).tobytes() for k, v in labels(atoms).items()}, prov))
    return out


def test_shards_merged_in_pool_order_equal_a_serial_run(tmp_path):
    pool = structures(11)
    label(pool, EMTLabeler(fail_every=4), tmp_path / "serial.h5", progress=False)
    parts = []
    for k in (2, 0, 1):  # any order
        parts.append(tmp_path / f"shard{k}.h5")
        label(shard(pool, f"{k}/3"), EMTLabeler(fail_every=4), parts[-1], progress=False)
    counts = merge(parts, tmp_path / "merged.h5", order=pool)
    assert counts == {"records": 8, "failures": 3}
    assert _comparable(tmp_path / "merged.h5") == _comparable(tmp_path / "serial.h5")
    sources = Dataset(tmp_path / "merged.h5").summary()["merged_from"]  # the inputs' own provenance is kept
    assert [s["path"] for s in sources] == [str(p) for p in parts]
    assert [(s["records"], s["failures"]) for s in sources] == [(len(Dataset(p)), Dataset(p).count("failures"))
                                                                for p in parts]
    assert [s["checksum"] for s in sources] == [Dataset(p).checksum() for p in parts]
    assert all(s["created"]["created_utc"] for s in sources)
    # the same records twice (a dataset that holds an earlier merge of these shards) are kept once; the same
    # geometry labelled again (other provenance) is a conflict
    assert merge([tmp_path / "merged.h5", *parts], tmp_path / "again.h5", order=pool) == counts
    assert _comparable(tmp_path / "again.h5") == _comparable(tmp_path / "serial.h5")
    label(shard(pool, "0/3")[:1], EMTLabeler(), tmp_path / "relabelled.h5", progress=False)
    with pytest.raises(MLFFError, match="also in .*other labels or provenance"):
        merge([parts[1], tmp_path / "relabelled.h5"], tmp_path / "twice.h5")
    with pytest.raises(MLFFError, match="exists"):
        merge(parts, tmp_path / "again.h5")
    # shards merged into one of the inputs: replaced only by the complete merge
    expected = len(Dataset(parts[1])) + len(Dataset(parts[2]))
    merge([parts[1], parts[2]], parts[1], overwrite=True)
    assert len(Dataset(parts[1])) == expected
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and "merge-" in p.name]
    with pytest.raises(MLFFError, match="not in the pool"):
        merge(parts, tmp_path / "other.h5", order=pool[:5])
    with pytest.raises(MLFFError, match="expected K/N"):
        shard(pool, "3/3")
    assert [a.info["k"] for a in shard(pool, "1/4")] == [1, 5, 9]


class _SignalAfter(EMTLabeler):
    """Sends the process SIGUSR1 (as a batch scheduler would) while labelling structure ``at``."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def compute(self, atoms):
        if self.calls + 1 == self.at:
            os.kill(os.getpid(), signal.SIGUSR1)
        return super().compute(atoms)


def test_a_stop_signal_ends_labelling_after_the_current_structure(tmp_path):
    summary = label(structures(6), _SignalAfter(2), tmp_path / "out.h5", progress=False)
    assert (summary.labelled, summary.remaining) == (2, 4)  # the structure under way was finished and saved
    again = label(structures(6), EMTLabeler(), tmp_path / "out.h5", progress=False)
    assert (again.labelled, again.skipped, again.remaining) == (4, 2, 0)


def test_cli_shards_with_a_labeller_spec_and_merges(tmp_path, capsys):
    from ase.io import write

    pool = structures(5)
    for a in pool:
        a.info.pop("k")
    write(tmp_path / "pool.xyz", pool, format="extxyz")
    (tmp_path / "emt.yaml").write_text("backend: ase\ncalculator: emt\n")
    common = ["--labeler", str(tmp_path / "emt.yaml")]
    for k in range(2):
        assert main(["data", "label", str(tmp_path / "pool.xyz"), str(tmp_path / f"s{k}.h5"), "--shard", f"{k}/2",
                     *common]) == 0
    assert main(["data", "merge", str(tmp_path / "m.h5"), str(tmp_path / "s1.h5"), str(tmp_path / "s0.h5"),
                 "--order", str(tmp_path / "pool.xyz")]) == 0
    assert "wrote 5 records and 0 failures from 2 dataset(s)" in capsys.readouterr().out
    merged = Dataset(tmp_path / "m.h5").read()
    np.testing.assert_allclose(np.stack([a.positions for a in merged]), np.stack([a.positions for a in pool]), atol=1e-6)
    assert merged[0].info["provenance"]["method"] == "EMT"
    main(["data", "info", str(tmp_path / "m.h5")])
    info = capsys.readouterr().out
    assert f"merged from {tmp_path / 's1.h5'}: 2 records, 0 failures" in info
    assert f"merged from {tmp_path / 's0.h5'}: 3 records, 0 failures" in info
    (tmp_path / "bad.yaml").write_text("calculator: emt\n")
    assert main(["data", "label", str(tmp_path / "pool.xyz"), str(tmp_path / "x.h5"), "--labeler",
                 str(tmp_path / "bad.yaml")]) == 2
    assert "expected a labeller spec with 'backend'" in capsys.readouterr().err


def test_upgrade_rewrites_a_version_1_file_smaller_with_the_same_records_and_provenance(tmp_path, capsys):
    import json

    import h5py

    from mlff.data.store import TABLES, VERSION, _create_table
    from mlff.data.upgrade import upgrade

    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as f:  # the layout of the files written before format version 2
        f.attrs.update(format="mlff-dataset", version=1, description="old labels",
                       provenance=json.dumps({"created_utc": "2026-11-01T00:00:00+00:00"}))
        for table in TABLES:
            _create_table(f.create_group(table), 1, "float64")
    label(structures(7), EMTLabeler(fail_every=3), path, progress=False)
    old = Dataset(path)
    assert old.version == 1 and len(old) == 4 and len(old.read(table="failures")) == 3
    before, checksum, comparable = path.stat().st_size, old.checksum(), _comparable(path)
    u = upgrade(path)
    new = Dataset(path)
    assert new.version == VERSION == u["to_version"] and u["from_version"] == 1
    assert new.checksum() == checksum == u["checksum"] and _comparable(path) == comparable  # failures too
    assert u["bytes_after"] == path.stat().st_size < before / 2
    with h5py.File(path, "r") as f:
        assert f.attrs["description"] == "old labels"
        assert json.loads(f.attrs["provenance"])["created_utc"] == "2026-11-01T00:00:00+00:00"
        assert json.loads(f.attrs["upgraded"])["from_version"] == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".old.h5.upgrade")) == []
    assert main(["data", "upgrade", str(path)]) == 0  # a second upgrade leaves the file as it is
    assert "already version 2, left as it is" in capsys.readouterr().out and path.stat().st_size == u["bytes_after"]


def test_a_merge_of_float32_datasets_stays_float32(tmp_path):
    parts = []
    for k in range(2):
        parts.append(Dataset.create(tmp_path / f"p{k}.h5", precision="float32").path)
        label(shard(structures(4), f"{k}/2"), EMTLabeler(), parts[-1], progress=False)
    merge(parts, tmp_path / "m.h5")
    assert Dataset(tmp_path / "m.h5").precision == "float32"
    assert len(Dataset(tmp_path / "m.h5")) == 4


def test_shards_continuing_a_dataset_skip_what_it_holds_and_merge_into_it(tmp_path, capsys):
    pool = structures(9)
    main_ds = tmp_path / "main.h5"
    label(pool[:4], EMTLabeler(), main_ds, progress=False)  # labelled before: 4 of the 9
    serial = tmp_path / "serial.h5"
    label(pool, EMTLabeler(), serial, progress=False)
    parts = [tmp_path / f"s{k}.h5" for k in range(2)]
    for k, part in enumerate(parts):
        summary = label(shard(pool, f"{k}/2"), EMTLabeler(), part, progress=False, skip_in=[main_ds])
        assert summary.skipped == len(range(k, 4, 2)) and summary.labelled == len(range(k, 9, 2)) - summary.skipped
    merge([main_ds, *parts], main_ds, order=pool, overwrite=True)
    assert [a.info["k"] for a in Dataset(main_ds).read()] == list(range(9))
    assert [r[2:4] for r in _comparable(main_ds)] == [r[2:4] for r in _comparable(serial)]  # positions and labels
    # the CLI: --skip-labelled-in; another level of theory in the skipped dataset is refused
    from ase.io import write

    write(tmp_path / "pool.xyz", [a.copy() for a in pool], format="extxyz")
    (tmp_path / "emt.yaml").write_text("backend: ase\ncalculator: emt\n")
    cli = ["data", "label", str(tmp_path / "pool.xyz"), "--labeler", str(tmp_path / "emt.yaml")]
    assert main(cli[:3] + [str(tmp_path / "m2.h5")] + cli[3:] + ["--limit", "3"]) == 0
    capsys.readouterr()
    assert main(cli[:3] + [str(tmp_path / "c.h5")] + cli[3:] + ["--limit", "5", "--skip-labelled-in",
                                                                 str(tmp_path / "m2.h5")]) == 0
    assert "2 labelled, 0 failed, 3 already done" in capsys.readouterr().out and len(Dataset(tmp_path / "c.h5")) == 2
    assert main(cli[:3] + [str(tmp_path / "d.h5")] + cli[3:] + ["--skip-labelled-in", str(main_ds)]) == 2
    assert "another level of theory" in capsys.readouterr().err and not (tmp_path / "d.h5").exists()
