"""The run directory's records, written atomically (a temporary file renamed over the old one), so a kill -9
at any moment leaves either the old or the new file, never half of one.

    OUT/learn.json               the config and provenance of the run
    OUT/iter_NNN/state.json      {"iteration", "potential", "done": [stages in order], one summary per stage}
    OUT/summary.json             the last decision: status, reason, final potential, labels spent
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

__all__ = ["STAGES", "write_json", "read_json", "iteration_dir", "IterationState", "write_dataset"]

STAGES = ("explore", "select", "label", "calibrate", "retrain", "report")


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def write_json(path: Path, data) -> None:
    """``data`` as indented JSON at ``path``, atomically (fsync'd, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as handle:
        handle.write(json.dumps(data, indent=1, default=_plain) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def iteration_dir(out: Path, iteration: int) -> Path:
    return Path(out) / f"iter_{iteration:03d}"


class IterationState:
    """``iter_NNN/state.json``: which stages are done and what each produced (their summaries)."""

    def __init__(self, out: Path, iteration: int, potential: str):
        self.dir = iteration_dir(out, iteration)
        self.path = self.dir / "state.json"
        if self.path.is_file():
            self.data = read_json(self.path)
        else:
            self.data = {"iteration": iteration, "potential": str(potential), "done": []}

    @property
    def potential(self) -> str:
        """The committee this iteration explores and selects with (the previous iteration's result)."""
        return self.data["potential"]

    def done(self, stage: str) -> bool:
        return stage in self.data["done"]

    def get(self, stage: str) -> dict:
        return self.data.get(stage, {})

    def save(self) -> None:
        write_json(self.path, self.data)

    def mark(self, stage: str, summary: dict) -> None:
        """Record ``stage`` as done, only once its outputs are in place."""
        self.data[stage] = summary
        if stage not in self.data["done"]:
            self.data["done"].append(stage)
        write_json(self.path, self.data)


def write_dataset(path: Path, records, *, description: str, require=()) -> int:
    """A new dataset at ``path`` holding ``records``, replacing any old one in one rename (never half written)."""
    from mlff.data.store import Dataset

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    dataset = Dataset.create(tmp, description=description, overwrite=True)
    if records:
        dataset.append(records, where=str(path), require=require)
    os.replace(tmp, path)
    Path(f"{tmp}.lock").unlink(missing_ok=True)
    return len(records)
