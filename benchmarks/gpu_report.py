"""Collect a gpu_check.sh run (steps.jsonl, rows.jsonl) into gpu_check.json, with the targets checked.

    python benchmarks/gpu_report.py OUTDIR [--mode gpu|cpu-smoke] [--commit SHA]    # writes OUTDIR/gpu_check.json
    python benchmarks/gpu_report.py OUTDIR --summary-only                           # prints the summary table

Targets (issues 2, 3, 15): neighbour list <= vesin-torch at 24k and 96k atoms; MLFFCalculator step <= 1.25 x the
model alone at every size and >= 10 x faster than MACECalculator at 24k atoms; one FDH cluster <= 2 ms/step;
512 replicas >= 1.8 x TorchSim's atom-steps/s; our water NVE step <= 1.05 x the model alone. A target whose rows
are missing is "not measured"; none is ever judged on a CPU smoke run.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

__all__ = ["targets", "collect"]


def _lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut off by a kill
            continue
    return out


def _num(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _check(name: str, value: float | None, op: str, limit: float, where: str) -> dict:
    if value is None:
        return {"target": name, "where": where, "status": "not measured"}
    ok = value <= limit if op == "<=" else value >= limit
    return {"target": name, "where": where, "value": round(value, 4), "limit": f"{op} {limit}",
            "status": "met" if ok else "missed"}


def _neighbors(rows: list[dict]) -> list[dict]:
    out = []
    for size in ("24k", "96k"):
        row = next((r["row"] for r in rows if r["bench"] == "neighbors" and f"({size})" in str(r["row"]["atoms"])), None)
        out.append(_check("neighbour list: vesin-torch ms / ours ms", _num(row and row.get("vesin / ours")), ">=",
                          1.0, f"{size} atoms"))
    return out


def _md_step(rows: list[dict]) -> list[dict]:
    out, steps = [], [r["row"] for r in rows if r["bench"] == "md_step"]
    for row in steps:
        where = f"{row['model']}, {row['atoms']} atoms"
        out.append(_check("MLFFCalculator step / model alone", _num(row.get("(b)/(c)")), "<=", 1.25, where))
        if row["atoms"] == 24000:
            out.append(_check("MACECalculator step / MLFFCalculator step", _num(row.get("(a)/(b)")), ">=", 10.0, where))
    if not steps:
        out.append(_check("MLFFCalculator step / model alone", None, "<=", 1.25, "md_step"))
    return out


def _cluster_part(rows: list[dict], part: str) -> list[list]:
    for r in rows:
        if r["bench"] == "md_cluster" and r.get("part") == part:
            return [list(row.values()) for row in r["rows"]]
    return []


def _md_cluster(rows: list[dict]) -> list[dict]:
    one = _cluster_part(rows, "1")
    ours = [_num(v[1]) for v in one if str(v[0]).startswith("ours") and _num(v[1]) is not None]
    out = [_check("one FDH cluster, ours, best ms/step", min(ours) if ours else None, "<=", 2.0, "md_cluster (1)")]
    two = _cluster_part(rows, "2")
    ours = [_num(v[2]) for v in two if str(v[0]).startswith("ours") and _num(v[2]) is not None]
    peer = next((_num(v[2]) for v in two if str(v[0]).startswith("TorchSim")), None)
    ratio = max(ours) / peer if ours and peer else None
    out.append(_check("512 replicas: ours atom-steps/s / TorchSim's", ratio, ">=", 1.8, "md_cluster (2)"))
    for v in _cluster_part(rows, "3"):
        out.append(_check("water NVE step / model alone", _num(v[3]), "<=", 1.05, f"md_cluster (3), {v[0]} atoms"))
    return out


def targets(rows: list[dict]) -> list[dict]:
    """Every target of the GPU issues, checked against the measured rows."""
    return _neighbors(rows) + _md_step(rows) + _md_cluster(rows)


def collect(outdir: Path, mode: str = "gpu", commit: str | None = None) -> dict:
    steps, rows = _lines(outdir / "steps.jsonl"), _lines(outdir / "rows.jsonl")
    drift = [dict(zip(("dtype", "steps", "ps", "eV/atom/ps"), v)) for v in _cluster_part(rows, "4")]
    return {"mode": mode, "commit": commit, "written_utc": datetime.datetime.now(datetime.timezone.utc)
            .isoformat(timespec="seconds"), "device": next((r["device"] for r in rows), None), "steps": steps,
            "targets": targets(rows) if mode == "gpu" else "not judged on a CPU smoke run", "nve_drift": drift,
            "rows": rows}


def summary(report: dict) -> str:
    lines = [f"{'step':<12} {'status':<8} {'s':>5} {'limit':>5}"]
    lines += [f"{s['step']:<12} {s['status']:<8} {s['wall_s']:>5} {s['limit_s']:>5}" for s in report["steps"]]
    if isinstance(report["targets"], list):
        lines.append("")
        for t in report["targets"]:
            value = f"{t['value']} ({t['limit']})" if "value" in t else ""
            lines.append(f"{t['status']:<13} {t['target']} [{t['where']}] {value}")
    lines.append(f"{len(report['rows'])} benchmark rows")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("outdir", type=Path)
    p.add_argument("--mode", default="gpu", choices=["gpu", "cpu-smoke"])
    p.add_argument("--commit")
    p.add_argument("--summary-only", action="store_true", help="print the summary of gpu_check.json; write nothing")
    args = p.parse_args(argv)
    path = args.outdir / "gpu_check.json"
    if args.summary_only:
        print(summary(json.loads(path.read_text())))
        return
    report = collect(args.outdir, args.mode, args.commit)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1, default=str) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    main()
