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
    with pytest.raises(MLFFError, match="also in"):
        merge([parts[0], parts[0]], tmp_path / "twice.h5")
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
    (tmp_path / "bad.yaml").write_text("calculator: emt\n")
    assert main(["data", "label", str(tmp_path / "pool.xyz"), str(tmp_path / "x.h5"), "--labeler",
                 str(tmp_path / "bad.yaml")]) == 2
    assert "expected a labeller spec with 'backend'" in capsys.readouterr().err
