"""Explore: batched MD replicas and/or umbrella windows along xi with the current committee (``run_md`` /
``run_umbrella``, their monitors on), then every trajectory frame becomes a candidate in
``iter_NNN/candidates.h5`` (an unlabelled dataset: the structure's info, ``xi``, where it came from).

Resumable: a run that finished (or was stopped by a monitor) is read as it is; one killed on the way is
continued from its checkpoint (``resume``); one killed before its first checkpoint is started again.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from mlff.errors import MLFFError
from mlff.learn.config import LearnConfig
from mlff.learn.state import read_json, write_dataset

__all__ = ["explore", "trajectory_frames"]

_FINISHED = ("finished", "stopped")  # a monitor stop ends the run: its frames up to the stop are candidates


def _resumable(run_dir: Path, marker: str) -> bool | None:
    """None: the run is complete; True: continue it from its checkpoint; False: start it (again) from scratch."""
    run_json = run_dir / "run.json"
    if run_json.is_file() and read_json(run_json).get("status") in _FINISHED:
        return None
    if (run_dir / "checkpoint.pt").is_file() and (run_dir / marker).is_file():
        return True
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return False


def _md(config: LearnConfig, potential: str, run_dir: Path, iteration: int, progress: bool) -> str:
    from mlff.md.runner import run_md

    resume = _resumable(run_dir, "checkpoint.pt")
    if resume is None:
        return read_json(run_dir / "run.json")["status"]
    md = {"trajectory_every": 10, **config.explore.md, "structure": config.structure, "potential": potential,
          "out": str(run_dir), "seed": config.seed + 1000 * iteration, "device": config.device}
    return run_md(md, resume=resume, show_progress=progress)["status"]


def _umbrella(config: LearnConfig, potential: str, run_dir: Path, iteration: int, progress: bool) -> str:
    from mlff.bias.umbrella import run_umbrella

    resume = _resumable(run_dir, "bias.json")
    if resume is None:
        return read_json(run_dir / "run.json")["status"]
    spec = dict(config.explore.umbrella)
    md = {"trajectory_every": 10, "device": config.device, **spec.get("md", {}), "seed": config.seed + 1000 * iteration + 1}
    umbrella = {**spec, "md": md, "structure": config.structure, "potential": potential, "out": str(run_dir)}
    return run_umbrella(umbrella, resume=resume, show_progress=progress)["status"]


def trajectory_frames(path: Path, structure, skip: int, source: str) -> tuple[list, int]:
    """Every frame of every system of the H5MD file ``path`` (after the first ``skip`` of each) as a copy of
    ``structure`` (its info: charge, xi_atoms, fixed) at the frame's positions, with ``xi`` and ``source``;
    and how many frames were left out as unphysical (overlapping atoms, non-finite positions: a committee
    far outside its data makes them, and no labeller should be paid for them)."""
    import h5py

    from mlff.data.cluster import reaction_coordinate
    from mlff.data.recipe import region_of
    from mlff.geometry import geometry_problem
    from mlff.md.h5md import read_h5md

    with h5py.File(path, "r", locking=False) as f:
        groups = sorted(f["particles"])
    frames, rejected = [], 0
    for group in groups:
        for frame in read_h5md(path, ":", group=group)[skip:]:
            if geometry_problem(frame.positions, structure.cell.array, structure.pbc) is not None:
                rejected += 1
                continue
            atoms = structure.copy()
            atoms.calc = None
            atoms.positions = frame.positions
            atoms.info = {k: v for k, v in structure.info.items() if k not in ("xi", "source", "tags")}
            atoms.info["source"] = f"{source} {group} step {int(frame.info['step'])}"
            if "xi_atoms" in atoms.info:  # and the region tag by xi, as the datasets it joins carry
                atoms.info["xi"] = reaction_coordinate(atoms)
                atoms.info["tags"] = [region_of(atoms.info["xi"])]
            frames.append(atoms)
    return frames, rejected


def explore(config: LearnConfig, potential: str, it_dir: Path, iteration: int) -> dict:
    """Run the iteration's exploration and write ``candidates.h5``; returns the stage summary, with
    ``status`` "interrupted" when a signal stopped an MD run (resume later)."""
    from mlff.md.config import read_structure

    structure = read_structure(config.structure)
    frames, runs, rejected = [], {}, 0
    for kind, run in (("md", _md), ("umbrella", _umbrella)):
        if getattr(config.explore, kind) is None:
            continue
        run_dir = it_dir / "explore" / kind
        status = run(config, potential, run_dir, iteration, config.progress)
        runs[kind] = status
        if status not in _FINISHED:
            return {"status": "interrupted", "runs": runs}
        trajectory = run_dir / "trajectory.h5"
        if not trajectory.is_file():
            raise MLFFError(f"explore.{kind}: {run_dir} wrote no trajectory; set trajectory_every > 0")
        found, bad = trajectory_frames(trajectory, structure, config.explore.skip_frames, f"learn iter {iteration} {kind}")
        frames, rejected = frames + found, rejected + bad
    for atoms in frames:
        atoms.info["learn_iteration"] = iteration
    write_dataset(it_dir / "candidates.h5", frames, description=f"mlff learn iteration {iteration}: candidates")
    return {"status": "done", "runs": runs, "candidates": len(frames), "rejected_unphysical": rejected}
