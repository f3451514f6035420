"""``upgrade``: rewrite a dataset of an older format version in the current one, in place.

Version 1 files store the per-record columns (cell, stress, hashes, info) uncompressed in chunks of 1 024 rows,
so a file of four isolated atoms takes 276 kB; version 2 compresses every column (the same file: 58 kB). The
records, failures, their order, the precision, the description and the original provenance stay as they are;
the content checksum is checked to be unchanged before the new file replaces the old one, and the file's
attribute ``upgraded`` records from which version, when and by what.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import h5py

from mlff.data.store import TABLES, VERSION, Dataset
from mlff.errors import MLFFError
from mlff.lock import WriterLock, lock_path_for
from mlff.provenance import provenance

__all__ = ["upgrade"]


def upgrade(path: str | Path) -> dict:
    """Rewrite ``path`` in format version ``VERSION`` (nothing to do when it already is); returns
    {"path", "from_version", "to_version", "bytes_before", "bytes_after", "checksum"} (checksum None when
    nothing was rewritten: reading every record to hash it is the cost of an upgrade, not of a no-op)."""
    path = Path(path)
    old = Dataset(path)
    before = path.stat().st_size
    summary = {"path": str(path), "from_version": old.version, "to_version": VERSION, "bytes_before": before,
               "bytes_after": before, "checksum": None}
    if old.version >= VERSION:
        return summary
    checksum = summary["checksum"] = old.checksum()
    with h5py.File(path, "r") as f:
        attrs = {k: f.attrs[k] for k in f.attrs}
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.upgrade-") as scratch:
        new = Dataset.create(Path(scratch) / path.name, description=str(attrs.get("description", "")),
                             precision=old.precision)
        for table in TABLES:
            new.append(old.read(table=table), table=table, where=f"{path} {table}", require=())
        with h5py.File(new.path, "a") as f:
            for key, value in attrs.items():  # the original provenance, and anything else the file said
                if key not in ("format", "version", "precision"):
                    f.attrs[key] = value
            f.attrs["upgraded"] = json.dumps({"from_version": old.version, "to_version": VERSION, **provenance()})
        if Dataset(new.path).checksum() != checksum:
            raise MLFFError(f"upgrade of {path}: the rewritten file does not hold the same records (checksum "
                            "changed); the original is left as it was")
        with WriterLock(lock_path_for(path), f"dataset {path}"):
            os.replace(new.path, path)
    summary["bytes_after"] = path.stat().st_size
    return summary
