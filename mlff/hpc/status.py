"""``mlff slurm status RUN_DIR``: every job (and array task) of the graph submitted from RUN_DIR: its state,
the progress of its run (MD steps, labels, epochs) and the last error in its log.

States come from ``scontrol show job`` (which keeps finished jobs for MinJobAge), then ``sacct`` where
accounting exists, then the job's own log (the script writes "mlff-slurm: finished" or an error line).
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

from mlff.errors import MLFFError

__all__ = ["job_status", "format_status", "last_error"]

_ERROR = re.compile(r"^(mlff: error: .*"  # mlff's one-line user errors
                    r"|[A-Za-z_.]*(Error|Exception|Interrupt): .*"  # the last line of a traceback
                    r"|slurmstepd\S*: error: \*\*\* .*(TIME LIMIT|CANCELLED|OUT OF MEMORY|NODE FAILURE).*)$")


def _scontrol(job_id: str) -> list[dict]:
    if shutil.which("scontrol") is None:
        return []
    run = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True)
    if run.returncode != 0:
        return []
    rows = []
    for line in run.stdout.splitlines():
        fields = {}
        for item in line.split():
            key, sep, value = item.partition("=")
            if sep:
                fields.setdefault(key, value)
        if fields:
            rows.append({"id": fields.get("JobId"), "task": fields.get("ArrayTaskId"), "state": fields.get("JobState"),
                         "reason": fields.get("Reason"), "exit": fields.get("ExitCode"),
                         "restarts": int(fields.get("Restarts", 0) or 0), "array_id": fields.get("ArrayJobId")})
    return rows


def _sacct(job_id: str) -> list[dict]:
    if shutil.which("sacct") is None:
        return []
    run = subprocess.run(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,State,ExitCode"], capture_output=True,
                         text=True)
    rows = []
    for line in run.stdout.splitlines() if run.returncode == 0 else []:
        parts = line.split("|")
        if len(parts) == 3:
            jid, _, task = parts[0].partition("_")
            rows.append({"id": parts[0], "task": task or None, "state": parts[1].split()[0], "reason": None,
                         "exit": parts[2], "restarts": None, "array_id": jid if task else None})
    return rows


def last_error(log: Path) -> str | None:
    """The last error of a job log's last attempt: the program's own (mlff's one-line errors, a traceback's
    last line) before the batch script's ("mlff-slurm: error: ...")."""
    if not log.is_file():
        return None
    program = script = None
    with open(log, errors="replace") as handle:
        for line in handle:
            line = line.strip()
            if line.startswith("mlff-slurm: job ") and " attempt " in line:
                program = script = None  # a new attempt: earlier errors were recovered from
            elif line.startswith("mlff-slurm: error: "):
                script = line
            elif _ERROR.match(line):
                program = line
    return program or script


def _state_from_log(log: Path) -> str | None:
    if not log.is_file():
        return None
    state = None
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("mlff-slurm: finished"):
            state = "COMPLETED"
        elif line.startswith("mlff-slurm: error"):
            state = "FAILED"
        elif line.startswith("mlff-slurm: job "):
            state = "RUNNING"
        elif "requeueing" in line and line.startswith("mlff-slurm:"):
            state = "REQUEUED"
    return state


def _last_csv_row(path: Path) -> dict | None:
    if not path.is_file():
        return None
    with open(path) as handle:
        lines = [line for line in handle if not line.startswith("#")]
    if lines and not lines[-1].endswith("\n"):  # a row being written (or torn by a kill): not a row yet
        lines.pop()
    rows = list(csv.DictReader(lines))
    return rows[-1] if rows else None


def _count(path: str) -> int | None:
    if not Path(path).is_file():
        return None
    from mlff.data import Dataset

    try:
        ds = Dataset(path)
        return len(ds) + ds.count("failures")
    except MLFFError:
        return None


def _learn_progress(out: Path) -> str:
    """"iteration 2: label done; 30 labels" from the learning run's records."""
    summary, states = out / "summary.json", sorted(out.glob("iter_*/state.json"))
    try:
        if summary.is_file() and json.loads(summary.read_text()).get("status") == "finished":
            s = json.loads(summary.read_text())
            return f"finished after {s['iterations']} iteration(s): {s['reason']}"
        if not states:
            return "initial committee"
        state = json.loads(states[-1].read_text())
    except (OSError, ValueError, KeyError):
        return ""
    done = state.get("done", [])
    spent = (state.get("label") or {}).get("labels_spent")
    return (f"iteration {state.get('iteration', '?')}: {done[-1] + ' done' if done else 'exploring'}"
            + (f"; {spent} labels" if spent is not None else ""))


def progress(job: dict, task: int | None) -> str:
    """The run's progress as one short phrase, from its own files."""
    p, kind = job.get("progress", {}), job["kind"]
    if kind == "md":
        row = _last_csv_row(Path(p["out"]) / "log.csv")
        step = int(float(row["step"])) if row else 0
        return f"step {step}/{p.get('steps', '?')}"
    if kind == "train":
        out, parts = Path(p["out"]), []
        members = [task] if task is not None else range(int(p.get("committee", 1)))
        for k in members:
            row = _last_csv_row(out / f"member_{k:02d}" / "log.csv")
            parts.append(f"{int(float(row['epoch'])) if row else 0}/{p.get('max_epochs', '?')}")
        done = " (potential written)" if (out / "potential").is_dir() and task is None else ""
        return "epochs " + ", ".join(parts) + done
    if kind == "learn":
        return _learn_progress(Path(p["out"]))
    if kind in ("label", "merge"):
        datasets, totals = p.get("datasets", []), p.get("totals", [])
        k = task if task is not None else 0
        if k >= len(datasets):
            return ""
        n = _count(datasets[k])
        word = "labels" if kind == "label" else "records+failures"
        return f"{word} {n if n is not None else 0}/{totals[k]}"
    return ""


def _log_path(record: dict, job: dict, task: int | None, array_id: str | None) -> Path:
    logs = Path(record["logs"])
    if job.get("array"):
        return logs / f"{job['name']}-{array_id or job['job_id']}_{task}.out"
    return logs / f"{job['name']}-{job['job_id']}.out"


def _rows(job: dict) -> list[dict]:
    rows = _scontrol(job["job_id"]) or _sacct(job["job_id"])
    if not job.get("array"):
        return rows[:1] or [{"id": job["job_id"], "task": None, "state": None, "reason": None, "exit": None,
                             "restarts": None, "array_id": None}]
    by_task: dict[int, dict] = {}
    for row in rows:
        for k in _task_ids(row["task"], job["array"]):
            by_task[k] = {**row, "task": k}
    return [by_task.get(k, {"id": None, "task": k, "state": None, "reason": None, "exit": None, "restarts": None,
                            "array_id": job["job_id"]}) for k in range(job["array"])]


def _task_ids(text: str | None, n: int) -> list[int]:
    """Task numbers of '3', '0-3', '[0-3%2]', '1,3-4' (a pending group); '' -> none."""
    if not text:
        return []
    ids = []
    for part in text.strip("[]").split("%")[0].split(","):
        a, _, b = part.partition("-")
        if a.isdigit():
            ids += list(range(int(a), int(b or a) + 1))
    return [k for k in ids if k < n]


def job_status(run_dir: str | Path) -> dict:
    """The status of the graph submitted from ``run_dir``: jobs, their tasks, states, progress and errors."""
    path = Path(run_dir) / "slurm" / "jobs.json"
    if not path.is_file():
        raise MLFFError(f"no submitted jobs in {run_dir} (no slurm/jobs.json): submit with `mlff slurm KIND CONFIG --submit`")
    record = json.loads(path.read_text())
    jobs = []
    for job in record["jobs"]:
        tasks = []
        for row in _rows(job):
            task = row["task"] if job.get("array") else None
            log = _log_path(record, job, task, row.get("array_id"))
            state = row["state"] or _state_from_log(log) or "UNKNOWN"
            tasks.append({"task": task, "job_id": row["id"], "state": state, "reason": row["reason"],
                          "exit": row["exit"], "restarts": row["restarts"], "progress": progress(job, task),
                          "error": last_error(log) if state not in ("COMPLETED",) else None, "log": str(log)})
        jobs.append({"name": job["name"], "kind": job["kind"], "job_id": job["job_id"], "array": job.get("array"),
                     "after": job.get("after", []), "tasks": tasks,
                     "progress": progress(job, None) if job.get("array") else tasks[0]["progress"]})
    return {"run_dir": str(run_dir), "kind": record["kind"], "submitted_utc": record["submitted_utc"], "jobs": jobs}


def _task_line(t: dict) -> str:
    """'FAILED (reason), exit 2:0, requeued 1x, labels 0/3; last error: ...'"""
    head = t["state"]
    if t.get("reason") and t["reason"] not in ("None", "(null)") and t["state"] != "RUNNING":
        head += f" ({t['reason']})"
    parts = [head]
    if t.get("exit") and t["exit"] != "0:0" and t["state"] not in ("PENDING", "RUNNING"):
        parts.append(f"exit {t['exit']}")
    if t.get("restarts"):
        parts.append(f"requeued {t['restarts']}x")
    if t.get("progress"):
        parts.append(t["progress"])
    return ", ".join(parts) + (f"; last error: {t['error']}" if t.get("error") else "")


def format_status(status: dict) -> str:
    lines = [f"{status['run_dir']}: {status['kind']} graph submitted {status['submitted_utc']}"]
    for job in status["jobs"]:
        after = f" after {', '.join(job['after'])}" if job["after"] else ""
        if not job["array"]:
            lines.append(f"  {job['name']:<14} job {job['job_id']}{after}: {_task_line(job['tasks'][0])}")
            continue
        counts: dict[str, int] = {}
        for t in job["tasks"]:
            counts[t["state"]] = counts.get(t["state"], 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        lines.append(f"  {job['name']:<14} array {job['job_id']} ({job['array']} tasks){after}: {summary}")
        for t in job["tasks"]:
            lines.append(f"    [{t['task']}] {_task_line(t)}")
    return "\n".join(lines)
