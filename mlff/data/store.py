"""The HDF5 dataset store: labelled configurations (and recorded failures) with provenance per record.

Layout (one group per table, ``records`` and ``failures``; A atoms in all, R records)::

    numbers [A] int16, positions [A,3] Å, forces [A,3] eV/Å (NaN rows: no forces)
    offset [R] int64 (first atom), n_atoms [R] int64, cell [R,3,3] Å, pbc [R,3] bool
    energy [R] eV (NaN: none), stress [R,6] eV/Å³ Voigt (NaN: none), charge [R] e, multiplicity [R]
    geometry_hash [R], content_hash [R] (sha256 hex), info [R] JSON (tags, xi, source, provenance, fixed)

Version 2 files (written since format version 2) compress every column (gzip, shuffle), store the hashes as
fixed 64-byte strings and the info JSON as one gzip-compressed byte stream (``info_bytes`` [B] uint8, with
``info_offset`` [R] and ``info_length`` [R]); ``precision`` (file attribute) "float32" stores positions and
forces as float32. Reading always returns float64; the hashes are computed from the stored (rounded) values.
Version 1 files (info as variable-length strings) are read and appended to in their own layout.

Appending is crash-safe by copy-on-write: the new records go into a copy that replaces the file in one
atomic rename, so a run killed at any point leaves the file as it was before the interrupted append. One
process at a time appends (a lock file ``<path>.lock``, see ``mlff.lock``); readers need no lock.
"""

from __future__ import annotations

import contextlib
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

from mlff.errors import MLFFError
from mlff.data.records import content_digest, geometry_digest, json_info, labels, validate, voigt
from mlff.lock import WriterLock, lock_path_for
from mlff.provenance import provenance

__all__ = ["Dataset", "TABLES", "PRECISIONS"]

FORMAT, VERSION = "mlff-dataset", 2
TABLES = ("records", "failures")
PRECISIONS = ("float64", "float32")
_STR = h5py.string_dtype()
_PER_ATOM = {"numbers": ((), np.int16), "positions": ((3,), np.float64), "forces": ((3,), np.float64)}
_PER_RECORD = {"offset": ((), np.int64), "n_atoms": ((), np.int64), "cell": ((3, 3), np.float64),
               "pbc": ((3,), bool), "energy": ((), np.float64), "stress": ((6,), np.float64),
               "charge": ((), np.int32), "multiplicity": ((), np.int32),
               "geometry_hash": ((), _STR), "content_hash": ((), _STR), "info": ((), _STR)}
_HASHES = ("geometry_hash", "content_hash")
_INFO_V2 = {"info_offset": ((), np.int64), "info_length": ((), np.int64)}  # into info_bytes [B] uint8
_INFO_CHUNK = 1 << 16  # bytes per chunk of the compressed info stream
_BROKEN = (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError)  # what h5py raises on bad files


def _layout(version: int, precision: str) -> dict:
    """name -> (shape, dtype, compressed, chunk rows) of every dataset of a table."""
    real = np.float32 if precision == "float32" else np.float64
    if version < 2:
        atom = {n: (sh, dt, True, 1024) for n, (sh, dt) in _PER_ATOM.items()}
        return {**atom, **{n: (sh, dt, False, 1024) for n, (sh, dt) in _PER_RECORD.items()}}
    atom = {n: (sh, real if n != "numbers" else dt, True, 1024) for n, (sh, dt) in _PER_ATOM.items()}
    rec = {n: (sh, "S64" if n in _HASHES else dt, True, 1024) for n, (sh, dt) in _PER_RECORD.items() if n != "info"}
    return {**atom, **rec, **{n: (sh, dt, True, 1024) for n, (sh, dt) in _INFO_V2.items()},
            "info_bytes": ((), np.uint8, True, _INFO_CHUNK)}


def _create_table(group: h5py.Group, version: int, precision: str) -> None:
    for name, (shape, dtype, compressed, rows) in _layout(version, precision).items():
        compress = {"compression": "gzip", "shuffle": True} if compressed else {}
        group.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                             chunks=(rows, *shape), **compress)


def _rounded(values: np.ndarray, precision: str) -> np.ndarray:
    """``values`` as the file will hold them (float32 files round on the way in), as float64."""
    values = np.asarray(values, np.float64)
    return values.astype(np.float32).astype(np.float64) if precision == "float32" else values


def _columns(atoms_list: Sequence[Atoms], first_atom: int, precision: str) -> tuple[dict, dict]:
    """Per-atom and per-record arrays for ``atoms_list`` as stored; offsets start at ``first_atom``."""
    n_atoms = np.array([len(a) for a in atoms_list], np.int64)
    per_atom = {"numbers": np.concatenate([a.numbers for a in atoms_list]).astype(np.int16),
                "positions": _rounded(np.concatenate([a.positions for a in atoms_list]), precision)}
    forces, energy, stress = [], [], []
    for a in atoms_list:
        lab = labels(a)
        forces.append(lab.get("forces", np.full((len(a), 3), np.nan)))
        energy.append(lab.get("energy", np.nan))
        stress.append(voigt(lab["stress"]) if "stress" in lab else np.full(6, np.nan))
    per_atom["forces"] = _rounded(np.concatenate(forces), precision)
    per_record = {
        "offset": first_atom + np.concatenate([[0], np.cumsum(n_atoms)[:-1]]), "n_atoms": n_atoms,
        "cell": np.stack([a.cell.array for a in atoms_list]), "pbc": np.stack([a.pbc for a in atoms_list]),
        "energy": np.array(energy, np.float64), "stress": np.stack(stress),
        "charge": np.array([int(a.info.get("charge", 0)) for a in atoms_list], np.int32),
        "multiplicity": np.array([int(a.info.get("multiplicity", 1)) for a in atoms_list], np.int32),
        "info": [json.dumps(json_info(a), sort_keys=True) for a in atoms_list]}
    local = {**per_record, "offset": per_record["offset"] - first_atom}
    hashes = [_hashes(local, per_atom, k) for k in range(len(atoms_list))]
    per_record["geometry_hash"] = [g for g, _ in hashes]
    per_record["content_hash"] = [c for _, c in hashes]
    return per_atom, per_record


def _hashes(cols: dict, atom_cols: dict, k: int, *, legacy_stress: bool = False) -> tuple[str, str]:
    """(geometry hash, content hash) of record ``k`` computed from the arrays that hold it."""
    start = int(cols["offset"][k])
    stop = start + int(cols["n_atoms"][k])
    geometry = geometry_digest(atom_cols["numbers"][start:stop], atom_cols["positions"][start:stop],
                               cols["cell"][k], cols["pbc"][k], int(cols["charge"][k]), int(cols["multiplicity"][k]))
    energy, forces, stress = cols["energy"][k], atom_cols["forces"][start:stop], cols["stress"][k]
    if legacy_stress and np.isfinite(stress).all():  # version 1 hashed a 3x3 stress as given
        from ase.stress import voigt_6_to_full_3x3_stress

        stress = voigt_6_to_full_3x3_stress(stress)
    labels_ = [v if np.isfinite(v).all() else None for v in (energy, forces, stress)]
    return geometry, content_digest(geometry, *labels_, cols["info"][k])


def _extend(dataset: h5py.Dataset, values) -> None:
    values = np.asarray(values, dtype=object if dataset.dtype.kind == "O" else dataset.dtype)
    start = dataset.shape[0]
    dataset.resize(start + len(values), axis=0)
    dataset[start:] = values


def _append_columns(group: h5py.Group, per_atom: dict, per_record: dict, version: int) -> None:
    if version >= 2:
        encoded = [s.encode() for s in per_record.pop("info")]
        lengths = np.array([len(b) for b in encoded], np.int64)
        per_record["info_offset"] = group["info_bytes"].shape[0] + np.concatenate([[0], np.cumsum(lengths)[:-1]])
        per_record["info_length"] = lengths
        per_record["info_bytes"] = np.frombuffer(b"".join(encoded), np.uint8)
        for name in _HASHES:
            per_record[name] = np.array([h.encode() for h in per_record[name]], "S64")
    for name, values in {**per_atom, **per_record}.items():
        _extend(group[name], values)


def _read_columns(group: h5py.Group, version: int) -> tuple[dict, dict]:
    """Every column of a table as stored (per-atom reals as float64, hashes and info as str)."""
    atom_cols = {name: group[name][()] for name in _PER_ATOM}
    for name in ("positions", "forces"):
        atom_cols[name] = atom_cols[name].astype(np.float64)
    cols = {name: group[name][()] for name in _PER_RECORD if name != "info" or version < 2}
    for name in _HASHES + (("info",) if version < 2 else ()):
        cols[name] = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in cols[name]], dtype=object)
    if version >= 2:
        cols["info"] = _info_strings(group)
    return cols, atom_cols


def _info_strings(group: h5py.Group) -> np.ndarray:
    blob = group["info_bytes"][()].tobytes()
    offsets, lengths = group["info_offset"][()], group["info_length"][()]
    return np.array([blob[o:o + n].decode() for o, n in zip(offsets, lengths)], dtype=object)


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


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


class Dataset:
    """An HDF5 dataset of configurations. ``Dataset.create(path)`` makes one, ``Dataset(path)`` opens one.

    Records come in and out as ASE ``Atoms`` (see ``mlff.data.records``); files are opened only for the
    duration of a call, so a Dataset object holds no file handle. A file HDF5 cannot read (truncated,
    corrupted) is one ``MLFFError`` line in every operation.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise MLFFError(f"no dataset at {self.path} (create one with Dataset.create or `mlff data import`)")
        _remove_stale_copies(self.path)
        with self._open() as f:
            if f.attrs.get("format") != FORMAT:
                raise MLFFError(f"{self.path} is not an mlff dataset (no format={FORMAT!r} attribute)")
            self.version = int(f.attrs.get("version", 1))
            self.precision = str(f.attrs.get("precision", "float64"))
        if self.version > VERSION:
            raise MLFFError(f"{self.path} is a version {self.version} dataset; this mlff reads versions up to "
                            f"{VERSION}: update mlff")

    @classmethod
    def create(cls, path: str | Path, *, description: str = "", overwrite: bool = False,
               precision: str = "float64") -> "Dataset":
        """A new empty dataset. ``precision="float32"`` stores positions and forces as float32 (half the
        bytes; about 1e-7 relative rounding, applied on the way in, so hashes stay exact)."""
        path = Path(path)
        if precision not in PRECISIONS:
            raise MLFFError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if path.exists() and not overwrite:
            raise MLFFError(f"{path} exists; pass overwrite=True (or --overwrite) to replace it")
        path.parent.mkdir(parents=True, exist_ok=True)
        with WriterLock(lock_path_for(path), f"dataset {path}"):
            tmp = _tmp_name(path)
            with h5py.File(tmp, "w", fs_strategy="fsm", fs_persist=True) as f:  # appends reuse freed space
                f.attrs.update(format=FORMAT, version=VERSION, description=description, precision=precision,
                               provenance=json.dumps(provenance()))
                for table in TABLES:
                    _create_table(f.create_group(table), VERSION, precision)
            os.replace(tmp, path)
        return cls(path)

    @contextlib.contextmanager
    def _open(self, mode: str = "r", path: Path | None = None):
        """The HDF5 file; anything h5py raises on a damaged file becomes one MLFFError line."""
        try:
            handle = h5py.File(path or self.path, mode)
        except _BROKEN as err:
            raise MLFFError(f"cannot open {self.path} as HDF5 ({_first_line(err)}); it is truncated, corrupted "
                            "or not an HDF5 file") from None
        try:
            with handle as f:
                yield f
        except MLFFError:
            raise
        except _BROKEN as err:
            raise MLFFError(f"{self.path}: cannot read the dataset ({_first_line(err)}); the file is truncated "
                            "or corrupted: restore it from a copy") from None

    def writer_lock(self) -> WriterLock:
        """The lock a process holds while it writes this dataset (``with ds.writer_lock(): ...``)."""
        return WriterLock(lock_path_for(self.path), f"dataset {self.path}")

    # ---- writing ------------------------------------------------------------------------------
    def append(self, atoms_list: Iterable[Atoms], *, table: str = "records", where: str = "record",
               require=("energy", "forces"), elements=None) -> int:
        """Validate every record, then append all of them atomically. Returns the table's new length.

        ``where`` names the source in error messages ("file.xyz record 3: forces contain NaN").
        ``require``: labels every record must carry (``()`` for unlabelled geometries, e.g. a pool).
        Refused (one line naming the holder) while another process holds the dataset's writer lock.
        """
        atoms_list = list(atoms_list)
        self._check_table(table)
        for k, atoms in enumerate(atoms_list):
            validate(atoms, f"{where} {k}", require=require, elements=elements)
        if not atoms_list:
            return len(self) if table == "records" else self.count(table)
        with self.writer_lock():
            tmp = _tmp_name(self.path)
            shutil.copyfile(self.path, tmp)
            try:
                with self._open("a", path=tmp) as f:
                    group = f[table]
                    per_atom, per_record = _columns(atoms_list, group["numbers"].shape[0], self.precision)
                    _append_columns(group, per_atom, per_record, self.version)
                    length = group["offset"].shape[0]
                _fsync(tmp)
                os.replace(tmp, self.path)
                _fsync(self.path.parent)
            finally:
                tmp.unlink(missing_ok=True)
        return length

    def geometry_hash(self, atoms: Atoms) -> str:
        """The geometry hash ``atoms`` gets in this dataset (positions rounded as the file stores them)."""
        return geometry_digest(atoms.numbers, _rounded(atoms.positions, self.precision), atoms.cell.array,
                               atoms.pbc, int(atoms.info.get("charge", 0)), int(atoms.info.get("multiplicity", 1)))

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
        if name not in _PER_RECORD:
            raise MLFFError(f"no column {name!r}; expected one of {', '.join(_PER_RECORD)}")
        with self._open() as f:
            if name == "info" and self.version >= 2:
                return _info_strings(f[table])
            data = f[table][name][()]
        return np.array([v.decode() if isinstance(v, bytes) else v for v in data]) if data.dtype.kind in "OS" else data

    def infos(self, table: str = "records") -> list[dict]:
        """The info dict of every record (with ``charge`` and ``multiplicity``)."""
        charge, multiplicity = self.column("charge", table), self.column("multiplicity", table)
        strings = self.column("info", table)
        try:
            return [{**json.loads(s), "charge": int(c), "multiplicity": int(m)}
                    for s, c, m in zip(strings, charge, multiplicity)]
        except ValueError as err:
            raise MLFFError(f"{self.path}: a record's info is not valid JSON ({err}); the file is corrupted") from None

    def _columns_of(self, table: str) -> tuple[dict, dict]:
        self._check_table(table)
        with self._open() as f:
            return _read_columns(f[table], self.version)

    def read(self, indices: Sequence[int] | None = None, *, table: str = "records") -> list[Atoms]:
        """Records as ASE Atoms with a SinglePointCalculator holding their labels."""
        cols, atom_cols = self._columns_of(table)
        n = len(cols["offset"])
        indices = range(n) if indices is None else [int(i) for i in indices]
        try:
            return [self._atoms(cols, atom_cols, k) for k in self._checked(indices, n)]
        except MLFFError:
            raise
        except _BROKEN as err:
            raise MLFFError(f"{self.path}: cannot read the dataset ({_first_line(err)}); the file is "
                            "corrupted: restore it from a copy") from None

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

    # ---- integrity ----------------------------------------------------------------------------
    def _recomputed(self, table: str) -> tuple[list[str], list[str], dict]:
        """Content hashes recomputed from the stored data (as in the file) and the hashes the file stores.

        A version 1 record whose stress was hashed as a 3x3 matrix is recomputed that way."""
        cols, atom_cols = self._columns_of(table)
        self._check_structure(table, cols, atom_cols)
        try:
            computed = [_hashes(cols, atom_cols, k) for k in range(len(cols["offset"]))]
            if self.version < 2:
                computed = [(g, c) if c == cols["content_hash"][k] or not np.isfinite(cols["stress"][k]).all()
                            else _hashes(cols, atom_cols, k, legacy_stress=True) for k, (g, c) in enumerate(computed)]
        except _BROKEN as err:
            raise MLFFError(f"{self.path} {table}: cannot hash the stored data ({_first_line(err)}); the file "
                            "is corrupted") from None
        return [g for g, _ in computed], [c for _, c in computed], cols

    def _check_structure(self, table: str, cols: dict, atom_cols: dict) -> None:
        n, atoms = len(cols["offset"]), len(atom_cols["numbers"])
        lengths = {name: len(v) for name, v in {**cols, **atom_cols}.items()}
        bad = [name for name in cols if lengths[name] != n] + [name for name in atom_cols if lengths[name] != atoms]
        expected = np.concatenate([[0], np.cumsum(cols["n_atoms"])[:-1]]).astype(np.int64) if n else np.zeros(0)
        if bad or (n and (not np.array_equal(cols["offset"], expected) or int(np.sum(cols["n_atoms"])) != atoms)):
            raise MLFFError(f"{self.path} {table}: the columns do not fit together ("
                            + (f"{bad[0]} has {lengths[bad[0]]} rows" if bad else "atom offsets are inconsistent")
                            + "); the file is corrupted")

    def checksum(self) -> str:
        """sha256 over every record's content hash recomputed from the stored arrays and info, in order:
        one number for what the file holds (an edited or damaged record changes it)."""
        return hashlib.sha256("".join(self._recomputed("records")[1]).encode()).hexdigest()

    def verify(self) -> dict[str, int]:
        """Read every record of both tables and check each stored hash against its data; returns the
        counts. A record that does not match is one MLFFError line naming it."""
        counts = {}
        for table in TABLES:
            geometry, content, cols = self._recomputed(table)
            for k in range(len(content)):
                for what, mine, stored in (("geometry", geometry[k], cols["geometry_hash"][k]),
                                           ("content", content[k], cols["content_hash"][k])):
                    if mine != stored:
                        raise MLFFError(f"{self.path} {table} record {k}: its data no longer matches its {what} hash "
                                        f"(stored {stored[:16]}, computed {mine[:16]}): the file was edited or "
                                        "corrupted")
            self.read(table=table)  # every record builds
            counts[table] = len(content)
        return counts

    # ---- summary ------------------------------------------------------------------------------
    def summary(self) -> dict:
        """Counts, composition, tags, label ranges, provenance (creation, upgrade, merge inputs), storage, checksum."""
        with self._open() as f:
            attrs = {"description": str(f.attrs.get("description", "")),
                     "created": json.loads(f.attrs.get("provenance", "{}")),
                     **{key: json.loads(f.attrs[key]) for key in ("upgraded", "merged_from") if key in f.attrs}}
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
                "checksum": self.checksum(), "format_version": self.version, "precision": self.precision, **attrs}
