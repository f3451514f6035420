"""One writer per file: a second writer is refused with the holder named; kill -9 frees the lock; every
writer (dataset appends, labelling, MD and training run directories) takes it; readers never need it."""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from ase.build import molecule
from ase.calculators.emt import EMT

from mlff.data import Dataset, make_record
from mlff.errors import MLFFError
from mlff.lock import WriterLock, holder, lock_path_for

REPO = Path(__file__).resolve().parents[2]
HOLD = ("import sys, time\nfrom mlff.lock import WriterLock\nlocks = [WriterLock(p, p).acquire() for p in sys.argv[1:]]\n"
        "print('held', flush=True)\ntime.sleep(600)\n")


@contextlib.contextmanager
def held_elsewhere(*lock_files):
    """Another process holding the writer locks ``lock_files`` until it is killed with SIGKILL."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, *map(str, lock_files)], env=env, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_second_writer_is_refused_naming_the_holder_and_kill_9_frees_the_lock(tmp_path):
    lock_file = tmp_path / "run" / ".lock"
    with held_elsewhere(lock_file) as proc:
        with pytest.raises(MLFFError) as err:
            WriterLock(lock_file, "MD run run").acquire()
        message = str(err.value)
        assert "\n" not in message and "MD run run is being written by another process" in message
        assert f"host {platform.node()}, pid {proc.pid}, since 20" in message
        assert holder(lock_file)["pid"] == proc.pid
        proc.send_signal(signal.SIGKILL)  # the kernel drops the lock of a dead process: no stale lock
        proc.wait()
        with WriterLock(lock_file, "MD run run"):
            assert holder(lock_file)["pid"] == os.getpid()
    assert holder(lock_file) == {}  # released: nothing claims the file any more


def test_the_lock_is_reentrant_within_one_process(tmp_path):
    lock = WriterLock(tmp_path / "x.lock", "x")
    with lock, WriterLock(tmp_path / "x.lock", "x"):
        assert holder(tmp_path / "x.lock")["pid"] == os.getpid()
    with held_elsewhere(tmp_path / "x.lock"):  # fully released above, so another process could take it
        with pytest.raises(MLFFError, match="being written by another process"):
            lock.acquire()


def _labelled(k: int):
    atoms = molecule("CH3OH")
    atoms.positions[0, 0] += 0.01 * k
    atoms.calc = EMT()
    return make_record(atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces(), k=k)


def test_a_dataset_refuses_a_second_writer_and_readers_need_no_lock(tmp_path):
    path = tmp_path / "d.h5"
    Dataset.create(path).append([_labelled(0)])
    assert lock_path_for(path) == tmp_path / "d.h5.lock"
    with held_elsewhere(lock_path_for(path)):
        with pytest.raises(MLFFError, match=r"dataset .*d\.h5 is being written by another process \(host "):
            Dataset(path).append([_labelled(1)])
        with pytest.raises(MLFFError, match="being written by another process"):
            Dataset.create(path, overwrite=True)
        assert len(Dataset(path)) == 1 and Dataset(path).read()[0].info["k"] == 0  # reading goes on
    assert Dataset(path).append([_labelled(1)]) == 2


class _CountingLabeler:
    name = "counting"

    def __init__(self):
        self.calls = 0

    def level(self) -> dict:
        return {"method": "EMT", "code": "ase"}

    def compute(self, atoms):
        self.calls += 1
        raise AssertionError("a refused labelling run must not compute anything")


def test_labelling_md_and_training_refuse_a_second_writer(tmp_path, small_config):
    from mlff.data import label
    from mlff.md import run_md
    from mlff.train import train

    data, md_out, train_out = tmp_path / "l.h5", tmp_path / "md", tmp_path / "train"
    Dataset.create(data)
    md_out.mkdir()
    train_out.mkdir()
    labeler = _CountingLabeler()
    md = {"structure": "fdh-cluster:small:reactant", "potential": small_config, "steps": 2, "device": "cpu",
          "out": str(md_out)}
    with held_elsewhere(lock_path_for(data), md_out / ".lock", train_out / ".lock"):
        with pytest.raises(MLFFError, match="l.h5 is being written by another process"):
            label([molecule("H2O")], labeler, data, progress=False)
        assert labeler.calls == 0
        for resume in (False, True):  # two --resume of one run no longer both run
            with pytest.raises(MLFFError, match="MD run .*md is being written by another process"):
                run_md(md, resume=resume)
        with pytest.raises(MLFFError, match="training run .*train is being written by another process"):
            train({"data": {"paths": [str(data)]}, "model": small_config, "out": str(train_out), "progress": False})
    assert not (md_out / "checkpoint.pt").exists() and not (train_out / "config.json").exists()
