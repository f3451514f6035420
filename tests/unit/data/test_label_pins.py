"""Labelling keeps one level of theory per dataset, labels a repeated geometry once, skips by the hash the
dataset stores (float32 files too), and stops cleanly on SIGTERM/SIGUSR1 with the work so far saved."""

from __future__ import annotations

import os
import signal

import pytest

from emt_labeler import EMTLabeler, structures
from mlff.data import Dataset, label
from mlff.data.label import levels_of
from mlff.errors import MLFFError


class OtherBasis(EMTLabeler):
    def level(self) -> dict:
        return {**super().level(), "basis": "def2-tzvp", "code_version": "other"}


class NewerCode(EMTLabeler):
    def level(self) -> dict:
        return {**super().level(), "code_version": "2.0"}  # the same level of theory


def test_one_level_of_theory_per_dataset_unless_asked(tmp_path):
    out = tmp_path / "out.h5"
    label(structures(2), EMTLabeler(), out, progress=False)
    other = OtherBasis()
    with pytest.raises(MLFFError, match=r"another level of theory \(EMT/gas/ase: basis none\) than .*basis def2-tzvp\).*allow_mixed_levels"):
        label(structures(4), other, out, progress=False)
    assert other.calls == 0 and len(Dataset(out)) == 2
    assert label(structures(3), NewerCode(), out, progress=False).labelled == 1  # a code version is no new level
    summary = label(structures(4), other, out, progress=False, allow_mixed_levels=True)
    assert summary.labelled == 1 and len(levels_of(Dataset(out))) == 2


def test_a_geometry_given_twice_is_labelled_once(tmp_path):
    todo = structures(3)
    todo = todo + [todo[1].copy(), todo[0].copy()]
    labeler = EMTLabeler()
    summary = label(todo, labeler, tmp_path / "out.h5", progress=False)
    assert labeler.calls == 3 and summary.labelled == 3 and summary.duplicates == 2
    assert len(set(Dataset(tmp_path / "out.h5").column("geometry_hash"))) == 3


def test_a_float32_dataset_skips_what_it_holds(tmp_path):
    out = tmp_path / "out.h5"
    Dataset.create(out, precision="float32")
    label(structures(3), EMTLabeler(), out, progress=False)
    again = EMTLabeler()
    summary = label(structures(4), again, out, progress=False)
    assert again.calls == 1 and summary.skipped == 3
    assert Dataset(out).verify()["records"] == 4


class SignalAt(EMTLabeler):
    def __init__(self, call: int, signum):
        super().__init__()
        self.call, self.signum = call, signum

    def compute(self, atoms):
        if self.calls + 1 == self.call:
            os.kill(os.getpid(), self.signum)
        return super().compute(atoms)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_stops_labelling_after_the_current_structure(tmp_path, signum):
    out = tmp_path / "out.h5"
    previous = signal.getsignal(signum)
    summary = label(structures(6), SignalAt(2, signum), out, progress=False)
    assert summary.interrupted == signal.Signals(signum).name and summary.labelled == 2 and summary.remaining == 4
    assert signal.getsignal(signum) == previous and len(Dataset(out)) == 2
    assert "stopped by SIG" in str(summary)
    rest = label(structures(6), EMTLabeler(), out, progress=False)
    assert rest.labelled == 4 and rest.skipped == 2 and rest.interrupted is None
