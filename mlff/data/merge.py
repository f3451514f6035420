"""``merge``: several datasets (e.g. the shards of an array labelling job) into one.

With ``order`` (the pool the shards were labelled from) records and failures are put in the pool's order,
so the merge of ``mlff data label POOL --shard K/N`` runs holds, record for record, what one serial
``mlff data label POOL`` run writes (only the provenance of each calculation, host and time, differs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mlff.data.records import geometry_hash
from mlff.data.store import TABLES, Dataset
from mlff.errors import MLFFError

__all__ = ["merge", "shard"]


def shard(items: Sequence, spec: str) -> list:
    """Items ``K, K+N, K+2N, ...`` of ``items`` for ``spec`` "K/N" (0 <= K < N): every N-th structure, so
    shards of a pool sorted by size or reaction coordinate cost about the same."""
    k, sep, n = str(spec).partition("/")
    if not (sep and k.strip().isdigit() and n.strip().isdigit() and 0 <= int(k) < int(n)):
        raise MLFFError(f"shard {spec!r}: expected K/N with 0 <= K < N, e.g. 0/4")
    return list(items)[int(k)::int(n)]


def _pool_rank(pool) -> dict[str, int]:
    rank: dict[str, int] = {}
    for k, atoms in enumerate(pool):
        rank.setdefault(geometry_hash(atoms), k)
    return rank


def merge(inputs: Sequence[str | Path], output: str | Path, *, order=None, overwrite: bool = False,
          description: str = "") -> dict[str, int]:
    """Write the records and failures of ``inputs`` into a new dataset ``output``; returns the counts.

    ``order``: the pool's structures (ASE Atoms); every record must come from it (by geometry hash), and
    all come out in its order. A geometry in two inputs is an error (shards never overlap).
    """
    if not inputs:
        raise MLFFError("merge: give at least one input dataset")
    tables: dict[str, list] = {t: [] for t in TABLES}
    seen: dict[str, str] = {}
    for path in inputs:
        ds = Dataset(path)
        for table in TABLES:
            for atoms in ds.read(table=table):
                h = geometry_hash(atoms)
                if h in seen:
                    raise MLFFError(f"merge: a geometry of {path} ({table}) is also in {seen[h]}; inputs must not overlap")
                seen[h] = str(path)
                tables[table].append(atoms)
    if order is not None:
        rank = _pool_rank(order)
        for table, items in tables.items():
            missing = [a for a in items if geometry_hash(a) not in rank]
            if missing:
                raise MLFFError(f"merge: a {table} entry ({missing[0].get_chemical_formula()}, source "
                                f"{missing[0].info.get('source', '?')!r}) is not in the pool given as the order")
            items.sort(key=lambda a: rank[geometry_hash(a)])
    out = Dataset.create(output, overwrite=overwrite,
                         description=description or f"merged from {len(inputs)} dataset(s)")
    for table, items in tables.items():
        out.append(items, table=table, where=f"{output} {table}", require=())
    return {table: len(items) for table, items in tables.items()}
