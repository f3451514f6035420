"""workflows/gpu_label_check.py: GPU labels are compared with the CPU labels of the held-out scan for free, and the
held-out geometries never reach the training set on import."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from ase.build import molecule

from mlff.data import Dataset, geometry_hash, label
from mlff.data.labelers import make_labeler

REPO = Path(__file__).resolve().parents[3]
spec = importlib.util.spec_from_file_location("gpu_label_check", REPO / "workflows" / "gpu_label_check.py")
gpu_label_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_label_check)


def _pool(n=6):
    """Rattled molecules; the last two tagged as the held-out scan (as in the GPU queue, where it comes first)."""
    out = []
    for k in range(n):
        atoms = molecule("CH3OH" if k % 2 else "H2O")
        atoms.rattle(0.05, seed=k)
        atoms.info.update(charge=0, multiplicity=1, source=f"pool {k}",
                          tags=["holdout-scan"] if k >= n - 2 else ["reactant"])
        out.append(atoms)
    return out


def _labelled(path, structures) -> Path:
    label(structures, make_labeler({"backend": "ase", "calculator": "emt"}), path, progress=False)
    return path


def test_check_compares_the_held_out_labels_and_import_keeps_them_out(tmp_path, capsys):
    pool = _pool()
    gpu = _labelled(tmp_path / "gpu.h5", pool)  # stands in for the GPU run: every queued geometry
    holdout = _labelled(tmp_path / "holdout.h5", pool[4:])  # the CPU labels of the held-out scan
    shipped = _labelled(tmp_path / "shipped.h5", pool[:1])  # the training set
    common = ["--work", str(tmp_path / "work.h5"), "--holdout", str(holdout)]

    assert gpu_label_check.main(["check", str(gpu), "--n", "0", *common]) == 0  # no recomputation: 2 free pairs
    assert "2 compared, 0 outside" in capsys.readouterr().out
    assert gpu_label_check.main(["import", str(gpu), "--dataset", str(shipped), *common]) == 0
    assert "3 records added" in capsys.readouterr().out and len(Dataset(shipped)) == 4
    imported = set(Dataset(shipped).column("geometry_hash"))
    assert imported == {geometry_hash(a) for a in pool[:4]}  # the held-out pair stayed out

    # a GPU label off its CPU counterpart fails the check, and the import refuses without --force
    records = Dataset(gpu).read()
    shifted = records[5]
    shifted.calc.results["forces"] = np.asarray(shifted.calc.results["forces"]) + 1e-3
    Dataset.create(tmp_path / "gpu_bad.h5").append(records, require=())
    assert gpu_label_check.main(["check", str(tmp_path / "gpu_bad.h5"), "--n", "0", *common]) == 1
    assert "1 outside" in capsys.readouterr().out
    assert gpu_label_check.main(["import", str(tmp_path / "gpu_bad.h5"), "--dataset", str(shipped), *common]) == 1
    assert len(Dataset(shipped)) == 4
