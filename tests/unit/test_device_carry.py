"""The device plan's transfer limit: every call carries the tracked tree plus one 32 MiB wheel part
(benchmarks/gpu-node/repack.sh, benchmarks/GPU_RUN.md), at most 64 MiB in all."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIMIT_MIB, PART_MIB = 64, 32


def test_the_tracked_tree_leaves_room_for_a_wheel_part_in_one_device_call():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    paths = [ROOT / f for f in files.decode().split("\0") if f]
    tree = sum(p.stat().st_size for p in paths if p.is_file())
    room = (LIMIT_MIB - PART_MIB) * 2 ** 20
    assert tree <= room, (f"the tracked tree is {tree / 1e6:.1f} MB: with a {PART_MIB} MiB wheel part a device call "
                          f"exceeds {LIMIT_MIB} MiB; shrink the tree or repack smaller parts (GPU_RUN.md)")
