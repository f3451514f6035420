"""The labelling runner: provenance, recorded failures, and a killed run resumed to the same records."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from emt_labeler import EMTLabeler, structures
from mlff.data import Dataset, label
from mlff.data.records import labels
from mlff.errors import MLFFError


def _comparable(dataset: Dataset, table: str = "records"):
    """Everything of each record except when/where/how long it was labelled."""
    out = []
    for atoms in dataset.read(table=table):
        prov = {k: v for k, v in atoms.info["provenance"].items() if k not in ("labelled_utc", "host", "wall_s")}
        out.append((atoms.info["k"], atoms.positions.tobytes(), {k: np.asarray(v).tobytes()
                    for k, v in labels(atoms).items()}, prov))
    return out


def test_records_carry_labels_and_provenance_and_failures_are_recorded(tmp_path):
    summary = label(structures(6), EMTLabeler(fail_every=5), tmp_path / "out.h5", progress=False)
    assert (summary.labelled, summary.failed, summary.skipped) == (4, 2, 0)
    ds = Dataset(tmp_path / "out.h5")
    record = ds.read([0])[0]
    prov = record.info["provenance"]
    assert prov["method"] == "EMT" and prov["scf_converged"] and prov["geometry_source"] == "test geometry 1"
    assert prov["details"] == {"cycles": 1} and "labelled_utc" in prov
    from ase.calculators.emt import EMT

    reference = structures(6)[1]
    reference.calc = EMT()
    np.testing.assert_allclose(record.get_forces(), reference.get_forces(), atol=1e-12)
    failures = ds.read(table="failures")
    assert [f.info["k"] for f in failures] == [0, 5]
    assert failures[0].info["provenance"]["failure_reason"] == "SCF not converged after 2 cycles"
    assert ds.indices().tolist() == [0, 1, 2, 3]  # failures are never data


def test_a_batch_job_log_gets_a_line_per_structure_with_rate_and_eta(tmp_path, capsys):
    """stderr is not a terminal (nohup, SLURM): no rich bar that only shows at the end, but one line each."""
    label(structures(6), EMTLabeler(fail_every=5), tmp_path / "out.h5", progress=True)
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("label: 6 structure(s) to do with ")  # at once, before the first (slow) label
    lines = [line for line in err if line.startswith("label ")]
    assert len(lines) == 6
    assert lines[0].startswith("label 1/6 (") and "FAILED in" in lines[0]  # structure 0 fails (fail_every=5)
    assert "done in" in lines[1] and "s per structure so far, ETA" in lines[1]
    assert lines[-1].startswith("label 6/6") and lines[-1].endswith("; 2 failed")
    label(structures(8), EMTLabeler(fail_every=5), tmp_path / "out.h5", progress=True)
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("label: 2 structure(s) to do with ") and first.endswith(", 6 already done")


def test_a_second_run_skips_what_is_done(tmp_path):
    label(structures(4), EMTLabeler(fail_every=3), tmp_path / "out.h5", progress=False)
    again = EMTLabeler(fail_every=3)
    summary = label(structures(6), again, tmp_path / "out.h5", progress=False)
    assert (summary.skipped, summary.labelled, summary.failed, again.calls) == (4, 2, 0, 2)


def test_killed_run_resumed_gives_exactly_the_records_of_an_uninterrupted_run(tmp_path):
    killed = tmp_path / "killed.h5"
    env = {**os.environ, "PYTHONPATH": f"{Path(__file__).parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("emt_labeler.py")), str(killed)], env=env)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if killed.exists() and Dataset(killed).count() + Dataset(killed).count("failures") >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = Dataset(killed).count() + Dataset(killed).count("failures")
    assert 4 <= partial < 12, "the run must be killed mid-way for this test to mean anything"
    resumed = EMTLabeler(fail_every=5)
    summary = label(structures(12), resumed, killed, progress=False)
    assert summary.skipped == partial and resumed.calls == 12 - partial

    label(structures(12), EMTLabeler(fail_every=5), tmp_path / "straight.h5", progress=False)
    for table in ("records", "failures"):
        assert _comparable(Dataset(killed), table) == _comparable(Dataset(tmp_path / "straight.h5"), table)


def test_bad_inputs_are_refused_before_any_work(tmp_path):
    bad = structures(3)
    bad[2].info["multiplicity"] = 2  # 18 electrons cannot be a doublet
    labeler = EMTLabeler()
    with pytest.raises(MLFFError, match="structure 2: charge 0 and multiplicity 2 impossible"):
        label(bad, labeler, tmp_path / "out.h5", progress=False)
    overlapping = structures(2)
    overlapping[1].positions[1] = overlapping[1].positions[0]
    with pytest.raises(MLFFError, match="structure 1: atoms 0 and 1 overlap"):
        label(overlapping, labeler, tmp_path / "out.h5", progress=False)
    assert labeler.calls == 0


def test_a_time_limit_stops_cleanly_and_the_next_run_finishes(tmp_path):
    first = label(structures(8), EMTLabeler(delay_s=0.1), tmp_path / "out.h5", progress=False, time_limit_s=0.35)
    assert 1 <= first.labelled < 8 and first.remaining == 8 - first.labelled
    assert Dataset(tmp_path / "out.h5").count() == first.labelled  # saved before stopping
    second = label(structures(8), EMTLabeler(), tmp_path / "out.h5", progress=False)
    assert second.labelled == first.remaining and second.total_records == 8
