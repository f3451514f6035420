"""MD trajectories as H5MD 1.1 files (h5py): one particle group per system, chunked and compressed.

    with H5MDWriter("traj.h5md", numbers, masses_amu, pbc, observables=("potential_energy",)) as writer:
        writer.write(step, time_fs, positions, cell, velocities=v, forces=f, observables={"potential_energy": e})
    frames = read_h5md("traj.h5md", ":")          # or ase.io.read("traj.h5md", ":", format="h5md")

Layout (H5MD 1.1): ``h5md/`` (version, author, creator), ``particles/<group>/`` with ``species`` (atomic
numbers), ``mass`` (amu), ``id`` (atom indices in the writer's full system), ``box`` (dimension 3,
boundary "periodic"/"none" per direction; ``edges`` [T,3,3] Å when any direction is periodic),
``position`` [T,n,3] Å, ``velocity`` [T,n,3] Å/fs, ``force`` [T,n,3] kJ/mol/Å, each with ``step`` [T] and
``time`` [T] fs (one pair per group, hard-linked into every element); ``observables/<group>/<name>``
(scalars per frame); ``parameters/mlff`` (provenance, metadata and restarts as JSON attributes).

Forces are stored in kJ mol-1 Angstrom-1 because MDAnalysis's H5MD reader refuses a file whose force unit
it does not know (eV is not among them); ``write`` takes and ``read_h5md`` returns eV/Å.

Storage: per-atom data in one gzip chunk (level 4, shuffle) per frame; step, time, box and observables in
uncompressed chunks of 1024 frames; every dataset resizable along frames.

Durability: frames are kept in memory (at most 64, or ~32 MiB) and written by ``flush`` (also called when
the buffer is full, and by ``close``), which opens the file, appends, flushes HDF5, then raises the commit
counts in ``parameters/mlff/frames`` and closes. Between flushes the file is closed and consistent, so other
processes can read a running trajectory. A flush never rewrites or moves data that the file on disk points
to (compressed chunks are written once, the small uncompressed ones in place), so a SIGKILL even in the
middle of a flush should leave the committed frames intact; readers stop at the commit count. (HDF5 has no
transactions: a torn chunk-index update would show as fill values, step -1 / NaN, which read_h5md refuses.)
"""

from __future__ import annotations

import getpass
import json
from importlib import metadata as _metadata
from pathlib import Path

import h5py
import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from mlff.errors import MLFFError

__all__ = ["EV_TO_KJ_PER_MOL", "FIELDS", "H5MDWriter", "OBSERVABLE_UNITS", "read_h5md"]

EV_TO_KJ_PER_MOL = units.mol / units.kJ  # 1 eV in kJ/mol (ASE's CODATA constants)
# field name -> (write() keyword, unit attribute, factor from the API's unit to the stored one)
FIELDS = {"position": ("positions", "Angstrom", 1.0),
          "velocity": ("velocities", "Angstrom fs-1", 1.0),
          "force": ("forces", "kJ mol-1 Angstrom-1", EV_TO_KJ_PER_MOL)}
OBSERVABLE_UNITS = {"potential_energy": "eV", "kinetic_energy": "eV", "total_energy": "eV", "conserved_energy": "eV",
                    "temperature": "K",
                    "energy_std": "eV", "max_force": "eV Angstrom-1", "max_force_std": "eV Angstrom-1",
                    "xi": "Angstrom", "volume": "Angstrom3", "pressure": "eV Angstrom-3",
                    "cv": "Angstrom", "bias_energy": "eV", "physical_energy": "eV"}
# unit attribute -> what a stored value is divided by to get the API's unit (Å, fs, Å/fs, eV/Å)
_READ_DIVISORS = {"Angstrom": 1.0, "A": 1.0, "nm": 0.1, "pm": 100.0, "fs": 1.0, "ps": 1.0e-3, "ns": 1.0e-6,
                  "Angstrom fs-1": 1.0, "A fs-1": 1.0, "Angstrom ps-1": 1.0e3, "A ps-1": 1.0e3, "nm ps-1": 1.0e2,
                  "eV Angstrom-1": 1.0, "kJ mol-1 Angstrom-1": EV_TO_KJ_PER_MOL,
                  "kJ mol-1 nm-1": 10.0 * EV_TO_KJ_PER_MOL, "kcal mol-1 Angstrom-1": units.mol / units.kcal,
                  "kcal mol-1 A-1": units.mol / units.kcal}
_RESERVED = {"step", "time_fs"}
_SMALL_CHUNK = 1024  # frames per chunk of step, time, box edges and observables
_BUFFER_BYTES = 32 << 20  # at most ~32 MiB of frames held in memory between writes to disk


def _version(name: str) -> str:
    try:
        return _metadata.version(name)
    except _metadata.PackageNotFoundError:
        return "unknown"


def _numpy(value, name: str) -> np.ndarray:
    """A float64 numpy copy of a numpy array, a torch tensor on any device, or a number."""
    if hasattr(value, "detach"):
        value = value.detach().to("cpu").double().numpy()
    try:
        return np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MLFFError(f"{name} must be numeric, got {type(value).__name__}") from exc


def _shaped(value, shape: tuple, name: str) -> np.ndarray:
    array = _numpy(value, name)
    if array.shape != shape:
        raise MLFFError(f"{name} has shape {array.shape}, expected {shape}")
    return array


def _normalize_groups(groups, n_atoms: int) -> dict[str, np.ndarray | slice]:
    if groups is None:
        return {"all": slice(0, n_atoms)}
    if not groups:
        raise MLFFError("groups is empty: give at least one {name: atom indices}")
    out = {}
    for name, index in groups.items():
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise MLFFError(f"group name {name!r} is not valid: expected a non-empty string without '/'")
        if isinstance(index, slice):
            start, stop, stride = index.indices(n_atoms)
            index = slice(start, stop, stride) if stride == 1 else np.arange(start, stop, stride)
        else:
            index = np.asarray(index, dtype=np.int64).reshape(-1)
            if index.size and (index.min() < 0 or index.max() >= n_atoms):
                raise MLFFError(f"group {name!r} has atom indices outside 0..{n_atoms - 1}")
        if len(np.arange(n_atoms)[index]) == 0:
            raise MLFFError(f"group {name!r} has no atoms")
        out[name] = index
    return out


def _series(group: h5py.Group, name: str, shape: tuple, dtype: str, compression=None, per_atom=False) -> h5py.Dataset:
    """A dataset growing along frames. Per-atom data [T, n, 3]: one (compressed) chunk per frame, written once,
    never rewritten; small per-frame data: uncompressed chunks of _SMALL_CHUNK frames, updated in place. So a
    flush never moves bytes that the file on disk still points to. Missing data reads as NaN (step: -1)."""
    opts = {"compression": compression, "compression_opts": 4 if compression == "gzip" else None,
            "shuffle": True} if compression and per_atom else {}
    return group.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                                chunks=(1 if per_atom else _SMALL_CHUNK, *shape),
                                fillvalue=-1 if dtype == "i8" else np.nan, **opts)


def _element(parent: h5py.Group, name: str, shape: tuple, unit: str | None, clock: h5py.Group | None, *,
             per_atom: bool = False, compression=None) -> h5py.Group:
    """A time-dependent H5MD element: value [T, *shape] plus step and time (own, or hard links to ``clock``'s)."""
    group = parent.create_group(name)
    value = _series(group, "value", shape, "f8", compression, per_atom)
    if unit is not None:
        value.attrs["unit"] = unit
    if clock is None:
        _series(group, "step", (), "i8")
        _series(group, "time", (), "f8").attrs["unit"] = "fs"
    else:
        group["step"] = clock["step"]  # hard links: one clock per particle group
        group["time"] = clock["time"]
    return group


class H5MDWriter:
    """Appends MD frames to an H5MD file; one particle group per system (see the module docstring).

    ``write`` keeps a frame when ``step % every == 0`` (it returns whether it did); frames reach the disk at
    ``flush``/``close`` or when the buffer is full (64 frames or ~32 MiB). ``restart_step`` opens an existing file, drops
    its frames after that step and appends, so a restarted run's file equals an uninterrupted run's.
    """

    def __init__(self, path, numbers, masses_amu, pbc, *, groups=None, observables=(),
                 fields=("position", "velocity", "force"), every=1, provenance=None, metadata=None,
                 compression="gzip", restart_step=None):
        self.path = Path(path)
        self.numbers = np.asarray(numbers, dtype=np.int64).reshape(-1)  # [N]
        self.n_atoms = len(self.numbers)
        self.masses_amu = _shaped(masses_amu, (self.n_atoms,), "masses_amu")  # [N]
        self.groups = _normalize_groups(groups, self.n_atoms)
        n_groups = len(self.groups)
        pbc = np.asarray(pbc, dtype=bool)
        if pbc.shape in ((), (3,)):
            pbc = np.tile(np.broadcast_to(pbc, (3,)), (n_groups, 1))
        if pbc.shape != (n_groups, 3):
            raise MLFFError(f"pbc has shape {pbc.shape}, expected (3,) or ({n_groups}, 3): one row per group")
        self.pbc = pbc  # [S, 3]
        self.fields = tuple(fields)
        unknown = [f for f in self.fields if f not in FIELDS]
        if unknown or "position" not in self.fields:
            raise MLFFError(f"fields {list(self.fields)} must include 'position' and only {list(FIELDS)}")
        self.observables = tuple(observables)
        bad = [o for o in self.observables if not isinstance(o, str) or not o or "/" in o or o in _RESERVED]
        if bad or len(set(self.observables)) != len(self.observables):
            raise MLFFError(f"observable names {bad or list(self.observables)} are not valid: expected distinct "
                            f"names without '/', other than {sorted(_RESERVED)}")
        if int(every) < 1:
            raise MLFFError(f"every must be a positive number of steps, got {every}")
        self.every = int(every)
        if compression not in ("gzip", "lzf", None):
            raise MLFFError(f"compression {compression!r} is not supported: expected 'gzip', 'lzf' or None")
        self.compression = compression
        frame_bytes = 24 * self.n_atoms * len(self.fields)
        self.buffer_frames = int(np.clip(_BUFFER_BYTES // frame_bytes, 1, 64))
        self._buffer: list[dict] = []
        self._last_step: int | None = None
        self._skip_repeat = False
        self._closed = False
        record = provenance if provenance is not None else _default_provenance()
        if restart_step is None:
            self._create(record, metadata or {})
        else:
            self._reopen(int(restart_step), record)

    # -- file creation and restart ------------------------------------------------------------------
    def _create(self, provenance: dict, metadata: dict) -> None:
        if self.path.exists():
            raise MLFFError(f"{self.path} already exists: delete it, or pass restart_step to append to it")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(self.path, "w-") as f:
            h5md = f.create_group("h5md")
            h5md.attrs["version"] = np.array([1, 1], dtype=np.int32)
            h5md.create_group("author").attrs["name"] = _user()
            creator = h5md.create_group("creator")
            creator.attrs["name"], creator.attrs["version"] = "mlff", _version("mlff")
            h5md.create_group("modules").create_group("units").attrs["version"] = np.array([1, 0], np.int32)
            for (name, index), pbc in zip(self.groups.items(), self.pbc):
                self._create_group(f, name, index, pbc)
            params = f.create_group("parameters").create_group("mlff")
            params.attrs["provenance"] = json.dumps(provenance, default=str)
            params.attrs["metadata"] = json.dumps(metadata, default=str)
            params.attrs["every"] = self.every
            params.attrs["restarts"] = "[]"
            committed = params.create_group("frames")  # frames per group known complete on disk
            for name in self.groups:
                committed.attrs[name] = np.int64(0)

    def _create_group(self, f: h5py.File, name: str, index, pbc: np.ndarray) -> None:
        ids = np.arange(self.n_atoms)[index]
        particles = f.require_group("particles").create_group(name)
        particles.create_dataset("species", data=self.numbers[ids].astype(np.int32))
        particles.create_dataset("mass", data=self.masses_amu[ids]).attrs["unit"] = "amu"
        particles.create_dataset("id", data=ids)
        box = particles.create_group("box")
        box.attrs["dimension"] = np.int32(3)
        box.attrs["boundary"] = np.array(["periodic" if p else "none" for p in pbc], dtype=h5py.string_dtype())
        n = len(ids)
        clock = _element(particles, "position", (n, 3), "Angstrom", None, per_atom=True, compression=self.compression)
        for field in self.fields:
            if field != "position":
                _element(particles, field, (n, 3), FIELDS[field][1], clock, per_atom=True, compression=self.compression)
        if pbc.any():
            _element(box, "edges", (3, 3), "Angstrom", clock)
        if self.observables:
            observables = f.require_group("observables").create_group(name)
            for obs in self.observables:
                _element(observables, obs, (), OBSERVABLE_UNITS.get(obs), clock)

    def _datasets(self, f: h5py.File, name: str) -> list[h5py.Dataset]:
        """Every per-frame dataset of a group (value datasets first, the shared step and time last)."""
        particles = f["particles"][name]
        out = [particles[field]["value"] for field in self.fields]
        if "edges" in particles["box"]:
            out.append(particles["box/edges/value"])
        out += [f["observables"][name][obs]["value"] for obs in self.observables]
        return out + [particles["position/step"], particles["position/time"]]

    def _reopen(self, restart_step: int, provenance: dict) -> None:
        if not self.path.exists():
            raise MLFFError(f"{self.path} does not exist: cannot restart a trajectory from step {restart_step}")
        try:
            f = h5py.File(self.path, "r+", locking=False)
        except OSError as exc:
            raise MLFFError(f"{self.path} cannot be opened as an HDF5 file for appending: {exc}") from exc
        with f:
            self._check_matches(f)
            dropped = {}
            for name in self.groups:
                datasets = self._datasets(f, name)
                n_frames = min(_committed(f, name), *(d.shape[0] for d in datasets))
                steps = f["particles"][name]["position/step"][:n_frames]
                if (steps < 0).any():
                    raise MLFFError(f"{self.path} group {name}: frames {np.flatnonzero(steps < 0).tolist()} are lost "
                                    "(their index was damaged by a crash during a flush); cannot restart from it")
                keep = int(np.searchsorted(steps, restart_step, side="right"))
                if keep >= 2 and restart_step - steps[keep - 1] >= steps[keep - 1] - steps[keep - 2]:
                    raise MLFFError(f"{self.path} (group {name}) ends at step {steps[keep - 1]}, before checkpoint step "
                                    f"{restart_step}: frames were lost (flush the trajectory at every checkpoint)")
                dropped[name] = int(datasets[-1].shape[0] - keep)
                for dataset in datasets:
                    dataset.resize(keep, axis=0)
                self._last_step = int(steps[keep - 1]) if keep else None
                f["parameters/mlff/frames"].attrs[name] = np.int64(keep)
            params = f["parameters/mlff"]
            restarts = json.loads(params.attrs.get("restarts", "[]"))
            restarts.append({"restart_step": restart_step, "dropped_frames": dropped, "provenance": provenance})
            params.attrs["restarts"] = json.dumps(restarts, default=str)
        self._skip_repeat = True

    def _check_matches(self, f: h5py.File) -> None:
        if "particles" not in f or sorted(f["particles"]) != sorted(self.groups):
            found = sorted(f["particles"]) if "particles" in f else []
            raise MLFFError(f"{self.path} has particle groups {found}, expected {sorted(self.groups)} to restart")
        for name, index in self.groups.items():
            particles = f["particles"][name]
            fields = sorted(k for k in particles if k in FIELDS)
            if fields != sorted(self.fields):
                raise MLFFError(f"{self.path} group {name} stores {fields}, this run writes {sorted(self.fields)}")
            if not np.array_equal(particles["species"][()], self.numbers[index]):
                raise MLFFError(f"{self.path} group {name} holds different atoms than this run")
            stored = sorted(f["observables"][name]) if self.observables and "observables" in f else []
            if self.observables and stored != sorted(self.observables):
                raise MLFFError(f"{self.path} group {name} has observables {stored}, expected {sorted(self.observables)}")

    # -- writing ------------------------------------------------------------------------------------
    def write(self, step, time_fs, positions, cell=None, *, velocities=None, forces=None, observables=None) -> bool:
        """Keep one frame (if ``step % every == 0``). Units: Å, fs, Å/fs, eV/Å; observables per group."""
        if self._closed:
            raise MLFFError(f"{self.path}: write after close")
        step = int(step)
        if step % self.every:
            return False
        if self._last_step is not None and step <= self._last_step:
            if self._skip_repeat and step == self._last_step:  # a restart re-sending its checkpoint frame
                self._skip_repeat = False
                return False
            raise MLFFError(f"{self.path}: step {step} is not after the last written step {self._last_step}")
        self._skip_repeat = False
        frame = {"step": step, "time": float(time_fs),
                 "position": _shaped(positions, (self.n_atoms, 3), "positions")}
        given = {"velocity": velocities, "force": forces}
        for field in (f for f in self.fields if f != "position"):
            if given[field] is None:
                raise MLFFError(f"{self.path}: {FIELDS[field][0]} missing at step {step} (the writer stores {field})")
            frame[field] = _shaped(given[field], (self.n_atoms, 3), FIELDS[field][0])
        frame["cell"] = self._cell(cell, step)
        frame["observables"] = self._observables(observables or {}, step)
        self._buffer.append(frame)
        self._last_step = step
        if len(self._buffer) >= self.buffer_frames:
            self.flush()
        return True

    def _cell(self, cell, step: int) -> np.ndarray | None:
        if not self.pbc.any():
            return None
        if cell is None:
            raise MLFFError(f"{self.path}: cell missing at step {step} for a periodic system")
        cell = _numpy(cell, "cell")
        if cell.shape == (3, 3):
            cell = np.broadcast_to(cell, (len(self.groups), 3, 3))
        if cell.shape != (len(self.groups), 3, 3):
            raise MLFFError(f"cell has shape {cell.shape}, expected (3, 3) or ({len(self.groups)}, 3, 3)")
        return cell

    def _observables(self, values: dict, step: int) -> dict[str, np.ndarray]:
        unknown = sorted(set(values) - set(self.observables))
        missing = sorted(set(self.observables) - set(values))
        if unknown or missing:
            raise MLFFError(f"{self.path}: observables at step {step}: unknown {unknown}, missing {missing} "
                            f"(declared {list(self.observables)})")
        out = {}
        for name in self.observables:
            value = _numpy(values[name], f"observable {name}").reshape(-1)
            if value.size == 1:
                value = np.repeat(value, len(self.groups))
            if value.shape != (len(self.groups),):
                raise MLFFError(f"observable {name} has {value.size} values, expected 1 or {len(self.groups)}")
            out[name] = value
        return out

    def flush(self) -> None:
        """Write the buffered frames and close the file: once it returns they survive any crash of this process."""
        if not self._buffer:
            return
        frames, self._buffer = self._buffer, []
        with h5py.File(self.path, "r+", locking=False) as f:
            for g, (name, index) in enumerate(self.groups.items()):
                self._append(f, name, g, index, frames)
            f.flush()  # every frame is on disk before the commit marks count it
            committed = f["parameters/mlff/frames"]
            for name in self.groups:
                committed.attrs[name] = np.int64(f["particles"][name]["position/step"].shape[0])

    def _append(self, f: h5py.File, name: str, g: int, index, frames: list[dict]) -> None:
        particles = f["particles"][name]
        rows = slice(particles["position/step"].shape[0], particles["position/step"].shape[0] + len(frames))
        blocks = []
        for field in self.fields:  # [k, n, 3]
            blocks.append((particles[field]["value"],
                           np.stack([fr[field][index] for fr in frames]) * FIELDS[field][2]))
        if "edges" in particles["box"]:
            blocks.append((particles["box/edges/value"], np.stack([fr["cell"][g] for fr in frames])))  # [k, 3, 3]
        for obs in self.observables:
            blocks.append((f["observables"][name][obs]["value"], np.array([fr["observables"][obs][g] for fr in frames])))
        blocks.append((particles["position/step"], np.array([fr["step"] for fr in frames], dtype=np.int64)))
        blocks.append((particles["position/time"], np.array([fr["time"] for fr in frames])))
        for dataset, block in blocks:  # step and time last: a frame counts once its step is written
            dataset.resize(rows.stop, axis=0)
            dataset[rows] = block

    def close(self) -> None:
        if not self._closed:
            self.flush()
            self._closed = True

    def __enter__(self) -> H5MDWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "unknown"


def _default_provenance() -> dict:
    from mlff.provenance import provenance

    return provenance()


# -- reading ----------------------------------------------------------------------------------------
def _frames(index, n_frames: int) -> np.ndarray:
    if isinstance(index, str):
        from ase.io.formats import string2index

        index = string2index(index)
    try:
        rows = np.arange(n_frames)[index]
    except IndexError as exc:
        raise MLFFError(f"frame index {index} is out of range for {n_frames} frames") from exc
    return np.atleast_1d(rows)


def _take(dataset: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """dataset[rows] for any rows (h5py wants increasing, distinct indices; contiguous ones read as a slice)."""
    if rows.size == 0:
        return np.empty((0, *dataset.shape[1:]), dtype=dataset.dtype)
    unique, inverse = np.unique(rows, return_inverse=True)
    if unique[-1] - unique[0] + 1 == unique.size:
        block = dataset[unique[0]:unique[-1] + 1]
    else:
        block = dataset[unique]
    return block[inverse]


def _divisor(dataset: h5py.Dataset, what: str) -> float:
    unit = dataset.attrs.get("unit")
    if unit is None:
        return 1.0
    unit = unit.decode() if isinstance(unit, bytes) else str(unit)
    if unit not in _READ_DIVISORS:
        raise MLFFError(f"{what} has unit {unit!r}, which mlff cannot convert (known: {sorted(_READ_DIVISORS)})")
    return _READ_DIVISORS[unit]


def _committed(f: h5py.File, name: str) -> int:
    """Frames of a group that a completed flush vouches for (files from other writers: all)."""
    marks = f.get("parameters/mlff/frames")
    return int(marks.attrs[name]) if marks is not None and name in marks.attrs else np.iinfo(np.int64).max


def _steps(element: h5py.Group, n_frames: int) -> np.ndarray:
    step = element["step"]
    if step.ndim == 0:  # H5MD fixed-interval form: step is the interval, value i is at offset + i * step
        return step.attrs.get("offset", 0) + step[()] * np.arange(n_frames)
    return step[:n_frames]


def _element_rows(element: h5py.Group, steps: np.ndarray, committed: int) -> tuple[h5py.Dataset, np.ndarray | None]:
    """The element's value dataset and, for each wanted step, its row (None when any step is absent)."""
    value = element["value"]
    own = _steps(element, min(value.shape[0], committed, *([element["step"].shape[0]] if element["step"].ndim else [])))
    rows = np.searchsorted(own, steps)
    if rows.size and (rows.max() >= own.size or not np.array_equal(own[np.minimum(rows, own.size - 1)], steps)):
        return value, None
    return value, rows


def _pick_group(f: h5py.File, path, group: str | None) -> str:
    if "particles" not in f or not len(f["particles"]):
        raise MLFFError(f"{path} is not an H5MD trajectory: it has no particles group")
    names = list(f["particles"])
    if group is None:
        if len(names) != 1:
            raise MLFFError(f"{path} has {len(names)} particle groups {names}: pick one with group=")
        return names[0]
    if group not in names:
        raise MLFFError(f"{path} has no particle group {group!r}; it has {names}")
    return group


def read_h5md(path, index=":", group=None) -> list[Atoms]:
    """Frames of one particle group as ASE Atoms (Å, ASE velocities; energy and forces in a
    SinglePointCalculator; ``info``: step, time_fs and every observable by name). ``index``: int, slice
    or string like ``"::10"``; always returns a list."""
    path = Path(path)
    if not path.exists():
        raise MLFFError(f"{path} does not exist")
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise MLFFError(f"{path} is not a readable HDF5 file: {exc}") from exc
    with f:
        name = _pick_group(f, path, group)
        frames = _read_frames(f, name, index, path)
    return [_atoms(frames, i) for i in range(len(frames["step"]))]


def _read_frames(f: h5py.File, name: str, index, path) -> dict:
    """The selected frames of one group as arrays in the API's units (keys: step, time_fs, position, cell,
    velocity and force when stored, observables, species, masses, pbc)."""
    particles = f["particles"][name]
    if "position" not in particles:
        raise MLFFError(f"{path} group {name} has no position element")
    position, committed = particles["position"], _committed(f, name)
    n_frames = min(committed, position["value"].shape[0], *([position["step"].shape[0]] if position["step"].ndim else []))
    rows = _frames(index, n_frames)
    steps = _steps(position, n_frames)[rows]
    if (steps < 0).any():
        raise MLFFError(f"{path} group {name}: frames {rows[steps < 0].tolist()} are lost (their index was "
                        "damaged by a crash during a flush)")
    time = position["time"]
    times = _take(time, rows) if time.ndim else time.attrs.get("offset", 0) + time[()] * rows
    out = {"step": steps, "time_fs": times / _divisor(time, "time"),
           "position": _take(position["value"], rows) / _divisor(position["value"], "position"),
           "cell": np.zeros((len(rows), 3, 3)), "observables": {}}
    for field in ("velocity", "force"):
        if field in particles:
            value, field_rows = _element_rows(particles[field], steps, committed)
            if field_rows is not None:
                out[field] = _take(value, field_rows) / _divisor(value, field)
    edges = particles["box"].get("edges")
    if isinstance(edges, h5py.Dataset):  # a box fixed in time
        out["cell"][:] = np.diag(edges[()]) if edges.ndim == 1 else edges[()]
    elif edges is not None:
        value, edge_rows = _element_rows(edges, steps, committed)
        if edge_rows is not None:
            block = _take(value, edge_rows) / _divisor(value, "box edges")
            out["cell"] = block if block.ndim == 3 else np.stack([np.diag(b) for b in block])
    for obs, element in (f["observables"][name].items() if name in f.get("observables", {}) else ()):
        if isinstance(element, h5py.Group) and "value" in element and element["value"].ndim == 1:
            value, obs_rows = _element_rows(element, steps, committed)
            if obs_rows is not None:
                out["observables"][obs] = _take(value, obs_rows)
    species = particles["species"]
    out["species"] = species[()] if isinstance(species, h5py.Dataset) else species["value"][0]
    out["masses"] = particles["mass"][()] if isinstance(particles.get("mass"), h5py.Dataset) else None
    out["pbc"] = [(b.decode() if isinstance(b, bytes) else str(b)) == "periodic"
                  for b in particles["box"].attrs["boundary"]]
    return out


def _atoms(frames: dict, i: int) -> Atoms:
    atoms = Atoms(numbers=frames["species"], positions=frames["position"][i], cell=frames["cell"][i],
                  pbc=frames["pbc"])
    if frames["masses"] is not None:
        atoms.set_masses(frames["masses"])
    if "velocity" in frames:
        atoms.set_velocities(frames["velocity"][i] / units.fs)  # Å/fs -> ASE's velocity unit
    atoms.info["step"] = int(frames["step"][i])
    atoms.info["time_fs"] = float(frames["time_fs"][i])
    for obs, values in frames["observables"].items():
        atoms.info[obs] = float(values[i])
    results = {}
    if "potential_energy" in frames["observables"]:
        results["energy"] = float(frames["observables"]["potential_energy"][i])
    if "force" in frames:
        results["forces"] = frames["force"][i]
    if results:
        atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms
