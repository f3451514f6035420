"""Label queues for a GPU run: matching rounded exports back to the pool, skipping by hash, checking and importing."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule
from ase.units import Hartree

from mlff.data import Dataset, geometry_hash, label, read_structures, write_extxyz
from mlff.data.labelers import make_labeler
from mlff.data.queue import build_label_queue, compare_labels, import_labels, match_to_pool
from mlff.errors import MLFFError


def _pool(n=6):
    """Rattled molecules with full-precision positions; the last two are tagged as a held-out scan."""
    out = []
    for k in range(n):
        atoms = molecule("CH3OH" if k % 2 else "H2O")
        atoms.rattle(0.05, seed=k)
        atoms.positions += np.random.default_rng(k).random((len(atoms), 3)) * 1e-7  # beyond 8 decimals
        atoms.info.update(charge=0, multiplicity=1, source=f"pool {k}",
                          tags=["holdout-scan"] if k >= n - 2 else ["reactant"])
        out.append(atoms)
    return out


def test_rounded_export_changes_the_hash_and_the_queue_uses_pool_records(tmp_path):
    pool = _pool()
    write_extxyz(tmp_path / "order.extxyz", [pool[k] for k in (3, 0, 5, 1)])  # 5 is held out as well
    order = read_structures(tmp_path / "order.extxyz", require=())
    assert all(geometry_hash(a) != geometry_hash(pool[k]) for a, k in zip(order, (3, 0, 5, 1)))
    assert match_to_pool(order, pool)[0] == [3, 0, 5, 1]
    labelled = [geometry_hash(order[1]), geometry_hash(pool[4])]  # pool 0 done on its rounded geometry; 4 exactly
    queue, report = build_label_queue(pool, order=order, labelled=labelled, first_tags=("holdout-scan",))
    assert [a.info["source"] for a in queue] == ["pool 5", "pool 3", "pool 1"]
    assert [geometry_hash(a) for a in queue] == [geometry_hash(pool[k]) for k in (5, 3, 1)]
    assert (report.first, report.ordered, report.skipped_labelled, report.skipped_duplicates) == (1, 2, 2, 1)
    assert report.max_match_A < 1e-6


def test_match_to_pool_refuses_a_geometry_that_is_not_in_the_pool():
    pool = _pool()
    moved = pool[2].copy()
    moved.positions[0, 0] += 1e-3
    with pytest.raises(MLFFError, match="differs by 1.00e-03"):
        match_to_pool([moved], pool)
    with pytest.raises(MLFFError, match="no pool record"):
        match_to_pool([molecule("NH3")], pool)


def test_label_skips_pool_records_by_hash_but_not_their_rounded_copies(tmp_path):
    pool, out = _pool(3), tmp_path / "labels.h5"
    emt = make_labeler({"backend": "ase", "calculator": "emt"})
    Dataset.create(tmp_path / "queue.h5").append(pool, require=())
    queue = Dataset(tmp_path / "queue.h5").read()
    first = label(queue, emt, out, progress=False)
    again = label(queue, emt, out, progress=False)
    assert (first.labelled, again.labelled, again.skipped) == (3, 0, 3)
    write_extxyz(tmp_path / "rounded.extxyz", pool)
    rounded = label(read_structures(tmp_path / "rounded.extxyz", require=()), emt, out, progress=False)
    assert rounded.labelled == 3  # a rounded geometry is another geometry to the store: hence pool records


def _labelled(tmp_path, structures, name):
    label(structures, make_labeler({"backend": "ase", "calculator": "emt"}), tmp_path / name, progress=False)
    return Dataset(tmp_path / name)


def test_compare_labels_finds_an_energy_shift_and_import_adds_only_new_geometries(tmp_path):
    pool = _pool(4)
    gpu = _labelled(tmp_path, pool, "gpu.h5").read()
    cpu = _labelled(tmp_path, pool[:2], "cpu.h5").read()
    diffs = compare_labels(gpu, cpu)
    assert [d.index for d in diffs] == [0, 1] and all(d.ok(1e-12, 1e-12) for d in diffs)
    shifted = cpu[1].copy()
    shifted.calc = cpu[1].calc
    shifted.calc.results["energy"] += 2e-5 * Hartree
    diff = compare_labels(gpu, [shifted])[0]
    assert diff.dE_Ha == pytest.approx(-2e-5, rel=1e-6) and not diff.ok(1e-5, 1e-4) and diff.ok(3e-5, 1e-4)

    shipped = _labelled(tmp_path, pool[:1], "shipped.h5")
    added = import_labels(shipped, gpu, note={"imported_from": "gpu.h5"})
    assert added == 3 and len(shipped) == 4
    assert import_labels(shipped, gpu) == 0  # nothing twice
    prov = shipped.read([3])[0].info["provenance"]
    assert prov["imported_from"] == "gpu.h5" and prov["code"] == "ase"
    np.testing.assert_allclose(shipped.read([3])[0].get_forces(), gpu[3].get_forces())


def test_import_refuses_another_level_of_theory(tmp_path):
    pool = _pool(2)
    shipped = _labelled(tmp_path, pool[:1], "shipped.h5")
    other = _labelled(tmp_path, pool[1:], "other.h5").read()
    other[0].info["provenance"]["basis"] = "def2-tzvp"
    with pytest.raises(MLFFError, match="level of theory"):
        import_labels(shipped, other)


def test_the_shipped_gpu_queue_is_pool_records_not_yet_labelled_holdout_scan_first():
    from pathlib import Path

    data = Path(__file__).resolve().parents[3] / "data" / "fdh-cluster"
    queue = Dataset(data / "dft_queue_gpu_small.h5")
    pool = set(Dataset(data / "pool_small.h5").column("geometry_hash"))
    hashes = list(queue.column("geometry_hash"))
    assert set(hashes) <= pool and len(set(hashes)) == len(hashes)
    done = set(hashes) & set(Dataset(data / "fdh_small.h5").column("geometry_hash"))
    assert not done, "fdh_small.h5 holds queued geometries: rebuild the queue (python workflows/dft_queue.py)"
    tags = [info.get("tags", []) for info in queue.infos()]
    n_holdout = sum("holdout-scan" in t for t in tags)
    assert n_holdout == 15 and all("holdout-scan" in t for t in tags[:n_holdout])
