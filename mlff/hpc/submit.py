"""Write a plan's sbatch scripts into ``RUN_DIR/slurm`` and submit them as one graph (``afterok``).

``RUN_DIR/slurm/jobs.json`` records what was submitted (job IDs, scripts, logs, progress sources), which is
what ``mlff slurm status RUN_DIR`` reads. Dependent jobs are submitted with ``--kill-on-invalid-dep=yes``:
a job whose dependency failed is cancelled instead of pending forever.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
from pathlib import Path

from mlff.errors import MLFFError
from mlff.hpc.kinds import Plan
from mlff.hpc.profile import SiteProfile
from mlff.hpc.script import render_script

__all__ = ["scripts", "write_plan", "submit_plan", "JOBS_FILE"]

JOBS_FILE = "jobs.json"


def _slurm_dir(plan: Plan) -> Path:
    return Path(plan.run_dir) / "slurm"


def scripts(plan: Plan, profile: SiteProfile, *, kind: str, config: str) -> dict[Path, str]:
    """Script path -> text for every job of ``plan``."""
    names = [j.name for j in plan.jobs]
    if len(set(names)) != len(names):
        raise MLFFError(f"job names must be unique in a graph, got {names}")
    known = set()
    for job in plan.jobs:
        unknown = [a for a in job.after if a not in known]
        if unknown:
            raise MLFFError(f"job {job.name!r} depends on {unknown[0]!r}, which is not submitted before it")
        known.add(job.name)
    d = _slurm_dir(plan)
    graph = f"`mlff slurm {kind} {config}`"
    return {d / f"{job.name}.sbatch": render_script(job, profile, logs_dir=str(d / "logs"), workdir=os.getcwd(),
                                                    graph=graph) for job in plan.jobs}


def write_plan(plan: Plan, profile: SiteProfile, *, kind: str, config: str) -> dict[Path, str]:
    """Write the scripts (and the plan's extra files); returns what was written."""
    texts = scripts(plan, profile, kind=kind, config=config)
    (_slurm_dir(plan) / "logs").mkdir(parents=True, exist_ok=True)
    for path, text in {**texts, **plan.files}.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    for path in texts:
        os.chmod(path, 0o755)
    return texts


def _sbatch(script: Path, dependency: list[str]) -> str:
    if shutil.which("sbatch") is None:
        raise MLFFError("sbatch not found: --submit needs SLURM's client commands on this machine")
    cmd = ["sbatch", "--parsable"]
    if dependency:
        cmd += [f"--dependency=afterok:{':'.join(dependency)}", "--kill-on-invalid-dep=yes"]
    run = subprocess.run([*cmd, str(script)], capture_output=True, text=True)
    if run.returncode != 0:
        lines = (run.stderr or run.stdout).strip().splitlines()
        raise MLFFError(f"sbatch {script} failed: {lines[-1] if lines else f'exit {run.returncode}'}")
    return run.stdout.strip().split(";")[0]


def _cancel(ids: list[str]) -> None:
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True)


def submit_plan(plan: Plan, profile: SiteProfile, *, kind: str, config: str) -> list:
    """Write and submit every job (dependencies by job ID); returns the jobs with their IDs. A failed
    sbatch cancels the jobs of this graph already submitted."""
    texts = write_plan(plan, profile, kind=kind, config=config)
    ids: dict[str, str] = {}
    try:
        for job, script in zip(plan.jobs, texts):
            job.job_id = _sbatch(script, [ids[a] for a in job.after])
            ids[job.name] = job.job_id
    except MLFFError:
        _cancel(list(ids.values()))
        raise
    record = {"kind": kind, "config": str(Path(config).resolve()), "run_dir": str(plan.run_dir),
              "submitted_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "profile": profile.to_dict(), "logs": str(_slurm_dir(plan) / "logs"),
              "jobs": [{**job.to_dict(), "script": str(script)} for job, script in zip(plan.jobs, texts)]}
    path = _slurm_dir(plan) / JOBS_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)
    return plan.jobs
