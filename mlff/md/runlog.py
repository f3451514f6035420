"""The runner's small I/O helpers: a CSV log that survives restarts and a progress bar with ns/day."""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from pathlib import Path

from mlff.appendonly import bad_line, complete_lines, repair_torn_tail
from mlff.errors import MLFFError
from mlff.provenance import provenance

__all__ = ["CsvLog", "Progress", "read_log"]


class CsvLog:
    """Rows appended on ``flush``; a first comment line records provenance. On restart (``restart_step``)
    rows after that step are dropped, so the log continues exactly where the checkpoint was written."""

    def __init__(self, path: Path, columns: list[str], restart_step: int | None = None):
        self.path, self.columns, self._rows = Path(path), list(columns), []
        if restart_step is None or not self.path.exists():
            self._rewrite([])
        else:
            repair_torn_tail(self.path)  # a kill during a flush leaves half a row: cut off (and said so)
            kept = [row for row in read_log(self.path) if row["step"] <= restart_step]
            missing = [c for c in self.columns if kept and c not in kept[0]]
            if missing:
                raise MLFFError(f"{self.path} has no column {missing[0]!r}, which this run writes: not this run's log")
            self._rewrite([[row[c] for c in self.columns] for row in kept])

    def _rewrite(self, rows) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as handle:
            handle.write("# " + json.dumps({"provenance": provenance()}) + "\n")
            writer = csv.writer(handle)
            writer.writerow(self.columns)
            writer.writerows(rows)
        os.replace(tmp, self.path)

    def add(self, row: list) -> None:
        self._rows.append(row)

    def flush(self) -> None:
        if self._rows:
            with open(self.path, "a", newline="") as handle:
                csv.writer(handle).writerows(self._rows)
            self._rows = []


def read_log(path) -> list[dict]:
    """The rows of a log.csv as dicts of floats (step and system as ints). A torn last row (a kill during a
    flush) is skipped and said so; any other malformed row is one MLFFError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise MLFFError(f"no log at {path}")
    lines = [(number, line) for number, line in complete_lines(path) if line and not line.startswith("#")]
    if not lines:
        return []
    columns = next(csv.reader([lines[0][1]]))
    rows = []
    for number, line in lines[1:]:
        values = next(csv.reader([line]))
        if len(values) != len(columns):
            raise bad_line(path, number, f"has {len(values)} values, the header names {len(columns)} columns")
        row = {}
        for column, value in zip(columns, values):
            try:
                row[column] = int(float(value)) if column in ("step", "system") else float(value)
            except ValueError:
                raise bad_line(path, number, f"has {value!r} for {column}, not a number") from None
        rows.append(row)
    return rows


class Progress:
    """A rich progress bar with steps/s and ns/day when stderr is a terminal (or ``show=True``); otherwise
    (batch jobs) one plain line on stderr at most every ``every_s`` seconds."""

    def __init__(self, total_steps: int, first_step: int, timestep_fs: float, show: bool | None = None,
                 every_s: float = 60.0):
        self.total, self.first, self.timestep_fs = total_steps, first_step, timestep_fs
        self.show = sys.stderr.isatty() if show is None else show
        self.every_s = every_s
        self._bar = self._task = None
        self._start = self._last_line = 0.0

    def __enter__(self):
        self._start = self._last_line = time.perf_counter()
        if self.show:
            from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("MD"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                                     TextColumn("{task.fields[rate]}"), TimeRemainingColumn())
            self._bar.__enter__()
            self._task = self._bar.add_task("md", total=self.total, completed=self.first, rate="")
        return self

    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def update(self, step: int) -> None:
        rate = (step - self.first) / max(self.elapsed(), 1e-9)
        text = f"{rate:.1f} steps/s, {rate * self.timestep_fs * 86400e-6:.3f} ns/day"
        if self._bar is not None:
            self._bar.update(self._task, completed=step, rate=text)
        elif time.perf_counter() - self._last_line >= self.every_s:
            self._last_line = time.perf_counter()
            eta_min = (self.total - step) / max(rate, 1e-9) / 60
            print(f"MD step {step}/{self.total}: {text}, ETA {eta_min:.1f} min", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)
        return False
