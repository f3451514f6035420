"""``label``: run a labelling backend over structures into a dataset, with checkpoints and resume.

Every structure is identified by its geometry hash (numbers, positions, cell, pbc, charge, multiplicity).
A structure already in the output (as a record or as a recorded failure) is skipped, so a killed run,
started again with the same inputs, neither repeats nor skips work. Results are appended (atomically)
every ``checkpoint_every`` structures; a kill loses at most the structures since the last checkpoint.
Failed calculations (non-converged SCF, crashed codes) are recorded in the ``failures`` table with their
reason and are never kept as data.

One process labels into a dataset at a time (its writer lock; a second is refused naming the first). A
dataset keeps one level of theory and one set of numerical settings (``mlff.data.levels``): labels at another
level are refused unless ``allow_mixed_levels=True``; labels at other numerical settings join only through a
measured ``calibration`` within its tolerance (``mlff.data.numerics``), which shifts their energy to the
dataset's settings and records it. The same geometry given twice is labelled once. SIGTERM or
SIGUSR1 stop the run after the current structure, with everything done so far saved (``interrupted``).
"""

from __future__ import annotations

import datetime
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ase import Atoms

from mlff.data.labelers import check_structures
from mlff.data.labelers.base import Labeler, charge_and_multiplicity
from mlff.data.levels import LEVEL_KEYS, check_one_level, level_of, levels_in, numerics_of
from mlff.data.numerics import NumericsCalibration
from mlff.data.records import make_record, validate
from mlff.data.store import Dataset
from mlff.errors import MLFFError
from mlff.lock import WriterLock, lock_path_for
from mlff.provenance import provenance
from mlff.signals import SignalFlag

__all__ = ["label", "LabelSummary", "LEVEL_KEYS", "levels_of"]


@dataclass
class LabelSummary:
    labelled: int  # new records this run
    failed: int  # new failures this run
    skipped: int  # already in the output (records or failures)
    total_records: int  # records in the output now
    wall_s: float  # this run
    remaining: int = 0  # left for a later run (stopped by the time limit or a signal)
    duplicates: int = 0  # structures given more than once in this call (labelled once)
    interrupted: str | None = None  # the signal that stopped the run (SIGTERM, SIGUSR1), else None

    def __str__(self) -> str:
        return (f"{self.labelled} labelled, {self.failed} failed, {self.skipped} already done; "
                f"{self.total_records} records in all ({self.wall_s:.1f} s)"
                + (f"; {self.duplicates} duplicate geometries labelled once" if self.duplicates else "")
                + (f"; stopped by {self.interrupted}" if self.interrupted else "")
                + (f"; {self.remaining} left for the next run" if self.remaining else ""))


def levels_of(dataset: Dataset) -> list[dict]:
    """The distinct levels of theory of the labelled records of ``dataset`` (records without one ignored)."""
    out = []
    for level, _, _ in levels_in(dataset.infos()):
        if level not in out:
            out.append(level)
    return out


def _effective(labeler: Labeler, calibration: NumericsCalibration | None) -> tuple[dict, dict]:
    """(level, numerical settings) the labeller's records count as: a calibration's reference settings."""
    mine = labeler.level()
    level, numerics = level_of(mine), numerics_of(mine)
    if calibration is None:
        return level, numerics
    calibration.check_usable(level, numerics, f"labeller {labeler.name}")
    return level, dict(calibration.reference)


def _check_level(dataset: Dataset, labeler: Labeler, allow_mixed_levels: bool,
                 calibration: NumericsCalibration | None = None) -> None:
    level, numerics = _effective(labeler, calibration)
    check_one_level(levels_in(dataset.infos()), level, numerics, str(dataset.path),
                    allow_mixed_levels=allow_mixed_levels)


def _provenance(labeler: Labeler, structure: Atoms, result, software: dict) -> dict:
    return {**labeler.level(), "scf_converged": bool(result.converged), "wall_s": round(result.wall_s, 3),
            "geometry_source": structure.info.get("source", ""), "labelled_utc":
            datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
            "mlff_git_commit": software.get("mlff_git_commit"), **({"details": result.info} if result.info else {})}


def _outcome(labeler: Labeler, structure: Atoms, software: dict,
             calibration: NumericsCalibration | None = None) -> tuple[str, Atoms]:
    """("records" | "failures", the record to store) for one structure (shifted by ``calibration``)."""
    result = labeler.compute(structure)
    prov = _provenance(labeler, structure, result, software)
    if result.converged and result.energy_eV is not None and result.forces_eV_A is None \
            and getattr(labeler, "forces", True):
        result.converged, result.reason = False, "backend returned no forces"
    if not result.converged:
        prov["failure_reason"] = result.reason or "unknown"
        return "failures", make_record(structure, provenance=prov)
    record = make_record(structure, energy=result.energy_eV, forces=result.forces_eV_A, provenance=prov)
    return "records", record if calibration is None else calibration.apply(record, "a new label")


def label(structures: Sequence[Atoms], labeler: Labeler, output: str | Path, *, checkpoint_every: int = 1,
          progress: bool = True, description: str = "", time_limit_s: float | None = None,
          allow_mixed_levels: bool = False, skip_in: Sequence[str | Path] = (),
          calibration: NumericsCalibration | None = None) -> LabelSummary:
    """Label ``structures`` with ``labeler`` into the dataset at ``output`` (created if missing).

    Records keep the structures' info (``source``, ``xi``, ``tags``, fixed atoms) and gain a
    ``provenance`` dict: the level of theory and code (``labeler.level()``), SCF convergence, wall time,
    where the geometry came from, when and where it was labelled. With ``time_limit_s`` the run stops
    (after saving) before a structure that would likely end past the limit; run it again to go on.
    SIGTERM / SIGUSR1 (a batch scheduler's stop) end the run the same way after the current structure.
    ``skip_in``: other datasets whose records and failures count as done too (the dataset that shards labelled
    into files of their own will be merged into); their level of theory must be the labeller's as well.
    ``calibration``: the labeller's numerical settings measured against the dataset's (``mlff.data.numerics``);
    each new record's energy is shifted by it to the dataset's settings, raw energy and shift recorded.
    """
    if checkpoint_every < 1:
        raise MLFFError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    for k, s in enumerate(structures):
        validate(s, f"structure {k}", require=())
        try:
            charge_and_multiplicity(s)
        except MLFFError as err:
            raise MLFFError(f"structure {k}: {err}") from None
    check_structures(labeler, structures)  # a bad basis, a missing code: refused before the output is touched
    output = Path(output)
    with WriterLock(lock_path_for(output), f"dataset {output}"):
        others = [Dataset(path) for path in skip_in]
        for other in others:  # before the output is created
            _check_level(other, labeler, allow_mixed_levels, calibration)
        dataset = Dataset(output) if output.exists() else Dataset.create(output, description=description)
        _check_level(dataset, labeler, allow_mixed_levels, calibration)
        if calibration is not None and progress:
            print(f"label: {labeler.name} labels are shifted to the dataset's numerical settings by the calibration "
                  f"{calibration.path or '(in memory)'}: {calibration.summary()}", file=sys.stderr, flush=True)
        return _label_into(dataset, structures, labeler, checkpoint_every, progress, time_limit_s, others,
                           calibration)


def _done(dataset: Dataset) -> set[str]:
    return set(dataset.column("geometry_hash")) | set(dataset.column("geometry_hash", "failures"))


def _plan(dataset: Dataset, structures, others: Sequence[Dataset] = ()) -> tuple[list, int]:
    """(the structures still to label, each once; how many are done in ``dataset`` or ``others``), by the geometry
    hash each dataset stores (float32 files hash their rounded positions)."""
    done, elsewhere = _done(dataset), [(other, _done(other)) for other in others]
    todo, seen, skipped = [], set(), 0
    for s in structures:
        key = dataset.geometry_hash(s)
        if key not in done and any(other.geometry_hash(s) in hashes for other, hashes in elsewhere):
            done.add(key)
        skipped += key in done
        if key not in done and key not in seen:
            todo.append(s)
        seen.add(key)
    return todo, skipped


def _label_into(dataset: Dataset, structures, labeler, checkpoint_every: int, progress: bool,
                time_limit_s: float | None, others: Sequence[Dataset] = (),
                calibration: NumericsCalibration | None = None) -> LabelSummary:
    require = ("energy", "forces") if getattr(labeler, "forces", True) else ("energy",)
    todo, skipped = _plan(dataset, structures, others)
    start, software = time.perf_counter(), provenance()
    pending = {"records": [], "failures": []}
    counts = {"records": 0, "failures": 0}

    def flush():
        for table, items in pending.items():
            if items:
                dataset.append(items, table=table, where=f"{dataset.path} {table}",
                               require=require if table == "records" else ())
                counts[table] += len(items)
                items.clear()

    n, slowest = 0, 0.0
    with SignalFlag() as flag, _progress(progress, len(todo), labeler.name, skipped) as advance:
        for structure in todo:
            if flag.received or (time_limit_s is not None and time.perf_counter() - start + slowest > time_limit_s):
                break
            began = time.perf_counter()
            table, record = _outcome(labeler, structure, software, calibration)
            slowest, n = max(slowest, time.perf_counter() - began), n + 1
            pending[table].append(record)
            if n % checkpoint_every == 0:
                flush()
            advance(table == "failures", time.perf_counter() - began)
        flush()
    return LabelSummary(counts["records"], counts["failures"], skipped, len(dataset), time.perf_counter() - start,
                        remaining=len(todo) - n, duplicates=len(structures) - skipped - len(todo),
                        interrupted=flag.received)


class _progress:
    """Progress with rate and ETA: a rich bar on a terminal; otherwise (a batch job's log) one line per structure
    with its wall time, the mean so far and the ETA; silent when ``enabled`` is False."""

    def __init__(self, enabled: bool, total: int, name: str, skipped: int = 0):
        self.enabled, self.total, self.name, self.skipped = enabled, total, name, skipped
        self.bar, self.done, self.failed, self.t0 = None, 0, 0, time.perf_counter()

    def __enter__(self):
        if not self.enabled:
            return lambda failed, seconds: None
        if not sys.stderr.isatty():  # a batch log: say at once what the run will do (a DFT label takes minutes)
            print(f"label: {self.total} structure(s) to do with {self.name}"
                  + (f", {self.skipped} already done" if self.skipped else ""), file=sys.stderr, flush=True)
            return self._line
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        self.bar = Progress("[bold]label", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TimeRemainingColumn(), transient=False)
        self.bar.start()
        task = self.bar.add_task(self.name, total=self.total)
        return lambda failed, seconds: self.bar.advance(task)

    def _line(self, failed: bool, seconds: float) -> None:
        self.done, self.failed = self.done + 1, self.failed + failed
        mean = (time.perf_counter() - self.t0) / self.done
        print(f"label {self.done}/{self.total} ({self.name}): {'FAILED' if failed else 'done'} in {seconds:.0f} s; "
              f"{mean:.0f} s per structure so far, ETA {mean * (self.total - self.done) / 60:.0f} min"
              + (f"; {self.failed} failed" if self.failed else ""), file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False
