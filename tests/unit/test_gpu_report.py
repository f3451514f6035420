"""benchmarks/gpu_report.py: the GPU run's targets judged from the rows the benchmarks wrote."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
import gpu_report  # noqa: E402


def _rows():
    nb = lambda size, ratio: {"bench": "neighbors", "device": "H200", "row": {"atoms": f"{size} ({size})",  # noqa: E731
                                                                            "vesin / ours": ratio}}
    step = {"bench": "md_step", "device": "H200",
            "row": {"model": "small", "atoms": 24000, "(b)/(c)": 1.1, "(a)/(b)": 8.0}}
    one = {"bench": "md_cluster", "part": "1", "device": "H200", "rows": [
        {"k": "ours, Verlet list, eager", "ms": 3.1, "x": 1.0}, {"k": "ours, all pairs + CUDA graph", "ms": 1.7, "x": 1},
        {"k": "TorchSim nvt_langevin (n2 list)", "ms": 9.0, "x": 1}]}
    two = {"bench": "md_cluster", "part": "2", "device": "H200", "rows": [
        {"k": "ours, 512 replicas, all pairs + CUDA graph", "ms": 10.0, "r": 2.0e6},
        {"k": "TorchSim, 512 replicas (n2 list)", "ms": 30.0, "r": 1.0e6}]}
    return [nb("24k", 1.3), nb("96k", 0.8), step, one, two]


def test_targets_are_met_missed_or_not_measured():
    by = {(t["target"], t["where"]): t for t in gpu_report.targets(_rows())}
    assert by[("neighbour list: vesin-torch ms / ours ms", "24k atoms")]["status"] == "met"
    assert by[("neighbour list: vesin-torch ms / ours ms", "96k atoms")]["status"] == "missed"
    assert by[("MLFFCalculator step / model alone", "small, 24000 atoms")]["status"] == "met"
    assert by[("MACECalculator step / MLFFCalculator step", "small, 24000 atoms")]["status"] == "missed"
    cluster = by[("one FDH cluster, ours, best ms/step", "md_cluster (1)")]
    assert cluster["status"] == "met" and cluster["value"] == 1.7  # the best of our variants, not TorchSim's
    replicas = by[("512 replicas: ours atom-steps/s / TorchSim's", "md_cluster (2)")]
    assert replicas["status"] == "met" and replicas["value"] == 2.0
    assert all(t["status"] == "not measured" for t in gpu_report.targets([]))


def test_collect_skips_a_line_cut_off_by_a_kill_and_never_judges_a_smoke_run(tmp_path):
    lines = [json.dumps(r) for r in _rows()]
    (tmp_path / "rows.jsonl").write_text("\n".join(lines) + '\n{"bench": "md_st')
    (tmp_path / "steps.jsonl").write_text(json.dumps({"step": "neighbors", "status": "ok", "rc": 0, "wall_s": 20,
                                                      "limit_s": 60, "command": "x"}) + "\n")
    report = gpu_report.collect(tmp_path)
    assert len(report["rows"]) == 5 and report["device"] == "H200" and isinstance(report["targets"], list)
    assert "neighbors" in gpu_report.summary(report)
    assert gpu_report.collect(tmp_path, mode="cpu-smoke")["targets"] == "not judged on a CPU smoke run"
