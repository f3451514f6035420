"""The model error of an umbrella profile: the same samples reweighted to each member of the committee.

A committee potential drives MD with the mean of its members' energies. Each member is another plausible model
of the same data, so the profile it would give follows from the run's own samples by free-energy perturbation
(``mlff.fes.levels``): dE_k = E_k - E_mean on the trajectory frames, MBAR weights times exp(-dE_k/kT). The spread
of the members' barriers (standard deviation, and the range) is the model error of the barrier: how much it
would move with another, equally well trained model. It is a lower bound when the committee underestimates its
errors (calibrate it against held-out data), and it needs an effective sample size per member well above a few
dozen frames (reported) to mean anything.

``member_energies`` evaluates every member on every trajectory frame of a run (``trajectory.h5``, frames at CV
sample steps only) and caches the table in ``RUN/committee_energies.csv`` (with the potential's checksum, so a
changed potential is evaluated again); ``member_profiles`` turns it into the members' barriers.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np

from mlff.errors import MLFFError
from mlff.fes.barrier import KEYS, NoBarrier, barrier_numbers, locate, settings
from mlff.fes.levels import SinglePoints, reweight_to_level

__all__ = ["member_energies", "read_member_energies", "member_profiles", "CACHE"]

CACHE = "committee_energies.csv"
_BATCH = 32


def _potential_of(run_dir: Path, run) -> str:
    potential = (run.provenance.get("config") or {}).get("potential") or run.provenance.get("potential")
    if not isinstance(potential, str):
        raise MLFFError(f"{run_dir}: the run does not name a trained potential (bias.json config.potential = "
                        f"{potential!r}); pass the committee with --potential")
    return potential


def _checksum(potential_dir: Path) -> str:
    meta = json.loads((potential_dir / "potential.json").read_text())
    return hashlib.sha256(json.dumps(meta.get("sha256", {}), sort_keys=True).encode()).hexdigest()[:16]


def read_member_energies(path: str | Path) -> dict:
    """The table of ``member_energies``: step [M], system [M], energies [M, K] (eV) and the header's metadata."""
    path = Path(path)
    try:
        with open(path) as handle:
            header = json.loads(handle.readline().removeprefix("#").strip())
            rows = list(csv.DictReader(handle))
        members = [c for c in rows[0] if c.startswith("energy_member_")] if rows else []
        return {"step": np.array([int(r["step"]) for r in rows], np.int64),
                "system": np.array([int(r["system"]) for r in rows], np.int64),
                "energy_eV": np.array([[float(r[c]) for c in members] for r in rows], np.float64).reshape(len(rows),
                                                                                                          len(members)),
                **header}
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
        raise MLFFError(f"{path}: not a committee energy table ({str(err).splitlines()[0]}); delete it to recompute") \
            from None


def member_energies(run_dir: str | Path, potential: str | None = None, *, device: str = "cpu",
                    progress: bool = False) -> dict:
    """Every committee member's energy (eV) on every trajectory frame of the run that is also a CV sample
    (``read_member_energies``'s dict); computed once and cached in ``RUN/committee_energies.csv``."""
    from mlff.bias.io import read_biased_run
    from mlff.models.store import load_potential, resolve_potential_path

    run_dir = Path(run_dir)
    run = read_biased_run(run_dir, include_equilibration=True)
    path = resolve_potential_path(potential or _potential_of(run_dir, run))
    checksum = _checksum(path)
    cache = run_dir / CACHE
    if cache.is_file():
        table = read_member_energies(cache)
        if table.get("potential_checksum") == checksum:
            return table
    model = load_potential(str(path), device=device)
    if model.committee_size < 2:
        raise MLFFError(f"{path} has {model.committee_size} member: the model error needs a committee")
    steps, systems, energies = _evaluate(run_dir, run, model, progress)
    header = {"potential": str(path), "potential_checksum": checksum, "members": model.committee_size,
              "unit": "eV", "frames": int(len(steps))}
    tmp = cache.with_name(f".{cache.name}.tmp")
    with open(tmp, "w", newline="") as handle:
        handle.write("# " + json.dumps(header) + "\n")
        writer = csv.writer(handle)
        writer.writerow(["step", "system"] + [f"energy_member_{k}" for k in range(model.committee_size)])
        for s, y, e in zip(steps, systems, energies):
            writer.writerow([int(s), int(y)] + [f"{v:.8f}" for v in e])
    tmp.replace(cache)
    return read_member_energies(cache)


def _evaluate(run_dir: Path, run, model, progress: bool):
    """(step [M], system [M], energies [M, K]) of the trajectory frames at CV sample steps."""
    import h5py

    from mlff.md.h5md import read_h5md
    from mlff.models.graph import batch_atoms

    trajectory = run_dir / "trajectory.h5"
    if not trajectory.is_file():
        raise MLFFError(f"{run_dir} has no trajectory.h5: the model error needs frames (set md.trajectory_every)")
    sampled = set(int(s) for s in run.step)
    with h5py.File(trajectory, "r", locking=False) as f:
        groups = sorted(f["particles"])
    frames, keys = [], []
    for system, group in enumerate(groups):
        for frame in read_h5md(trajectory, ":", group=group):
            step = int(frame.info["step"])
            if step in sampled:
                frames.append(frame)
                keys.append((step, system))
    if not frames:
        raise MLFFError(f"{trajectory}: no frame lies on a CV sample step (trajectory_every should be a multiple of "
                        "colvar_every)")
    energies = []
    for start in range(0, len(frames), _BATCH):
        graph = batch_atoms(frames[start:start + _BATCH], model.cutoff, device=model.device, dtype=model.dtype)
        out = model.evaluate(graph, forces=False)
        energies.append(out["energy_members"].T.double().cpu().numpy())  # [S, K]
        if progress:
            print(f"committee energies: {min(start + _BATCH, len(frames))}/{len(frames)} frames", flush=True)
    steps, systems = (np.array(v, np.int64) for v in zip(*keys))
    return steps, systems, np.concatenate(energies)


def _numbers(bin_cv, f, config, run) -> tuple[dict | None, float | None]:
    """(barrier numbers in kT, TS location) of profile ``f``, or (None, None) when it has no barrier."""
    try:
        marks = locate(bin_cv, f, **settings(config), cv=run.cv_name, unit=run.cv_unit)
    except NoBarrier:
        return None, None
    return barrier_numbers(f, marks), float(bin_cv[marks.ts])


def member_profiles(run, table: dict, edges: np.ndarray, beta_per_eV: float, config) -> dict:
    """Each member's profile on ``edges`` (the run's samples at the table's frames, reweighted from the committee
    mean to that member), its barrier numbers (kT; None when its profile has no barrier, by
    ``mlff.fes.barrier.locate``'s test) and effective sample size, and their spread over the members with a
    barrier (kT; NaN with fewer than two): the model error. ``config``: the FESConfig (regions, thresholds)."""
    energies = table["energy_eV"]
    mean = energies.mean(axis=1)
    keep = np.isin(table["step"], run.step)  # frames of the equilibration are not samples of the analysis
    if not keep.any():
        raise MLFFError(f"none of the {len(keep)} frames of the committee table ({table.get('potential', '')}) is a CV "
                        f"sample of the analysed run (steps {run.step[0]}..{run.step[-1]})")
    members, profiles = [], []
    bin_cv = 0.5 * (edges[1:] + edges[:-1])
    for k in range(energies.shape[1]):
        points = SinglePoints(table["step"][keep], table["system"][keep], (energies[:, k] - mean)[keep],
                              f"committee member {k}")
        out = reweight_to_level(run, points, edges, beta_per_eV, 0, 0)
        values, cv_ts = _numbers(bin_cv, out["f_target"], config, run)
        members.append({"member": k, "values_kT": values, "cv_ts": cv_ts, "ess": out["ess_target"],
                        "n_frames": out["n_frames"]})
        profiles.append(out["f_target"])
        reference = out["f_reference"]
    found = [m["values_kT"] for m in members if m["values_kT"] is not None]
    values = {key: np.array([v[key] for v in found]) for key in KEYS}
    return {"members": members, "profiles_kT": np.array(profiles),
            "mean_potential_kT": _numbers(bin_cv, reference, config, run)[0],
            "members_with_barrier": len(found),
            "std_kT": {key: float(v.std(ddof=1)) if v.size > 1 else float("nan") for key, v in values.items()},
            "range_kT": {key: [float(v.min()), float(v.max())] if v.size else None for key, v in values.items()},
            "min_ess": float(min(m["ess"] for m in members)), "n_frames": members[0]["n_frames"],
            "source": table.get("potential", "")}
