"""``merge``: several datasets (e.g. the shards of an array labelling job) into one.

With ``order`` (the pool the shards were labelled from) records and failures are put in the pool's order,
so the merge of ``mlff data label POOL --shard K/N`` runs holds, record for record, what one serial
``mlff data label POOL`` run writes (only the provenance of each calculation, host and time, differs).
A geometry in two inputs is an error unless both hold the very same record (same content hash: a dataset that
already holds an earlier merge of the same shards), which is kept once; the output may be one of the inputs
(shards merged into the dataset they continue): it is replaced only once the merged file is complete.
The merged file keeps where it came from: its attribute ``merged_from`` lists every input with its checksum,
counts and the input file's own provenance (its creation, and an upgrade if it had one).
A merge keeps one level of theory and one set of numerical settings, as labelling does (``mlff.data.levels``):
inputs at another level are refused unless ``allow_mixed_levels``; records at another numerical setting join
through a measured ``calibration`` (``mlff.data.numerics``), which shifts their energy and records it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Sequence

import h5py

from mlff.data.levels import check_one_level, levels_in
from mlff.data.numerics import NumericsCalibration
from mlff.data.records import content_hash, geometry_hash
from mlff.data.store import TABLES, Dataset
from mlff.errors import MLFFError
from mlff.lock import WriterLock, lock_path_for

__all__ = ["merge", "pool_rank", "shard"]


def shard(items: Sequence, spec: str) -> list:
    """Items ``K, K+N, K+2N, ...`` of ``items`` for ``spec`` "K/N" (0 <= K < N): every N-th structure, so
    shards of a pool sorted by size or reaction coordinate cost about the same."""
    k, sep, n = str(spec).partition("/")
    if not (sep and k.strip().isdigit() and n.strip().isdigit() and 0 <= int(k) < int(n)):
        raise MLFFError(f"shard {spec!r}: expected K/N with 0 <= K < N, e.g. 0/4")
    return list(items)[int(k)::int(n)]


def pool_rank(pool) -> dict[str, int]:
    """Geometry hash -> the index of its first occurrence in ``pool`` (the order a merge puts records in)."""
    rank: dict[str, int] = {}
    for k, atoms in enumerate(pool):
        rank.setdefault(geometry_hash(atoms), k)
    return rank


def merge(inputs: Sequence[str | Path], output: str | Path, *, order=None, overwrite: bool = False,
          description: str = "", allow_mixed_levels: bool = False,
          calibration: NumericsCalibration | None = None) -> dict[str, int]:
    """Write the records and failures of ``inputs`` into a new dataset ``output``; returns the counts.

    ``order``: the pool's structures (ASE Atoms); every record must come from it (by geometry hash), and
    all come out in its order. A geometry in two inputs is an error (shards never overlap) unless the two
    records are identical; then it is kept once.
    """
    if not inputs:
        raise MLFFError("merge: give at least one input dataset")
    output = Path(output)
    if output.exists() and not overwrite:
        raise MLFFError(f"{output} exists; pass overwrite=True (or --overwrite) to replace it")
    tables: dict[str, list] = {t: [] for t in TABLES}
    seen: dict[str, tuple[str, str]] = {}
    sources, precisions = [], set()
    for path in inputs:
        ds = Dataset(path)
        sources.append(_source(ds))
        precisions.add(ds.precision)
        for table in TABLES:
            for atoms in ds.read(table=table):
                if table == "records" and calibration is not None:
                    atoms = calibration.shift_if_calibrated(atoms, f"a record of {path}")
                h, c = geometry_hash(atoms), content_hash(atoms)
                if h in seen and seen[h][1] == c:
                    continue  # the same record twice: kept once
                if h in seen:
                    raise MLFFError(f"merge: a geometry of {path} ({table}) is also in {seen[h][0]}, with other "
                                    "labels or provenance; inputs must not overlap")
                seen[h] = (str(path), c)
                tables[table].append(atoms)
    _check_levels(tables["records"], allow_mixed_levels)
    if order is not None:
        rank = pool_rank(order)
        for table, items in tables.items():
            missing = [a for a in items if geometry_hash(a) not in rank]
            if missing:
                raise MLFFError(f"merge: a {table} entry ({missing[0].get_chemical_formula()}, source "
                                f"{missing[0].info.get('source', '?')!r}) is not in the pool given as the order")
            items.sort(key=lambda a: rank[geometry_hash(a)])
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.merge-") as scratch:
        out = Dataset.create(Path(scratch) / output.name,
                             description=description or f"merged from {len(inputs)} dataset(s)",
                             precision=precisions.pop() if len(precisions) == 1 else "float64")
        for table, items in tables.items():
            out.append(items, table=table, where=f"{output} {table}", require=())
        with h5py.File(out.path, "a") as f:
            f.attrs["merged_from"] = json.dumps(sources)
        with WriterLock(lock_path_for(output), f"dataset {output}"):
            os.replace(out.path, output)
    return {table: len(items) for table, items in tables.items()}


def _check_levels(records, allow_mixed_levels: bool) -> None:
    present = levels_in(r.info for r in records)
    if len(present) > 1:
        first = present[0]
        for level, numerics, count in present[1:]:
            check_one_level([first], level, numerics, f"merge: the inputs ({first[2]} records)",
                            incoming=f"{count} other record(s)", allow_mixed_levels=allow_mixed_levels)


def _source(ds: Dataset) -> dict:
    """One input of a merge as the merged file records it (from the input's own summary)."""
    summary = ds.summary()
    return {key: summary[key] for key in ("path", "checksum", "records", "failures", "description", "created",
                                          "upgraded") if key in summary}
