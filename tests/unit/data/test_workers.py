"""Labelling with N one-thread worker processes writes what one serial run writes (same labels, pool order),
resumes a killed run from its workers' files without labelling anything twice, and stops on request."""

from __future__ import annotations

import numpy as np
import pytest

from emt_labeler import structures
from mlff.cli import main
from mlff.data import Dataset, label
from mlff.data.labelers import make_labeler
from mlff.data.records import geometry_hash, labels
from mlff.data.workers import label_with_workers

EMT = {"backend": "ase", "calculator": "emt"}


def _energies(path):
    return np.array([labels(r)["energy"] for r in Dataset(path).read()])


def test_workers_write_what_one_serial_run_writes(tmp_path):
    todo = structures(7)
    label(todo, make_labeler(EMT), tmp_path / "serial.h5", progress=False)
    summary = label_with_workers(todo, EMT, tmp_path / "parallel.h5", workers=2, progress=False)
    assert summary.labelled == 7 and summary.remaining == 0 and summary.interrupted is None
    serial, parallel = Dataset(tmp_path / "serial.h5"), Dataset(tmp_path / "parallel.h5")
    assert list(parallel.column("geometry_hash")) == list(serial.column("geometry_hash"))  # the pool's order
    assert np.allclose(_energies(tmp_path / "parallel.h5"), _energies(tmp_path / "serial.h5"), atol=1e-9)
    assert not (tmp_path / "parallel.h5.workers").exists()
    again = label_with_workers(todo, EMT, tmp_path / "parallel.h5", workers=2, progress=False)
    assert again.labelled == 0 and again.skipped == 7


def test_a_killed_run_resumes_from_its_workers_files(tmp_path):
    todo = structures(6)
    out = tmp_path / "out.h5"
    label(todo[:2], make_labeler(EMT), out, progress=False)
    parts = tmp_path / "out.h5.workers"  # what a kill -9 leaves: a worker's file with two labels
    parts.mkdir()
    label([todo[3], todo[5]], make_labeler(EMT), parts / "shard-1.h5", progress=False)
    summary = label_with_workers(todo, EMT, out, workers=2, progress=False)
    assert summary.labelled == 2 and summary.skipped == 4  # only todo[2] and todo[4] were labelled now
    assert list(Dataset(out).column("geometry_hash")) == [geometry_hash(a) for a in todo[:2]] + \
        [geometry_hash(todo[3]), geometry_hash(todo[5]), geometry_hash(todo[2]), geometry_hash(todo[4])]
    assert Dataset(out).verify()["records"] == 6 and not parts.exists()


def test_a_stop_request_reaches_the_workers(tmp_path, monkeypatch):
    stop = tmp_path / "STOP"
    stop.touch()
    monkeypatch.setenv("MLFF_STOP_FILE", str(stop))
    summary = label_with_workers(structures(4), EMT, tmp_path / "out.h5", workers=2, progress=False)
    assert summary.interrupted == "stop file" and summary.labelled == 0 and summary.remaining == 4


def test_the_cli_labels_with_workers_and_refuses_a_bad_spec_before_starting(tmp_path, capsys):
    pool = tmp_path / "pool.h5"
    Dataset.create(pool).append(structures(3), require=())
    spec = tmp_path / "emt.yaml"
    spec.write_text("backend: ase\ncalculator: emt\n")
    assert main(["data", "label", str(pool), str(tmp_path / "out.h5"), "--labeler", str(spec), "--workers", "2"]) == 0
    assert len(Dataset(tmp_path / "out.h5")) == 3
    spec.write_text("backend: ase\ncalculator: lj\n")
    assert main(["data", "label", str(pool), str(tmp_path / "new.h5"), "--labeler", str(spec), "--workers", "2"]) == 2
    assert "supports only calculator 'emt'" in capsys.readouterr().err
    assert not (tmp_path / "new.h5.workers").exists()


@pytest.mark.parametrize("workers", [0, -1])
def test_workers_must_be_positive(tmp_path, workers):
    from mlff.errors import MLFFError

    with pytest.raises(MLFFError, match="workers must be >= 1"):
        label_with_workers(structures(2), EMT, tmp_path / "out.h5", workers=workers)


def test_sigterm_stops_the_workers_and_the_run_resumes_where_it_stopped(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    pool, out = tmp_path / "pool.h5", tmp_path / "out.h5"
    Dataset.create(pool).append(structures(400), require=())
    spec = tmp_path / "emt.yaml"
    spec.write_text("backend: ase\ncalculator: emt\n")
    cmd = [sys.executable, "-m", "mlff", "data", "label", str(pool), str(out), "--labeler", str(spec), "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    shard = tmp_path / "out.h5.workers" / "shard-0.h5"
    deadline = time.monotonic() + 120
    while not shard.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)  # a worker has written its first label
    proc.send_signal(signal.SIGTERM)
    text = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 75, text
    first = len(Dataset(out))
    assert 0 < first < 400 and "stopped by SIGTERM" in text
    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0
    hashes = list(Dataset(out).column("geometry_hash"))
    assert len(hashes) == len(set(hashes)) == 400 and not os.path.exists(shard.parent)


def test_workers_skip_what_a_float32_dataset_holds(tmp_path):
    out = tmp_path / "f32.h5"
    Dataset.create(out, precision="float32")
    assert label_with_workers(structures(3), EMT, out, workers=2, progress=False).labelled == 3
    again = label_with_workers(structures(3), EMT, out, workers=2, progress=False)
    assert again.labelled == 0 and again.skipped == 3 and Dataset(out).verify()["records"] == 3
