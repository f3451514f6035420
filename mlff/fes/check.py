"""A direct check of a barrier at the reference level: single points on frames the run sampled.

``pick_frames`` draws trajectory frames of an umbrella run (at CV sample steps, after equilibration) whose CV
lies in named regions, e.g. the reactant basin and the TS window that ``mlff fes`` located
(``regions_from_fes``), as structures ready to label (the run's structure: its charge, multiplicity and fixed
atoms; ``info``: step, system, cv, region, where they came from). Label them with any labeller (``mlff data
label``; DFT in two one-thread workers on a CPU). ``write_single_points`` then pairs each label with the
committee-mean energy that drove the run on the same frame (``mlff.fes.committee.member_energies``) into a CSV
of single points, and ``endpoint_barrier`` corrects the run's barrier to the label's level by free-energy
perturbation at its two ends: dA_region = -kT ln <exp(-(E_label - E_model)/kT)> over the region's frames, each
weighted by its unbiased MBAR weight from the run's full fit, and barrier_label = barrier_model + dA_ts -
dA_reactant. Its error (bootstrap over the frames of each region, with the run's statistical error added in
quadrature) and each region's effective sample size (how many frames carry the average: a few means the two
levels sample different configurations) come with it. Single points that cover every window can instead be
reweighted into a whole profile (``mlff fes --single-points``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from mlff.errors import MLFFError
from mlff.fes.levels import _kish

__all__ = ["pick_frames", "regions_from_fes", "write_single_points", "endpoint_barrier"]


def regions_from_fes(fes_json: str | Path, *, reactant_half_width: float = 0.15, ts_half_width: float = 0.1) -> dict:
    """{"reactant": [lo, hi], "ts": [lo, hi]} around the reactant minimum and the TS of ``mlff fes``'s fes.json."""
    path = Path(fes_json)
    try:
        results = json.loads(path.read_text())["results"]
        r_min, ts = results["cv_reactant_minimum"]["value"], results["cv_transition_state"]["value"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as err:
        raise MLFFError(f"{path}: not an fes.json with a reactant minimum and a TS ({type(err).__name__}: {err})") \
            from None
    if r_min is None or ts is None:
        reason = (results.get("barrier") or {}).get("no_barrier") or "no reactant minimum or TS"
        raise MLFFError(f"{path}: the profile has no barrier to check ({reason})")
    return {"reactant": [r_min - reactant_half_width, r_min + reactant_half_width],
            "ts": [ts - ts_half_width, ts + ts_half_width]}


def _structure_of(run_dir: Path, run):
    from mlff.md.config import read_structure

    spec = (run.provenance.get("config") or {}).get("structure")
    if not isinstance(spec, str):
        raise MLFFError(f"{run_dir}: bias.json names no structure (config.structure); cannot give frames a charge")
    return read_structure(spec)


def pick_frames(run_dir: str | Path, regions: dict, per_region: int, *, seed: int = 0) -> list:
    """Up to ``per_region`` trajectory frames (seeded, without repeats) whose CV lies in each of ``regions``
    ({name: [lo, hi]}); MLFFError when a region has none. Unphysical frames (overlapping atoms: a model far
    outside its data) are never offered: a labeller should not be paid for them."""
    import h5py

    from mlff.bias.io import read_biased_run
    from mlff.geometry import geometry_problem
    from mlff.md.h5md import read_h5md

    run_dir = Path(run_dir)
    run = read_biased_run(run_dir)
    structure = _structure_of(run_dir, run)
    trajectory = run_dir / "trajectory.h5"
    if not trajectory.is_file():
        raise MLFFError(f"{run_dir} has no trajectory.h5: no frames to check (set md.trajectory_every)")
    row = {int(s): t for t, s in enumerate(run.step)}
    with h5py.File(trajectory, "r", locking=False) as f:
        groups = sorted(f["particles"])
    candidates = []  # (system, step, cv, frame)
    for system, group in enumerate(groups):
        for frame in read_h5md(trajectory, ":", group=group):
            t = row.get(int(frame.info["step"]))
            if t is not None and geometry_problem(frame.positions, structure.cell.array, structure.pbc) is None:
                candidates.append((system, int(frame.info["step"]), float(run.cv[t, system]), frame))
    rng = np.random.default_rng(seed)
    picked = []
    for name, (lo, hi) in regions.items():
        inside = [c for c in candidates if lo <= c[2] <= hi]
        if not inside:
            raise MLFFError(f"no trajectory frame of {run_dir} has {run.cv_name} in the {name} region [{lo:.3f}, "
                            f"{hi:.3f}] {run.cv_unit} ({len(candidates)} frames at CV sample steps)")
        order = rng.permutation(len(inside))
        for k in order[:per_region]:
            system, step, cv, frame = inside[int(k)]
            atoms = structure.copy()
            atoms.calc = None
            atoms.positions = frame.positions
            atoms.info = {**{k: v for k, v in structure.info.items() if k not in ("xi", "source", "tags")},
                          "step": step, "system": system, "cv": cv, run.cv_name: cv, "region": name,
                          "source": f"{run_dir.name} system {system} step {step} ({name})"}
            picked.append(atoms)
    return picked


def write_single_points(labels, run_dir: str | Path, out: str | Path) -> Path:
    """The CSV for ``mlff fes --single-points``: for every labelled frame (``labels``: records with ``step`` and
    ``system`` in their info, e.g. labelled ``pick_frames``), its label's energy and the committee-mean energy of
    the run's potential on the same frame (``member_energies``, cached in the run directory)."""
    from mlff.data.records import labels as labels_of
    from mlff.fes.committee import member_energies

    run_dir, out = Path(run_dir), Path(out)
    table = member_energies(run_dir)
    mean = table["energy_eV"].mean(axis=1)
    index = {(int(s), int(y)): k for k, (s, y) in enumerate(zip(table["step"], table["system"]))}
    rows = []
    for k, record in enumerate(labels):
        key = (int(record.info.get("step", -1)), int(record.info.get("system", -1)))
        if key not in index:
            raise MLFFError(f"labelled frame {k} ({record.info.get('source', '?')}): step {key[0]}, system {key[1]} "
                            f"is not a trajectory frame of {run_dir} (label frames from pick_frames)")
        energy = labels_of(record).get("energy")
        if energy is None:
            raise MLFFError(f"labelled frame {k} ({record.info.get('source', '?')}) has no energy")
        rows.append((key[0], key[1], energy, float(mean[index[key]]), record.info.get("region", "")))
    if not rows:
        raise MLFFError("no labelled frames to write")
    level = (labels[0].info.get("provenance") or {}) if len(labels) else {}
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as handle:
        handle.write(f"# target: {level.get('method', '?')} {level.get('functional', '')}/{level.get('basis', '')}; "
                     f"reference: committee mean of {table.get('potential', '?')}; eV\n")
        writer = csv.writer(handle)
        writer.writerow(["step", "system", "target_energy_eV", "reference_energy_eV", "region"])
        for row in rows:
            writer.writerow([row[0], row[1], f"{row[2]:.8f}", f"{row[3]:.8f}", row[4]])
    return out


def _fep(log_w: np.ndarray, beta_delta: np.ndarray) -> tuple[float, float]:
    """(-ln <exp(-beta dE)>_w in kT, Kish effective sample size of the reweighted frames)."""
    a = log_w - log_w.max()
    b = a - beta_delta
    shift = b.max()
    value = -(np.log(np.exp(b - shift).sum()) + shift - np.log(np.exp(a).sum()))
    return float(value), _kish(b)


def endpoint_barrier(run, analysis, points, regions: dict, *, n_bootstraps: int = 200, seed: int = 0) -> dict:
    """The run's forward barrier corrected to the level of ``points`` (``SinglePoints``: E_label - E_model on
    frames of the run) by FEP in ``regions`` {"reactant": [lo, hi], "ts": [lo, hi]} (kT; see the module)."""
    from mlff.fes.levels import frames_of
    from mlff.fes.units import kT_eV

    if not analysis.barrier.found:
        raise MLFFError(f"endpoint_barrier: the run's profile has no barrier to correct ({analysis.barrier.no_barrier})")
    beta = 1.0 / kT_eV(run.temperature_K)
    cv, _ = frames_of(run, points)
    table = analysis.windows
    f_k = np.asarray(analysis.extra["f_k_kT"], np.float64)
    n_k = np.array([row["n_decorrelated"] for row in table], np.float64)
    centers = np.array([row["center"] for row in table], np.float64)
    kappas = np.array([row["kappa"] for row in table], np.float64)
    u = 0.5 * beta * kappas[None, :] * (cv[:, None] - centers[None, :]) ** 2  # [M, K] bias of each window, kT
    z = np.log(n_k)[None, :] + f_k[None, :] - u
    log_w = -(z.max(axis=1) + np.log(np.exp(z - z.max(axis=1, keepdims=True)).sum(axis=1)))  # unbiased weights
    beta_delta = beta * (points.delta_eV - points.delta_eV.mean())
    out, rng = {"regions": {}}, np.random.default_rng(seed)
    boot = {}
    for name in ("reactant", "ts"):
        if name not in regions:
            raise MLFFError(f"endpoint_barrier: regions need 'reactant' and 'ts', got {sorted(regions)}")
        lo, hi = regions[name]
        sel = np.nonzero((cv >= lo) & (cv <= hi))[0]
        if sel.size < 2:
            raise MLFFError(f"{sel.size} labelled frame(s) in the {name} region [{lo:.3f}, {hi:.3f}]; need at least 2")
        value, ess = _fep(log_w[sel], beta_delta[sel])
        out["regions"][name] = {"delta_A_kT": value, "frames": int(sel.size), "effective_sample_size": ess,
                                "range": [float(lo), float(hi)]}
        boot[name] = np.array([_fep(log_w[pick], beta_delta[pick])[0]
                               for pick in (rng.choice(sel, sel.size) for _ in range(n_bootstraps))])
    correction = out["regions"]["ts"]["delta_A_kT"] - out["regions"]["reactant"]["delta_A_kT"]
    model = analysis.barrier.values_kT["barrier_forward"]
    stat = analysis.barrier.errors_kT["barrier_forward"]
    spread = float(np.std(boot["ts"] - boot["reactant"], ddof=1)) if n_bootstraps > 1 else float("nan")
    out.update(barrier_model_kT=model, correction_kT=correction, correction_error_kT=spread,
               barrier_kT=model + correction, barrier_error_kT=float(np.hypot(stat, spread)),
               min_effective_sample_size=min(r["effective_sample_size"] for r in out["regions"].values()))
    return out
