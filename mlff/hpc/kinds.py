"""What each ``mlff slurm KIND CONFIG`` submits: a small graph of jobs (``Plan``), built by the kind's entry
in ``KINDS``. A kind reads its config with the same loader as its own command (so a bad config fails at
submission, with the same message) and says where its run lives, what marks a resumable run, and what
``mlff slurm status`` reads for progress.

Adding a kind whose command resumes with ``--resume`` from a checkpoint in its ``out`` directory (``mlff
learn`` was added so) is one entry, like ``"umbrella": single_job("umbrella", load_umbrella_config,
"checkpoint.pt")`` in ``KINDS`` (and its name out of ``PLANNED``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mlff.config import from_dict, load_yaml
from mlff.errors import MLFFError
from mlff.hpc.profile import SiteProfile
from mlff.hpc.script import TASK_ID, Job

__all__ = ["KINDS", "PLANNED", "Plan", "LabelJobConfig", "plan", "single_job"]


@dataclass
class Plan:
    run_dir: Path  # scripts, logs and jobs.json go to run_dir/slurm
    jobs: list  # Job, in submission order (dependencies first)
    files: dict = field(default_factory=dict)  # extra files to write: path -> text


@dataclass
class Options:
    resume: bool = False  # continue an existing run (the first attempt passes --resume too)
    run_dir: str | None = None  # where the scripts go (default: the run's own output directory)
    committee_array: bool = False  # train: one array task per committee member, then one assembling job


def _abs(path) -> str:
    return str(Path(path).expanduser().resolve())


def single_job(command: str, load: Callable, marker: str, progress_kind: str | None = None) -> Callable:
    """A kind that runs ``mlff COMMAND CONFIG`` as one job; ``load(path)`` returns its config (with ``out``);
    a restart passes ``--resume`` when ``out/marker`` exists."""

    def build(config: str, profile: SiteProfile, options: Options) -> Plan:
        cfg = load(config)
        out = _abs(cfg.out)
        progress = {"out": out, **{k: getattr(cfg, k) for k in ("steps", "max_epochs", "committee") if hasattr(cfg, k)}}
        if hasattr(cfg, "production_steps"):  # umbrella: equilibration + production MD steps
            progress["steps"] = cfg.equilibration_steps + cfg.production_steps
        job = Job(name=command, kind=progress_kind or command, command=[command, _abs(config)], run_dir=out,
                  resume_marker=f"{out}/{marker}", resume=options.resume, gpus=profile.gpus_per_task,
                  progress=progress)
        return Plan(Path(options.run_dir or out), [job])

    return build


def _load_md(path):
    from mlff.md.config import load_md_config

    return load_md_config(path)


def _load_umbrella(path):
    from mlff.bias.umbrella import load_umbrella_config

    return load_umbrella_config(path)


def _load_learn(path):
    from mlff.learn.config import load_learn_config

    return load_learn_config(path)


def _plan_train(config: str, profile: SiteProfile, options: Options) -> Plan:
    from mlff.train.config import load_train_config

    cfg = load_train_config(config)
    out = _abs(cfg.out)
    procs, nodes = profile.train_procs_per_node, profile.nodes
    progress = {"out": out, "max_epochs": cfg.max_epochs, "committee": cfg.committee}
    common = dict(kind="train", run_dir=out, resume_marker=f"{out}/config.json", gpus=profile.gpus_per_node,
                  nodes=nodes, procs_per_node=procs, torchrun=nodes > 1 or procs > 1, progress=progress)
    if not options.committee_array or cfg.committee == 1:
        job = Job(name="train", command=["train", _abs(config)], resume=options.resume, **common)
        return Plan(Path(options.run_dir or out), [job])
    members = Job(name="train-members", command=["train", _abs(config), "--member", TASK_ID],
                  array=cfg.committee, **{**common, "resume_marker": None})
    assemble = Job(name="train", command=["train", _abs(config), "--resume"], after=["train-members"],
                   **{**common, "resume_marker": None, "torchrun": False, "nodes": 1, "procs_per_node": 1})
    return Plan(Path(options.run_dir or out), [members, assemble])


@dataclass
class LabelJobConfig:
    """``mlff slurm label CONFIG``: label a pool, in ``shards`` array tasks merged by one dependent job."""
    pool: str  # .h5 pool of geometries or any structure file (as `mlff data label` takes)
    out: str  # the labelled dataset (.h5); with shards > 1 the merge writes it (an existing one is continued)
    labeler: dict  # a make_labeler spec, e.g. {backend: pyscf, functional: b3lyp, basis: def2-svp}
    shards: int = 1  # array tasks; each labels every shards-th structure into run_dir/shards/
    limit: int | None = None  # only the first N structures of the pool
    checkpoint_every: int = 1  # structures between appends
    run_dir: str | None = None  # default: OUT's folder / "<OUT stem>-label"


def _pool_structures(pool: str, limit: int | None) -> list:
    if Path(pool).suffix in (".h5", ".hdf5"):
        from mlff.data import Dataset

        structures = Dataset(pool).read(table="records")
    else:
        from mlff.data import read_structures

        structures = read_structures(pool, require=())
    return structures if limit is None else structures[:limit]


def _already_labelled(out: str, pool: str, structures: list) -> set[int]:
    """The pool indices ``out`` holds (records or failures): the shards skip them. Every entry of ``out`` must
    come from the pool, since the merge puts all in the pool's order."""
    from mlff.data import Dataset
    from mlff.data.merge import pool_rank
    from mlff.data.records import geometry_hash

    dataset = Dataset(out)
    held = [geometry_hash(a) for table in ("records", "failures") for a in dataset.read(table=table)]
    rank = pool_rank(structures)
    foreign = [h for h in held if h not in rank]
    if foreign:
        raise MLFFError(f"{out} holds {len(foreign)} of {len(held)} entries that are not in the pool {pool} (or past "
                        "its limit): shards continue a dataset only when all of it comes from their pool (the merge "
                        "keeps the pool's order); label into another 'out' and `mlff data merge` by hand")
    return {rank[h] for h in held}


def _plan_label(config: str, profile: SiteProfile, options: Options) -> Plan:
    from mlff.data.labelers import check_labeler, make_labeler

    cfg = from_dict(LabelJobConfig, load_yaml(config), str(config))
    if not isinstance(cfg.labeler, dict):
        raise MLFFError(f"{config}: labeler must be a mapping (a make_labeler spec with 'backend'), got {cfg.labeler!r}")
    make_labeler(dict(cfg.labeler))  # a bad spec fails now, not in the queue
    if not isinstance(cfg.shards, int) or cfg.shards < 1:
        raise MLFFError(f"{config}: shards must be a positive integer, got {cfg.shards!r}")
    pool, out = _abs(cfg.pool), _abs(cfg.out)
    if not Path(pool).exists():
        raise MLFFError(f"{config}: pool {pool} not found")
    structures = _pool_structures(pool, cfg.limit)
    check_labeler(dict(cfg.labeler), structures)  # basis for every element, charge, spin: before any job is queued
    total = len(structures)
    run_dir = Path(options.run_dir or cfg.run_dir or Path(out).parent / f"{Path(out).stem}-label").resolve()
    spec = run_dir / "slurm" / "labeler.json"
    minutes = max((profile.time_s - profile.signal_s) / 60.0, 1.0)
    base = ["data", "label", pool, "--labeler", str(spec), "--minutes", f"{minutes:g}",
            "--checkpoint-every", str(cfg.checkpoint_every)] + (["--limit", str(cfg.limit)] if cfg.limit else [])
    files = {spec: json.dumps(cfg.labeler, indent=2) + "\n"}
    if cfg.shards == 1:
        job = Job(name="label", kind="label", command=base[:3] + [out] + base[3:], run_dir=str(run_dir),
                  gpus=profile.gpus_per_task, progress={"datasets": [out], "totals": [total]})
        return Plan(run_dir, [job], files)
    # an existing out is continued: the shards skip what it holds, and the merge joins it with them
    continued = [out] if Path(out).exists() else []
    done = _already_labelled(out, pool, structures) if continued else set()
    shards = [str(run_dir / "shards" / f"shard-{k}-of-{cfg.shards}.h5") for k in range(cfg.shards)]
    task_out = (f"{run_dir}/shards/shard-", TASK_ID, f"-of-{cfg.shards}.h5")  # one word: shards[TASK_ID]
    totals = [len(set(range(k, total, cfg.shards)) - done) for k in range(cfg.shards)]
    label = Job(name="label", kind="label", array=cfg.shards, run_dir=str(run_dir), gpus=profile.gpus_per_task,
                command=base[:3] + [task_out] + base[3:] + ["--shard", (TASK_ID, f"/{cfg.shards}")]
                + [arg for path in continued for arg in ("--skip-labelled-in", path)],
                progress={"datasets": shards, "totals": totals})
    merge = Job(name="merge", kind="merge", after=["label"], run_dir=str(run_dir),
                command=["data", "merge", out, *continued, *shards, "--order", pool, "--overwrite"],
                progress={"datasets": [out], "totals": [total]})
    return Plan(run_dir, [label, merge], files)


@dataclass
class ChainConfig:
    """``mlff slurm chain CONFIG``: stages run one after the other (afterok), e.g. label -> train -> md."""
    steps: list  # [{kind: label, config: label.yaml}, {kind: train, config: train.yaml}, ...]
    run_dir: str | None = None  # default: the chain file's folder / "<file stem>-chain"


def _plan_chain(config: str, profile: SiteProfile, options: Options) -> Plan:
    cfg = from_dict(ChainConfig, load_yaml(config), str(config))
    base = Path(config).resolve().parent
    if not isinstance(cfg.steps, list) or not cfg.steps:
        raise MLFFError(f"{config}: steps must be a non-empty list of {{kind: ..., config: ...}}")
    jobs, files, previous = [], {}, []
    for k, step in enumerate(cfg.steps):
        if not isinstance(step, dict) or set(step) - {"kind", "config"} or "kind" not in step or "config" not in step:
            raise MLFFError(f"{config}: step {k + 1} must be a mapping with exactly 'kind' and 'config', got {step!r}")
        if step["kind"] == "chain":
            raise MLFFError(f"{config}: step {k + 1}: a chain cannot contain a chain")
        path = Path(step["config"]) if Path(step["config"]).is_absolute() else base / step["config"]
        sub = plan(step["kind"], str(path), profile, Options(resume=options.resume))
        taken = {j.name for j in jobs}
        rename = {j.name: (j.name if j.name not in taken else f"{j.name}-{k + 1}") for j in sub.jobs}
        for j in sub.jobs:
            j.after = [rename[a] for a in j.after] or list(previous)
            j.name = rename[j.name]
        jobs += sub.jobs
        files.update(sub.files)
        previous = [sub.jobs[-1].name]
    run_dir = Path(options.run_dir or cfg.run_dir or base / f"{Path(config).stem}-chain")
    return Plan(run_dir.resolve(), jobs, files)


KINDS: dict[str, Callable] = {
    "md": single_job("md", _load_md, "checkpoint.pt"),
    "umbrella": single_job("umbrella", _load_umbrella, "checkpoint.pt", progress_kind="md"),
    "train": _plan_train,
    "label": _plan_label,
    "chain": _plan_chain,
    # the whole loop as one job that requeues itself (exit 75) until a stop criterion; its labels run inside it
    "learn": single_job("learn", _load_learn, "learn.json"),
}
PLANNED: dict[str, str] = {}  # kinds whose commands are not in mlff yet


def plan(kind: str, config: str, profile: SiteProfile, options: Options | None = None) -> Plan:
    """The jobs of ``mlff slurm KIND CONFIG``."""
    if kind in PLANNED and kind not in KINDS:
        raise MLFFError(f"mlff slurm {kind}: `{PLANNED[kind]}` is not part of this version of mlff yet")
    if kind not in KINDS:
        raise MLFFError(f"unknown kind {kind!r}; expected one of {', '.join(sorted(KINDS))}")
    if not Path(config).is_file():
        raise MLFFError(f"config file not found: {config}")
    return KINDS[kind](config, profile, options or Options())
