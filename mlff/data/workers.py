"""``label_with_workers``: label a pool with N one-thread worker processes into one dataset, resumably.

On a CPU node two one-thread DFT labels side by side beat one two-thread label (PySCF's threads scale poorly
on a 39-atom cluster), so the parent splits what is left to do into N shards (``--shard K/N``) and starts one
``mlff data label`` process per shard with ``OMP_NUM_THREADS=1``, each writing a file of its own (one writer
per file) next to the output. The parent holds the output's writer lock the whole time; when the workers are
done (or stopped) it appends their records and failures to the output in the order they were given and
removes their files. A killed run leaves the shard files: the next run imports them first, then goes on
with what is still missing, so nothing is labelled twice and nothing is skipped.

SIGTERM / SIGUSR1 are forwarded to the workers (``MLFF_STOP_FILE`` they see themselves), which stop after their
current structure (a worker still starting up just ends: its file is written atomically); the summary then says
``interrupted``. Each worker's log is ``OUT.workers/worker-K.log``, and its lines are
echoed with a ``[worker K]`` prefix.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from ase import Atoms

from mlff.data.label import LabelSummary, _check_level, _plan
from mlff.data.labelers import check_labeler
from mlff.data.store import Dataset
from mlff.errors import MLFFError
from mlff.lock import WriterLock, lock_path_for
from mlff.signals import SignalFlag

__all__ = ["label_with_workers", "THREAD_VARIABLES"]

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_POLL_S = 2.0


def _parts(output: Path) -> Path:
    return output.parent / f"{output.name}.workers"


def _collect(dataset: Dataset, parts: Path, structures: Sequence[Atoms]) -> dict[str, int]:
    """Append the workers' records and failures not yet in ``dataset``, in the order of ``structures``."""
    rank = {}
    for k, atoms in enumerate(structures):
        rank.setdefault(dataset.geometry_hash(atoms), k)
    shards = [Dataset(path) for path in sorted(parts.glob("shard-*.h5"))]
    added = {}
    for table in ("records", "failures"):
        items, _ = _plan(dataset, [a for shard in shards for a in shard.read(table=table)])
        items.sort(key=lambda a: rank.get(dataset.geometry_hash(a), len(rank)))
        dataset.append(items, table=table, where=f"{parts} {table}", require=("energy",) if table == "records" else ())
        added[table] = len(items)
    return added


def _command(pool: Path, shard: Path, spec_file: Path, k: int, n: int, skip: list[Path], *, checkpoint_every: int,
             time_limit_s: float | None, calibration: str | None, allow_mixed_levels: bool) -> list[str]:
    cmd = [sys.executable, "-m", "mlff", "data", "label", str(pool), str(shard), "--labeler", str(spec_file),
           "--shard", f"{k}/{n}", "--checkpoint-every", str(checkpoint_every)]
    for path in skip:
        cmd += ["--skip-labelled-in", str(path)]
    if time_limit_s is not None:
        cmd += ["--minutes", f"{time_limit_s / 60:.4f}"]
    if calibration is not None:
        cmd += ["--calibration", str(calibration)]
    if allow_mixed_levels:
        cmd.append("--allow-mixed-levels")
    return cmd


class _Echo:
    """Print the new lines of each worker's log with a ``[worker K]`` prefix."""

    def __init__(self, logs: list[Path], enabled: bool):
        self.logs, self.enabled, self.offsets = logs, enabled, [0] * len(logs)

    def __call__(self) -> None:
        if not self.enabled:
            return
        for k, log in enumerate(self.logs):
            if not log.is_file():
                continue
            with open(log, errors="replace") as f:
                f.seek(self.offsets[k])
                text = f.read()
            complete = text[: text.rfind("\n") + 1]
            self.offsets[k] += len(complete.encode())
            for line in complete.splitlines():
                if line.strip():
                    print(f"[worker {k}] {line}", file=sys.stderr, flush=True)


def label_with_workers(structures: Sequence[Atoms], spec: dict, output: str | Path, *, workers: int,
                       checkpoint_every: int = 1, time_limit_s: float | None = None, allow_mixed_levels: bool = False,
                       skip_in: Sequence[str | Path] = (), calibration: str | Path | None = None,
                       description: str = "", progress: bool = True) -> LabelSummary:
    """Label ``structures`` with ``workers`` one-thread processes of the labeller ``spec`` (``make_labeler``)
    into ``output``; the arguments are ``mlff.data.label``'s (``calibration``: the path of a calibration file)."""
    if workers < 1:
        raise MLFFError(f"workers must be >= 1, got {workers}")
    labeler = check_labeler(dict(spec), structures)  # a bad spec or basis fails here, before anything is written
    cal = None
    if calibration is not None:
        from mlff.data.numerics import load_calibration

        cal = load_calibration(calibration)
    output = Path(output)
    start = time.perf_counter()
    with WriterLock(lock_path_for(output), f"dataset {output}"):
        for other in skip_in:
            _check_level(Dataset(other), labeler, allow_mixed_levels, cal)
        dataset = Dataset(output) if output.exists() else Dataset.create(output, description=description)
        _check_level(dataset, labeler, allow_mixed_levels, cal)
        parts = _parts(output)
        if parts.is_dir():  # a run that was killed: its labels first
            _collect(dataset, parts, structures)
        todo, skipped = _plan(dataset, structures, [Dataset(other) for other in skip_in])
        if not todo:
            shutil.rmtree(parts, ignore_errors=True)
            return LabelSummary(0, 0, skipped, len(dataset), time.perf_counter() - start,
                                duplicates=len(structures) - skipped)
        n = min(workers, len(todo))
        parts.mkdir(exist_ok=True)
        pool = parts / "pool.h5"
        Dataset.create(pool, description=f"what is left to label into {output}", overwrite=True).append(
            todo, require=())
        spec_file = parts / "labeler.json"
        spec_file.write_text(json.dumps(dict(spec)))
        env = {**os.environ, **{name: "1" for name in THREAD_VARIABLES}}
        shards = [parts / f"shard-{k}.h5" for k in range(n)]
        logs = [parts / f"worker-{k}.log" for k in range(n)]
        if progress:
            print(f"label: {len(todo)} structure(s) to do with {labeler.name} in {n} one-thread workers"
                  + (f", {skipped} already done" if skipped else ""), file=sys.stderr, flush=True)
        procs = []
        for k in range(n):
            cmd = _command(pool, shards[k], spec_file, k, n, [output, *map(Path, skip_in)],
                           checkpoint_every=checkpoint_every, time_limit_s=time_limit_s,
                           calibration=None if calibration is None else str(calibration),
                           allow_mixed_levels=allow_mixed_levels)
            with open(logs[k], "ab") as log:
                procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
        echo, interrupted = _Echo(logs, progress), None
        with SignalFlag() as flag:
            sent = None  # the signal forwarded (a stop file the workers see themselves)
            while any(p.poll() is None for p in procs):
                if flag.received and interrupted is None:
                    interrupted = flag.received
                    if flag.received in ("SIGTERM", "SIGUSR1"):
                        sent = getattr(signal, flag.received)
                        for p in procs:
                            if p.poll() is None:
                                p.send_signal(sent)
                echo()
                time.sleep(_POLL_S)
            echo()
        codes = [p.returncode for p in procs]
        added = _collect(dataset, parts, structures)
        left, _ = _plan(dataset, todo)
        # 75: stopped resumably; -signal: the forwarded signal reached a worker before its handler was set
        failed_workers = [k for k, c in enumerate(codes) if c not in (0, 75) and not (sent and c == -sent)]
        if failed_workers:
            tail = logs[failed_workers[0]].read_text(errors="replace").strip().splitlines()[-1:] or ["(empty log)"]
            raise MLFFError(f"label worker {failed_workers[0]} exited {codes[failed_workers[0]]}: {tail[0]} "
                            f"(log {logs[failed_workers[0]]}); {added['records']} labels were saved, run again to go on")
        shutil.rmtree(parts, ignore_errors=True)
        return LabelSummary(added["records"], added["failures"], skipped, len(dataset), time.perf_counter() - start,
                            remaining=len(left), duplicates=len(structures) - skipped - len(todo),
                            interrupted=interrupted)
