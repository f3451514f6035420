"""``SiteProfile``: a cluster's batch settings (partition, account, GPUs per node, time limit, environment).

A profile is a YAML file of these keys, plus command-line overrides (``--set key=value`` or the named
options of ``mlff slurm``); unknown keys are refused by name. Example (Gefion-like)::

    partition: gpu
    account: my-project
    time: "1-00:00:00"
    gpus_per_node: 8
    cpus_per_task: 16
    modules: [cuda/12.4]
    venv: /work/me/mlff/.venv

Paths and arguments are quoted in the scripts, never expanded by the batch shell: ``mlff`` and ``torchrun`` are
commands split into words as a shell splits them (quote a path with blanks), each word then quoted, so a
variable or ``~`` in them is not expanded; shell text that should run (exports, ``conda activate``) goes in
``setup``, whose lines are written verbatim. ``sbatch`` options are written verbatim too, one #SBATCH line each.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mlff.config import from_dict, load_yaml
from mlff.errors import MLFFError

__all__ = ["SiteProfile", "command_words", "load_profile", "parse_time_s"]

@dataclass
class SiteProfile:
    partition: str | None = None  # #SBATCH --partition
    account: str | None = None  # #SBATCH --account
    qos: str | None = None  # #SBATCH --qos
    time: str = "01:00:00"  # per-attempt time limit (SLURM syntax: MM, HH:MM:SS, D-HH:MM:SS)
    nodes: int = 1  # nodes of a training job (torchrun over nodes x gpus_per_node); other jobs take 1
    gpus_per_node: int = 0  # GPUs of a training job per node (0: CPU); MD and label jobs take gpus_per_task
    gpus_per_task: int = 0  # GPUs of one MD / label / array task (0: CPU)
    procs_per_node: int | None = None  # torchrun processes per node (None: gpus_per_node, at least 1)
    cpus_per_task: int = 1  # #SBATCH --cpus-per-task (also OMP_NUM_THREADS)
    mem: str | None = None  # #SBATCH --mem (e.g. "64G"); None: the site's default
    constraint: str | None = None  # #SBATCH --constraint
    exclusive: bool = False  # #SBATCH --exclusive for training jobs
    modules: list | str = field(default_factory=list)  # `module load` each, in order (one string: one module)
    venv: str | None = None  # a virtual environment to activate (its bin/activate)
    setup: list | str = field(default_factory=list)  # extra shell lines run before the program (exports, conda, ...)
    mlff: str = "mlff"  # the command that runs mlff (e.g. "python -m mlff.cli"): words, not expanded (see below)
    torchrun: str = "torchrun"  # the torchrun command (e.g. "python -m torch.distributed.run"), as mlff
    signal_s: int = 300  # USR1 this many seconds before the time limit: checkpoint, exit 75, requeue
    max_requeues: int = 100  # an attempt beyond this many requeues is not requeued again (a safety stop)
    rdzv_port: int = 29500  # torchrun's rendezvous port on the first node of a multi-node job
    sbatch: list | str = field(default_factory=list)  # extra #SBATCH options, verbatim (e.g. "--mail-type=END")

    def __post_init__(self):
        parse_time_s(self.time)
        for name in ("nodes", "cpus_per_task"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise MLFFError(f"profile: {name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("gpus_per_node", "gpus_per_task", "signal_s", "max_requeues"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise MLFFError(f"profile: {name} must be a non-negative integer, got {getattr(self, name)!r}")
        if self.signal_s >= parse_time_s(self.time):
            raise MLFFError(f"profile: signal_s ({self.signal_s} s) must be shorter than the time limit {self.time}")
        if self.procs_per_node is not None and (not isinstance(self.procs_per_node, int) or self.procs_per_node < 1):
            raise MLFFError(f"profile: procs_per_node must be a positive integer, got {self.procs_per_node!r}")
        for name in ("mlff", "torchrun"):
            command_words(name, getattr(self, name))
        for name in ("modules", "setup", "sbatch"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, [value])
            elif not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise MLFFError(f"profile: {name} must be a list of strings, got {value!r}")

    @property
    def train_procs_per_node(self) -> int:
        return self.procs_per_node or max(self.gpus_per_node, 1)

    @property
    def time_s(self) -> int:
        return parse_time_s(self.time)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def command_words(name: str, value) -> list[str]:
    """The words of the profile's command ``name`` (``mlff``, ``torchrun``), split as a shell splits them."""
    try:
        words = shlex.split(value) if isinstance(value, str) else []
    except ValueError as err:  # an unclosed quote
        raise MLFFError(f"profile: {name} {value!r} is not a command: {err}") from None
    if not words:
        raise MLFFError(f"profile: {name} must be a command (words; quote a path with blanks), got {value!r}")
    return words


def parse_time_s(text) -> int:
    """Seconds of a SLURM time limit: "MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM", "D-HH:MM:SS"."""
    text = str(text).strip()
    days, dash, rest = text.rpartition("-") if "-" in text else ("", "", text)
    parts = rest.split(":")
    if not (1 <= len(parts) <= 3 and all(p.isdigit() for p in parts) and (not dash or days.isdigit())):
        raise MLFFError(f"profile: time {text!r} is not a SLURM time limit (MM, HH:MM:SS or D-HH:MM:SS)")
    n = [int(p) for p in parts]
    if dash:  # D-HH, D-HH:MM, D-HH:MM:SS
        n += [0] * (3 - len(n))
        seconds = int(days) * 86400 + 3600 * n[0] + 60 * n[1] + n[2]
    else:  # MM, MM:SS, HH:MM:SS
        seconds = 60 * n[0] if len(n) == 1 else (60 * n[0] + n[1] if len(n) == 2 else 3600 * n[0] + 60 * n[1] + n[2])
    if seconds <= 0:
        raise MLFFError(f"profile: time {text!r} must be positive")
    return seconds


def _parse_value(key: str, text: str):
    """A ``--set key=value`` value: YAML syntax (numbers, lists, true/false), strings as given."""
    try:
        return yaml.safe_load(text) if key != "time" else text
    except yaml.YAMLError:
        return text


def load_profile(path: str | Path | None = None, overrides: dict | None = None,
                 settings: list[str] | None = None) -> SiteProfile:
    """The profile in YAML ``path`` (none: all defaults), updated by ``overrides`` and ``key=value`` strings."""
    data = load_yaml(path) if path is not None else {}
    where = f"profile {path}" if path is not None else "profile"
    for item in settings or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise MLFFError(f"--set {item!r}: expected KEY=VALUE (a profile key, e.g. partition=gpu)")
        data[key.strip()] = _parse_value(key.strip(), value)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return from_dict(SiteProfile, data, where)
