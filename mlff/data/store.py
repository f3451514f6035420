"""The HDF5 dataset store: labelled configurations (and recorded failures) with provenance per record.

Layout (one group per table, ``records`` and ``failures``; A atoms in all, R records)::

    numbers [A] int16, positions [A,3] Å, forces [A,3] eV/Å (NaN rows: no forces)
    offset [R] int64 (first atom), n_atoms [R] int64, cell [R,3,3] Å, pbc [R,3] bool
    energy [R] eV (NaN: none), stress [R,6] eV/Å³ Voigt (NaN: none), charge [R] e, multiplicity [R]
    geometry_hash [R], content_hash [R] (sha256 hex), info [R] JSON (tags, xi, source, provenance, fixed)

Appending is crash-safe by copy-on-write: the new records go into a copy that replaces the file in one
atomic rename, so a run killed at any point leaves the file as it was before the interrupted append.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from pathlib import Path
from typing import Callable, Iterable, Sequence

import h5py
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.stress import full_3x3_to_voigt_6_stress

from mlff.errors import MLFFError
from mlff.data.records import content_hash, geometry_hash, json_info, labels, validate
from mlff.provenance import provenance

__all__ = ["Dataset", "TABLES"]

FORMAT, VERSION = "mlff-dataset", 1
TABLES = ("records", "failures")
_PER_ATOM = {"numbers": ((), np.int16), "positions": ((3,), np.float64), "forces": ((3,), np.float64)}
_PER_RECORD = {"offset": ((), np.int64), "n_atoms": ((), np.int64), "cell": ((3, 3), np.float64),
               "pbc": ((3,), bool), "energy": ((), np.float64), "stress": ((6,), np.float64),
               "charge": ((), np.int32), "multiplicity": ((), np.int32),
               "geometry_hash": ((), h5py.string_dtype()), "content_hash": ((), h5py.string_dtype()),
               "info": ((), h5py.string_dtype())}


def _create_table(group: h5py.Group) -> None:
    for name, (shape, dtype) in {**_PER_ATOM, **_PER_RECORD}.items():
        compress = {"compression": "gzip", "shuffle": True} if name in _PER_ATOM else {}
        group.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                             chunks=(1024, *shape), **compress)


def _columns(atoms_list: Sequence[Atoms], first_atom: int) -> tuple[dict, dict]:
    """Per-atom and per-record arrays for ``atoms_list``; offsets start at ``first_atom``."""
    n_atoms = np.array([len(a) for a in atoms_list], np.int64)
    per_atom = {"numbers": np.concatenate([a.numbers for a in atoms_list]).astype(np.int16),
                "positions": np.concatenate([a.positions for a in atoms_list])}
    forces, energy, stress = [], [], []
    for a in atoms_list:
        lab = labels(a)
        forces.append(lab.get("forces", np.full((len(a), 3), np.nan)))
        energy.append(lab.get("energy", np.nan))
        s = lab.get("stress", np.full(6, np.nan))
        stress.append(full_3x3_to_voigt_6_stress(s) if s.shape == (3, 3) else s)
    per_atom["forces"] = np.concatenate(forces)
    per_record = {
        "offset": first_atom + np.concatenate([[0], np.cumsum(n_atoms)[:-1]]), "n_atoms": n_atoms,
        "cell": np.stack([a.cell.array for a in atoms_list]), "pbc": np.stack([a.pbc for a in atoms_list]),
        "energy": np.array(energy, np.float64), "stress": np.stack(stress),
        "charge": np.array([int(a.info.get("charge", 0)) for a in atoms_list], np.int32),
        "multiplicity": np.array([int(a.info.get("multiplicity", 1)) for a in atoms_list], np.int32),
        "geometry_hash": [geometry_hash(a) for a in atoms_list],
        "content_hash": [content_hash(a) for a in atoms_list],
        "info": [json.dumps(json_info(a), sort_keys=True) for a in atoms_list]}
    return per_atom, per_record


def _extend(dataset: h5py.Dataset, values) -> None:
    values = np.asarray(values, dtype=object if dataset.dtype.kind == "O" else dataset.dtype)
    start = dataset.shape[0]
    dataset.resize(start + len(values), axis=0)
    dataset[start:] = values


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{platform.node()}-{os.getpid()}")


def _remove_stale_copies(path: Path) -> None:
    """Delete copies left by appends killed before their rename (this host's dead processes only)."""
    for copy in path.parent.glob(f".{path.name}.tmp-{platform.node()}-*"):
        try:
            os.kill(int(copy.name.rsplit("-", 1)[1]), 0)
        except ProcessLookupError:
            copy.unlink(missing_ok=True)
        except (ValueError, PermissionError):
            continue


class Dataset:
    """An HDF5 dataset of configurations. ``Dataset.create(path)`` makes one, ``Dataset(path)`` opens one.

    Records come in and out as ASE ``Atoms`` (see ``mlff.data.records``); files are opened only for the
    duration of a call, so a Dataset object holds no file handle.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise MLFFError(f"no dataset at {self.path} (create one with Dataset.create or `mlff data import`)")
        _remove_stale_copies(self.path)
        with self._open() as f:
            if f.attrs.get("format") != FORMAT:
                raise MLFFError(f"{self.path} is not an mlff dataset (no format={FORMAT!r} attribute)")

    @classmethod
    def create(cls, path: str | Path, *, description: str = "", overwrite: bool = False) -> "Dataset":
        path = Path(path)
        if path.exists() and not overwrite:
            raise MLFFError(f"{path} exists; pass overwrite=True (or --overwrite) to replace it")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_name(path)
        with h5py.File(tmp, "w") as f:
            f.attrs.update(format=FORMAT, version=VERSION, description=description,
                           provenance=json.dumps(provenance()))
            for table in TABLES:
                _create_table(f.create_group(table))
        os.replace(tmp, path)
        return cls(path)

    def _open(self, mode: str = "r") -> h5py.File:
        try:
            return h5py.File(self.path, mode)
        except OSError as err:
            raise MLFFError(f"cannot open {self.path} as HDF5: {err}") from None

    # ---- writing ------------------------------------------------------------------------------
    def append(self, atoms_list: Iterable[Atoms], *, table: str = "records", where: str = "record",
               require=("energy", "forces"), elements=None) -> int:
        """Validate every record, then append all of them atomically. Returns the table's new length.

        ``where`` names the source in error messages ("file.xyz record 3: forces contain NaN").
        ``require``: labels every record must carry (``()`` for unlabelled geometries, e.g. a pool).
        """
        atoms_list = list(atoms_list)
        self._check_table(table)
        for k, atoms in enumerate(atoms_list):
            validate(atoms, f"{where} {k}", require=require, elements=elements)
        if not atoms_list:
            return len(self) if table == "records" else self.count(table)
        tmp = _tmp_name(self.path)
        shutil.copyfile(self.path, tmp)
        try:
            with h5py.File(tmp, "a") as f:
                group = f[table]
                per_atom, per_record = _columns(atoms_list, group["numbers"].shape[0])
                for name, values in {**per_atom, **per_record}.items():
                    _extend(group[name], values)
                length = group["offset"].shape[0]
            _fsync(tmp)
            os.replace(tmp, self.path)
            _fsync(self.path.parent)
        finally:
            tmp.unlink(missing_ok=True)
        return length

    # ---- reading ------------------------------------------------------------------------------
    def _check_table(self, table: str) -> None:
        if table not in TABLES:
            raise MLFFError(f"unknown table {table!r}; expected one of {', '.join(TABLES)}")

    def count(self, table: str = "records") -> int:
        self._check_table(table)
        with self._open() as f:
            return f[table]["offset"].shape[0]

    def __len__(self) -> int:
        return self.count("records")

    def column(self, name: str, table: str = "records") -> np.ndarray:
        """One per-record column (``energy``, ``charge``, ``geometry_hash``, ...) as an array."""
        self._check_table(table)
        with self._open() as f:
            if name not in _PER_RECORD:
                raise MLFFError(f"no column {name!r}; expected one of {', '.join(_PER_RECORD)}")
            data = f[table][name][()]
        return np.array([v.decode() if isinstance(v, bytes) else v for v in data]) if data.dtype.kind == "O" else data

    def infos(self, table: str = "records") -> list[dict]:
        """The info dict of every record (with ``charge`` and ``multiplicity``)."""
        charge, multiplicity = self.column("charge", table), self.column("multiplicity", table)
        return [{**json.loads(s), "charge": int(c), "multiplicity": int(m)}
                for s, c, m in zip(self.column("info", table), charge, multiplicity)]

    def read(self, indices: Sequence[int] | None = None, *, table: str = "records") -> list[Atoms]:
        """Records as ASE Atoms with a SinglePointCalculator holding their labels."""
        self._check_table(table)
        with self._open() as f:
            g = f[table]
            cols = {name: g[name][()] for name in _PER_RECORD}
            atom_cols = {name: g[name][()] for name in _PER_ATOM}
        n = len(cols["offset"])
        indices = range(n) if indices is None else [int(i) for i in indices]
        return [self._atoms(cols, atom_cols, k) for k in self._checked(indices, n)]

    def _checked(self, indices, n: int):
        for k in indices:
            if not -n <= k < n:
                raise MLFFError(f"record {k} out of range: {self.path} holds {n}")
            yield k % n

    @staticmethod
    def _atoms(cols: dict, atom_cols: dict, k: int) -> Atoms:
        start, stop = cols["offset"][k], cols["offset"][k] + cols["n_atoms"][k]
        info = json.loads(cols["info"][k])
        info.update(charge=int(cols["charge"][k]), multiplicity=int(cols["multiplicity"][k]))
        atoms = Atoms(numbers=atom_cols["numbers"][start:stop].astype(int),
                      positions=atom_cols["positions"][start:stop], cell=cols["cell"][k], pbc=cols["pbc"][k],
                      info=info)
        if info.get("fixed"):
            atoms.set_constraint(FixAtoms(indices=info["fixed"]))
        forces = atom_cols["forces"][start:stop]
        results = {"energy": float(cols["energy"][k]), "forces": forces, "stress": cols["stress"][k]}
        results = {key: v for key, v in results.items() if np.all(np.isfinite(v))}
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms

    # ---- subsets and splits -------------------------------------------------------------------
    def indices(self, *, tag: str | None = None, where: Callable[[dict], bool] | None = None) -> np.ndarray:
        """Records carrying ``tag`` (in ``info["tags"]``) and/or for which ``where(info)`` is true."""
        chosen = []
        for k, info in enumerate(self.infos()):
            if tag is not None and tag not in info.get("tags", []):
                continue
            if where is not None and not where(info):
                continue
            chosen.append(k)
        return np.array(chosen, dtype=np.int64)

    def split(self, fractions: dict[str, float] | None = None, *, seed: int = 0,
              group_by: str | None = None) -> dict[str, np.ndarray]:
        """Reproducible split: each record goes to a split by a hash of (seed, its geometry hash), so a
        record keeps its split when the dataset grows. ``group_by`` (an info key, e.g. "scan") keeps each
        group whole, e.g. a restrained scan held out of training entirely."""
        fractions = fractions or {"train": 0.8, "valid": 0.1, "test": 0.1}
        if any(v < 0 for v in fractions.values()) or not np.isclose(sum(fractions.values()), 1.0):
            raise MLFFError(f"split fractions must be non-negative and sum to 1, got {fractions}")
        keys = self.column("geometry_hash")
        if group_by is not None:
            keys = [str(info.get(group_by, h)) for info, h in zip(self.infos(), keys)]
        u = np.array([int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:15], 16) / 16**15 for key in keys])
        edges = np.cumsum(list(fractions.values()))
        bucket = np.minimum(np.searchsorted(edges, u, side="right"), len(edges) - 1)
        return {name: np.flatnonzero(bucket == b) for b, name in enumerate(fractions)}

    # ---- summary ------------------------------------------------------------------------------
    def checksum(self) -> str:
        """sha256 over the content hashes of all records, in order: one number for the whole dataset."""
        return hashlib.sha256("".join(self.column("content_hash")).encode()).hexdigest()

    def summary(self) -> dict:
        """Counts, composition, tags, label ranges, creation provenance and checksum."""
        with self._open() as f:
            attrs = {"description": str(f.attrs.get("description", "")),
                     "created": json.loads(f.attrs.get("provenance", "{}"))}
            numbers = f["records"]["numbers"][()]
        energy, n_atoms = self.column("energy"), self.column("n_atoms")
        tags: dict[str, int] = {}
        for info in self.infos():
            for t in info.get("tags", []):
                tags[t] = tags.get(t, 0) + 1
        from ase.data import chemical_symbols

        return {"path": str(self.path), "records": len(self), "failures": self.count("failures"),
                "atoms": int(len(numbers)), "elements": [chemical_symbols[z] for z in np.unique(numbers)],
                "atoms_per_record": sorted({int(n) for n in n_atoms}), "tags": tags,
                "energy_eV": [float(np.nanmin(energy)), float(np.nanmax(energy))] if np.isfinite(energy).any() else None,
                "checksum": self.checksum(), **attrs}
