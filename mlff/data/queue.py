"""Label queues for a DFT run elsewhere (a GPU node), and the checks and import of the labels it brings back.

A queue is a list of pool records (exact geometries from the pool's HDF5 file) in the order they should be
labelled, leaving out every geometry the shipped dataset already holds. Geometries are matched by hash, and
where an exported text file (extxyz, positions rounded to 8 decimals) names the order, its entries are
matched back to the pool by position (to ``tol_A``): rounding changes the geometry hash, so a label computed
on a rounded geometry carries the rounded geometry's hash, never its pool record's.

    queue, report = build_label_queue(pool, order=extxyz_structures, labelled=dataset, first_tags=("holdout-scan",))
    diffs = compare_labels(gpu_records, cpu_records)           # same geometry hash, energies and forces compared
    added = import_labels(dataset, gpu_records, note={...})     # new geometries only, provenance kept (+ note)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.units import Hartree

from mlff.data.levels import check_one_level, effective_numerics_of, level_of, levels_in
from mlff.data.numerics import NumericsCalibration
from mlff.data.records import geometry_hash, labels
from mlff.data.store import Dataset
from mlff.errors import MLFFError

__all__ = ["QueueReport", "build_label_queue", "match_to_pool", "LabelDiff", "compare_labels", "import_labels",
           "same_level"]


@dataclass
class QueueReport:
    first: int  # records taken for first_tags (not yet labelled)
    ordered: int  # records taken from the order list (not yet labelled, not already queued)
    skipped_labelled: int  # geometries (first or ordered) the labelled dataset already holds
    skipped_duplicates: int  # ordered entries already queued (e.g. a held-out point also in the order list)
    max_match_A: float  # largest |position difference| of an order entry and its pool record
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{self.first + self.ordered} queued ({self.first} first-tagged, {self.ordered} in order); "
                f"{self.skipped_labelled} already labelled, {self.skipped_duplicates} duplicates skipped; "
                f"order matched to the pool within {self.max_match_A:.1e} Å")


def match_to_pool(structures: Sequence[Atoms], pool: Sequence[Atoms], tol_A: float = 1e-6) -> tuple[list[int], float]:
    """For each structure, the index of the pool record with the same atoms at positions within ``tol_A``.

    Returns (indices, largest deviation in Å). MLFFError when a structure has no such pool record."""
    keys: dict[tuple, list[int]] = {}
    for k, atoms in enumerate(pool):
        keys.setdefault(tuple(atoms.numbers), []).append(k)
    stacks = {key: np.stack([pool[k].positions for k in ks]) for key, ks in keys.items()}  # [n, atoms, 3]
    found, worst = [], 0.0
    for j, atoms in enumerate(structures):
        key = tuple(atoms.numbers)
        if key not in keys:
            raise MLFFError(f"structure {j} ({atoms.get_chemical_formula()}): no pool record has these atoms")
        dev = np.abs(stacks[key] - atoms.positions[None]).max(axis=(1, 2))  # [n] Å
        best = int(np.argmin(dev))
        if dev[best] > tol_A:
            raise MLFFError(f"structure {j}: the nearest pool record differs by {dev[best]:.2e} Å (> {tol_A} Å)")
        found.append(keys[key][best])
        worst = max(worst, float(dev[best]))
    return found, worst


def build_label_queue(pool: Sequence[Atoms], *, order: Sequence[Atoms] = (), labelled: Sequence[str] = (),
                      first_tags: Sequence[str] = (), tol_A: float = 1e-6) -> tuple[list[Atoms], QueueReport]:
    """Pool records to label: those tagged ``first_tags`` (pool order), then those named by ``order``.

    ``order``: structures (e.g. read back from an extxyz queue) matched to their pool records by position;
    ``labelled``: geometry hashes already labelled. An entry is skipped when its pool record's hash or its
    own (rounded) hash is labelled, so labels computed on either geometry count as done."""
    done = set(labelled)
    hashes = [geometry_hash(a) for a in pool]
    queued: list[int] = []
    skipped = 0
    for k, atoms in enumerate(pool):
        if any(t in atoms.info.get("tags", []) for t in first_tags):
            if hashes[k] in done:
                skipped += 1
            else:
                queued.append(k)
    n_first = len(queued)
    matched, worst = match_to_pool(order, pool, tol_A) if len(order) else ([], 0.0)
    duplicates = 0
    for entry, k in zip(order, matched):
        if hashes[k] in done or geometry_hash(entry) in done:
            skipped += 1
        elif k in queued:
            duplicates += 1
        else:
            queued.append(k)
    report = QueueReport(n_first, len(queued) - n_first, skipped, duplicates, worst)
    return [pool[k] for k in queued], report


@dataclass
class LabelDiff:
    index: int  # position in the first list
    source: str
    dE_Ha: float  # first - second
    max_dF_eV_A: float  # largest |component difference|

    def ok(self, tol_E_Ha: float, tol_F_eV_A: float) -> bool:
        return abs(self.dE_Ha) <= tol_E_Ha and self.max_dF_eV_A <= tol_F_eV_A


def compare_labels(first: Sequence[Atoms], second: Sequence[Atoms]) -> list[LabelDiff]:
    """Energy and force differences of the records of ``first`` whose geometry ``second`` also labels."""
    by_hash = {geometry_hash(a): a for a in second}
    out = []
    for k, a in enumerate(first):
        b = by_hash.get(geometry_hash(a))
        if b is None:
            continue
        la, lb = labels(a), labels(b)
        if "energy" not in la or "energy" not in lb:
            raise MLFFError(f"record {k} ({a.info.get('source', '?')}): both sides need an energy to compare")
        dF = np.abs(la["forces"] - lb["forces"]).max() if "forces" in la and "forces" in lb else float("nan")
        out.append(LabelDiff(k, str(a.info.get("source", "")), (la["energy"] - lb["energy"]) / Hartree, float(dF)))
    return out


def same_level(a: Atoms, b: Atoms) -> bool:
    """Whether two records were labelled at the same level of theory and (effective) numerical settings, by any
    code (a GPU4PySCF label and a PySCF label of the same level are compared with each other)."""
    def key(record: Atoms) -> tuple:
        prov = record.info.get("provenance", {})
        return {**level_of(prov), "code": ""}, effective_numerics_of(prov)

    return key(a) == key(b)


def import_labels(dataset: Dataset, records: Sequence[Atoms], *, note: dict | None = None,
                  exclude: Sequence[str] = (), calibration: NumericsCalibration | None = None) -> int:
    """Append the records whose geometry ``dataset`` lacks, provenance kept (``note`` added to it).

    ``exclude``: geometry hashes never to import (a held-out test set's). MLFFError when a record's level of
    theory or numerical settings differ from the dataset's (its code may: GPU4PySCF labels, compared with PySCF's
    by ``workflows/gpu_label_check.py``, join a PySCF dataset); records at ``calibration``'s settings are shifted
    to its reference settings first (``mlff.data.numerics``). Returns how many were added."""
    existing = set(dataset.column("geometry_hash")) if len(dataset) else set()
    existing.update(exclude)
    present = levels_in(dataset.infos()) if len(dataset) else []
    new = []
    for k, record in enumerate(records):
        where = f"record {k} ({record.info.get('source', '?')})"
        prov = record.info.get("provenance", {})
        if calibration is not None:
            record = calibration.shift_if_calibrated(record, where)
            prov = record.info.get("provenance", {})
        if present:
            check_one_level(present, level_of(prov), effective_numerics_of(prov), str(dataset.path), incoming=where,
                            compare_code=False)
        elif new:  # an empty dataset takes the first record's level
            first = new[0].info.get("provenance", {})
            check_one_level([(level_of(first), effective_numerics_of(first), len(new))], level_of(prov),
                            effective_numerics_of(prov), "the records imported before it", incoming=where,
                            compare_code=False)
        h = geometry_hash(record)
        if h in existing:
            continue
        existing.add(h)
        copy = record.copy()
        copy.calc = record.calc
        copy.info["provenance"] = {**record.info.get("provenance", {}), **(note or {})}
        new.append(copy)
    if new:
        dataset.append(new, where=f"imported into {dataset.path}")
    return len(new)
