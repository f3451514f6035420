"""``mlff slurm label CONFIG`` with shards continuing a dataset that exists: the shards skip what it holds and
the merge joins it with them, record for record what one serial run over the whole pool writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from mlff.cli import main
from mlff.data import Dataset
from mlff.errors import MLFFError
from mlff.hpc.kinds import plan
from mlff.hpc.profile import SiteProfile
from mlff.hpc.script import expand_word

VOLATILE = ("wall_s", "labelled_utc", "host")


def _pool(path, n):
    from ase.build import molecule

    rng = np.random.default_rng(2)
    frames = []
    for k in range(n):
        atoms = molecule(["CH4", "H2O", "NH3", "CO2"][k % 4])
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        atoms.info.update(source=f"pool:{k}", charge=0, multiplicity=1)
        frames.append(atoms)
    Dataset.create(path).append(frames, require=())
    return path


def _comparable(path):
    rows = []
    for atoms in Dataset(path).read():
        prov = {k: v for k, v in atoms.info["provenance"].items() if k not in VOLATILE}
        rows.append((atoms.info["source"], atoms.get_potential_energy(), json.dumps(prov, sort_keys=True)))
    return rows


def _run(job, task: int | None = None) -> None:
    """One job's mlff command as its batch script would run it (array task ``task``)."""
    args = [expand_word(word, {"SLURM_ARRAY_TASK_ID": str(task)}) for word in job.command]
    assert main(args) == 0


def test_shards_continue_an_existing_dataset_and_merge_into_it(tmp_path):
    pool = _pool(tmp_path / "pool.h5", 7)
    (tmp_path / "emt.yaml").write_text("backend: ase\ncalculator: emt\n")
    labeler = ["--labeler", str(tmp_path / "emt.yaml")]
    out, serial = tmp_path / "out.h5", tmp_path / "serial.h5"
    assert main(["data", "label", str(pool), str(out), *labeler, "--limit", "3"]) == 0  # labelled before
    assert main(["data", "label", str(pool), str(serial), *labeler]) == 0
    config = tmp_path / "label.yaml"
    config.write_text(yaml.safe_dump({"pool": str(pool), "out": str(out), "shards": 2,
                                      "labeler": {"backend": "ase", "calculator": "emt"}}))
    jobs = plan("label", str(config), SiteProfile())
    for path, text in jobs.files.items():  # as `mlff slurm label` writes them at submission
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    label, merge = jobs.jobs
    assert label.command[-2:] == ["--skip-labelled-in", str(out)]
    assert label.progress["totals"] == [2, 2]  # pool 3, 5 | 4, 6: what is left of each shard
    assert merge.command[:4] == ["data", "merge", str(out), str(out)]  # the dataset itself is an input
    for task in range(2):
        _run(label, task)
    shards = [Dataset(p) for p in label.progress["datasets"]]
    assert [len(s) for s in shards] == [2, 2]  # nothing labelled twice
    _run(merge)
    assert _comparable(out) == _comparable(serial)  # every structure once, in the pool's order
    assert len(Dataset(out).summary()["merged_from"]) == 3
    _run(merge)  # a requeued merge: the dataset already holds the shards' records, kept once
    assert _comparable(out) == _comparable(serial)


def test_a_dataset_with_entries_from_elsewhere_is_not_continued_by_shards(tmp_path):
    pool = _pool(tmp_path / "pool.h5", 4)
    other = _pool(tmp_path / "other.h5", 6)
    (tmp_path / "emt.yaml").write_text("backend: ase\ncalculator: emt\n")
    out = tmp_path / "out.h5"
    assert main(["data", "label", str(other), str(out), "--labeler", str(tmp_path / "emt.yaml")]) == 0
    config = tmp_path / "label.yaml"
    config.write_text(yaml.safe_dump({"pool": str(pool), "out": str(out), "shards": 2,
                                      "labeler": {"backend": "ase", "calculator": "emt"}}))
    with pytest.raises(MLFFError, match="2 of 6 entries that are not in the pool"):
        plan("label", str(config), SiteProfile())
