"""Shared pieces of the benchmarks: timing on the GPU, the water boxes, and RESULTS.md."""

from __future__ import annotations

import datetime
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).with_name("RESULTS.md")
# water molecules for 3 000 / 24 000 / 96 000 atoms
SIZES = {"3k": 1000, "24k": 8000, "96k": 32000}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, device: torch.device, *, warmup: int = 3, repeats: int = 10) -> float:
    """Median wall time of ``fn()`` in ms, after ``warmup`` calls; the GPU is synchronised around each call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def append_results(title: str, table: str, notes: str = "") -> None:
    """Append one run to RESULTS.md: title, date, device, the exact command, the table, notes."""
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    device = device_name(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    versions = f"torch {torch.__version__}"
    for name in ("mace", "cupy", "vesin", "cuequivariance_torch"):
        try:
            versions += f", {name} {__import__(name).__version__}"
        except Exception:  # noqa: BLE001 - a missing package is simply not listed
            pass
    with RESULTS.open("a") as fh:
        fh.write(f"\n## {title}\n\n- date: {stamp}\n- device: {device}\n- versions: {versions}\n"
                 f"- command: `{command}`\n\n{table}\n")
        if notes:
            fh.write(f"\n{notes}\n")


def emit_json(path: str | Path | None, bench: str, **record) -> None:
    """Append one JSON line ``{"bench", "utc", "device", **record}`` to ``path`` (nothing when ``path`` is None).

    Each benchmark writes its rows as soon as they are measured, so a run cut off by a time limit keeps them
    (benchmarks/gpu_check.sh collects the lines into one JSON file)."""
    if path is None:
        return
    device = device_name(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    line = json.dumps({"bench": bench, "utc": stamp, "device": device, **record},
                      default=lambda v: v.item() if hasattr(v, "item") else str(v))  # tensors, NumPy scalars
    with open(path, "a") as fh:
        fh.write(line + "\n")


def markdown_table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        if v is None:
            return "-"
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
