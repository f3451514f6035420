"""``mlff umbrella CONFIG.yaml``: a ladder of umbrella windows (one system per window, one batch), optionally
with Hamiltonian replica exchange and walls, or a well-tempered metaD run (``metad:`` instead of windows).

The run directory (``out``) holds what ``mlff.bias.io.read_biased_run`` reads, and the MD runner's files:
    bias.json       kind, CV, centres and springs, temperature, timestep, colvar_every, equilibration_steps,
                    terms, exchange, potential, config, provenance; at the end also per-window statistics
                    and exchange acceptance
    COLVAR          PLUMED format, every colvar_every steps: time (ps), step, CV per system, window per system
                    (umbrella), bias per system (kJ/mol)
    HILLS[.s]       metaD hills (PLUMED format; ``plumed sum_hills`` reads them)
    trajectory.h5   H5MD frames every md.trajectory_every steps, observables cv, window, bias_energy, physical_energy
    log.csv, checkpoint.pt (bias state included), run.json, starts.xyz (the start structure of each window)
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlff.config import from_dict, load_yaml
from mlff.errors import MLFFError

__all__ = ["UmbrellaConfig", "load_umbrella_config", "run_umbrella", "window_centers"]

XTB = "gfn2-xtb"
_MD_OWNED = ("structure", "potential", "replicas", "out", "steps")  # set by the umbrella config itself
_RESUMABLE = ("production_steps", "out")
METAD_CAPACITY = 4096  # default hills per set: fixed (not from the step count), so a resumed run may run longer


@dataclass
class UmbrellaConfig:
    structure: str  # a structure file, or "fdh-cluster:SIZE:STATE"
    potential: Any = None  # a potential directory / shipped name, "gfn2-xtb" (tblite, reference), or an untrained model config
    cv: Any = "xi"  # "xi" (from info["xi_atoms"]) or {kind: distance | difference | coordinate | combination, ...}
    centers_A: Any = None  # a list, or {start:, stop:, spacing:} / {start:, stop:, count:} (inclusive)
    spring_eV_per_A2: Any = 5.0  # one spring for every window, or one per window (PLUMED RESTRAINT KAPPA)
    exchange_every: int = 0  # steps between replica-exchange attempts (0: none)
    walls: list = field(default_factory=list)  # [{side: upper | lower, at:, kappa:, exp: 2}]
    metad: dict | None = None  # {sigma:, height_eV:, pace:, biasfactor:, shared: false, capacity: 4096}: metaD, no windows
    systems: int = 1  # metaD only: walkers (systems) in the batch
    starts: str = "pool"  # pool (nearest pool geometry per centre) | pull (moving restraint from structure) | structure
    pool: str | None = None  # geometry pool (mlff dataset) for starts: pool
    pull_steps: int = 2000  # starts: pull: steps of the moving restraint (all windows in one batch)
    equilibration_steps: int = 1000  # first steps of the run; their samples are left out by read_biased_run
    production_steps: int = 10000
    colvar_every: int = 10  # steps between COLVAR rows
    md: dict = field(default_factory=dict)  # MDConfig keys (engine, integrator, timestep_fs, temperature_K, device, ...)
    out: str = "out/umbrella"

    def __post_init__(self):
        for name in ("equilibration_steps", "production_steps", "pull_steps", "exchange_every"):
            if getattr(self, name) < 0:
                raise MLFFError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.colvar_every < 1:
            raise MLFFError(f"colvar_every must be >= 1, got {self.colvar_every}")
        if self.starts not in ("pool", "pull", "structure"):
            raise MLFFError(f"starts must be pool, pull or structure, got {self.starts!r}")
        owned = sorted(set(self.md) & set(_MD_OWNED))
        if owned:
            raise MLFFError(f"md: key {owned[0]!r} is set by the umbrella config itself (structure, potential, out, "
                            "production_steps + equilibration_steps, one system per window)")
        if self.metad is None and self.centers_A is None:
            raise MLFFError("give window centres (centers_A) for umbrella sampling, or a metad: section")
        if self.metad is not None and self.centers_A is not None:
            raise MLFFError("centers_A and metad are exclusive: one kind of bias per run")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_umbrella_config(source, **overrides) -> UmbrellaConfig:
    data = dict(source) if isinstance(source, dict) else load_yaml(source)
    data.update(overrides)
    return from_dict(UmbrellaConfig, data, "umbrella config" if isinstance(source, dict) else str(source))


def window_centers(spec) -> np.ndarray:
    """Centres [W] from a list or {start, stop, spacing | count} (both ends included)."""
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - {"start", "stop", "spacing", "count"})
        if unknown or "start" not in spec or "stop" not in spec or ("spacing" in spec) == ("count" in spec):
            raise MLFFError(f"centers_A: expected a list or {{start, stop, spacing}} or {{start, stop, count}}, got {spec}")
        start, stop = float(spec["start"]), float(spec["stop"])
        if "count" in spec:
            count = int(spec["count"])
            if count < 1 or (count == 1 and start != stop):
                raise MLFFError(f"centers_A: count {count} from {start} to {stop} gives no windows (need count >= 2)")
            return np.linspace(start, stop, count)
        spacing = float(spec["spacing"])
        if not spacing > 0 or stop < start:
            raise MLFFError(f"centers_A: the range {start} to {stop} with spacing {spacing} gives no windows "
                            "(need stop >= start and spacing > 0)")
        n = int(np.floor((stop - start) / spacing + 1e-9)) + 1
        return start + spacing * np.arange(n)
    centers = np.atleast_1d(np.asarray(spec, dtype=np.float64))
    if centers.ndim != 1 or len(centers) == 0 or not np.isfinite(centers).all():
        raise MLFFError(f"centers_A: expected a non-empty list of numbers, got {spec!r}")
    return centers


def _springs(spec, n: int) -> np.ndarray:
    springs = np.asarray(spec, dtype=np.float64).reshape(-1)
    if springs.size == 1:
        springs = np.repeat(springs, n)
    if springs.size != n:
        raise MLFFError(f"spring_eV_per_A2: give one spring or one per window ({n}), got {springs.size}")
    if not (springs > 0).all() or not np.isfinite(springs).all():
        raise MLFFError(f"spring_eV_per_A2 must be > 0, got {springs.tolist()}")
    return springs


def _md_config(config: UmbrellaConfig, replicas: int):
    from mlff.md.config import load_md_config

    md = {"integrator": "langevin", "trajectory_every": 100, **config.md}
    return load_md_config({**md, "structure": config.structure, "out": config.out, "replicas": replicas,
                           "steps": config.equilibration_steps + config.production_steps,
                           "potential": None if config.potential == XTB else config.potential})


def _potential_label(config: UmbrellaConfig) -> str:
    p = config.potential
    if isinstance(p, dict):
        return "UNTRAINED MACE (random weights): speed only, no chemistry"
    if p == XTB:
        return "GFN2-xTB (tblite, ASE calculator per window on the host): the reference level"
    from mlff.models.store import potential_level

    level = potential_level(p) if isinstance(p, str) else None
    return f"trained potential {p}" + (f" ({level})" if level else "")


def make_force_model(config: UmbrellaConfig, md_config, atoms):
    """The physical force model (or potential) the windows run with; says loudly which one it is."""
    from mlff.md.runner import make_potential

    p = config.potential
    if p is None:
        raise MLFFError("potential: name a potential directory or shipped name (e.g. fdh-cluster-small-xtb), "
                        f"'{XTB}' for the xTB reference, or a model config mapping (untrained, speed only)")
    print(f"mlff umbrella: POTENTIAL = {_potential_label(config)}", file=sys.stderr)
    if p == XTB:
        from mlff.data.sampling import xtb_calculator
        from mlff.md.ase_model import AseCalculatorModel

        return None, AseCalculatorModel(xtb_calculator, name="GFN2-xTB")
    if isinstance(p, str):
        from mlff.models.store import resolve_potential_path

        if not (resolve_potential_path(p) / "potential.json").is_file():
            raise MLFFError(f"potential {p!r} not found (no {resolve_potential_path(p)}/potential.json): train it "
                            f"first (mlff train), or set potential: {XTB} for the xTB reference, or a model config "
                            "mapping for an untrained speed test")
    return make_potential(md_config, atoms), None


def build_biases(config: UmbrellaConfig, infos: list[dict], temperature_K: float, seed: int):
    """The run's Biases and its kind ("umbrella" or "metad")."""
    from mlff.bias.cv import cv_from_spec
    from mlff.bias.exchange import ReplicaExchange
    from mlff.bias.metad import MetaD
    from mlff.bias.model import Biases
    from mlff.bias.restraint import HarmonicRestraint, Wall

    cv = cv_from_spec(config.cv, infos)
    walls = []
    for wall in config.walls:
        wall = dict(wall)
        unknown = sorted(set(wall) - {"side", "at", "kappa", "exp", "eps"})
        if unknown or "at" not in wall or "kappa" not in wall:
            raise MLFFError(f"walls: each wall needs at and kappa (side, exp, eps optional); got {wall}")
        walls.append(Wall(**wall))
    _check_walls(walls)
    if config.metad is not None:
        allowed = {"sigma", "height_eV", "pace", "biasfactor", "shared", "capacity"}
        unknown = sorted(set(config.metad) - allowed)
        if unknown:
            raise MLFFError(f"metad: unknown key {unknown[0]!r}; expected one of {', '.join(sorted(allowed))}")
        metad = {"capacity": METAD_CAPACITY, **config.metad}
        return Biases(cv, [MetaD(**metad, temperature_K=temperature_K, n_systems=len(infos)), *walls]), "metad"
    centers = window_centers(config.centers_A)
    _check_ladder(centers, config.exchange_every, walls)
    restraint = HarmonicRestraint(centers, _springs(config.spring_eV_per_A2, len(centers)))
    exchange = None
    if config.exchange_every:
        exchange = ReplicaExchange(restraint, every=config.exchange_every, temperature_K=temperature_K, seed=seed)
    return Biases(cv, [restraint, *walls], exchange), "umbrella"


def _warn(message: str) -> None:
    print(f"mlff umbrella: WARNING: {message}", file=sys.stderr)


def _check_walls(walls) -> None:
    """An upper wall below a lower wall leaves no CV value free of both: refused."""
    uppers = [(k, w.at) for k, w in enumerate(walls) if w.side == "upper"]
    lowers = [(k, w.at) for k, w in enumerate(walls) if w.side == "lower"]
    for k, at in uppers:
        for j, low in lowers:
            if at < low:
                raise MLFFError(f"walls[{k}]: the upper wall at {at:g} lies below the lower wall walls[{j}] at "
                                f"{low:g}: no CV value is free of both; an upper wall bounds the CV from above")


def _check_ladder(centers: np.ndarray, exchange_every: int, walls) -> None:
    """Refuse window ladders that run but cannot mean what they say; warn where a user could mean it.

    Duplicate centres: refused. Centres out of order: refused with replica exchange (it swaps windows k and k+1
    of the list, which must be neighbours along the CV); without exchange the windows are independent, so they
    are kept as given (window k: the k-th centre and spring) with a warning. A wall beyond every centre:
    refused; beyond some of them: a warning naming those windows."""
    order = np.argsort(centers, kind="stable")
    scale = max(1.0, float(np.abs(centers).max()))
    same = np.flatnonzero(np.diff(centers[order]) <= 1e-9 * scale)
    if len(same):
        i, j = sorted((int(order[same[0]]), int(order[same[0] + 1])))
        raise MLFFError(f"centers_A: windows {i} and {j} have the same centre {centers[i]:g}; give every window "
                        "its own centre (a duplicate samples one window twice and leaves a gap elsewhere)")
    steps = np.sign(np.diff(centers))
    if len(steps) and (steps != steps[0]).any():
        k = int(np.flatnonzero(steps != steps[0])[0])  # >= 1: windows k-1, k, k+1 turn back
        where = ", ".join(f"window {w} at {centers[w]:g}" for w in (k - 1, k, k + 1))
        if exchange_every:
            raise MLFFError(f"centers_A: with exchange_every the centres must be in order (exchange swaps windows k "
                            f"and k+1 of the list, so they must be neighbours along the CV); {where}; sort "
                            "centers_A (and a per-window spring_eV_per_A2 with it)")
        _warn(f"centers_A are not in order ({where}); kept as given (window k has the k-th centre and spring; "
              "the analysis orders windows by centre); sort them if that was a mistake")
    for k, wall in enumerate(walls):
        beyond = centers > wall.at if wall.side == "upper" else centers < wall.at
        side = "above" if wall.side == "upper" else "below"
        if beyond.all():
            raise MLFFError(f"walls[{k}]: every window centre ({centers.min():g} to {centers.max():g}) lies {side} "
                            f"the {wall.side} wall at {wall.at:g}, inside the wall: each window would sample the "
                            f"wall, not its centre; put an {wall.side} wall {side} the centres it bounds")
        if beyond.any():
            _warn(f"walls[{k}]: windows {np.flatnonzero(beyond).tolist()} have centres {side} the {wall.side} wall at "
                  f"{wall.at:g}: they will sample the wall, not their centres")


# -- start structures -------------------------------------------------------------------------------------
def _cv_of(cv_spec, atoms_list) -> np.ndarray:
    """The configured CV of each structure [len] (one batch, no gradients)."""
    import torch

    from mlff.bias.cv import cv_from_spec

    cv = cv_from_spec(cv_spec, [a.info for a in atoms_list]).bind([len(a) for a in atoms_list])
    positions = torch.as_tensor(np.concatenate([a.positions for a in atoms_list]), dtype=torch.float64)
    return cv(positions).numpy()


def pool_starts(structure, pool: str, centers: np.ndarray, cv_spec) -> tuple[list, np.ndarray]:
    """For each centre the pool geometry whose CV is nearest (positions only; the structure's atoms and info)."""
    from mlff.data.store import Dataset

    path = Path(pool)
    if not path.is_file():
        raise MLFFError(f"pool: {path} does not exist (starts: pool needs a geometry pool, e.g. data/fdh-cluster/pool_small.h5)")
    frames = [f for f in Dataset(path).read()
              if len(f) == len(structure) and (f.numbers == structure.numbers).all()]
    if not frames:
        raise MLFFError(f"pool {path} has no geometry with the atoms of the structure ({structure.get_chemical_formula()})")
    for f in frames:
        f.info = dict(structure.info)
    values = _cv_of(cv_spec, frames)
    picks = [int(np.argmin(np.abs(values - c))) for c in centers]
    starts = []
    for k in picks:
        atoms = structure.copy()
        atoms.positions = frames[k].positions
        starts.append(atoms)
    return starts, values[picks]


def pull_starts(structure, centers, springs, md_config, potential, model, cv_spec, steps: int) -> tuple[list, np.ndarray]:
    """Moving restraints (PLUMED MOVINGRESTRAINT): every window starts at ``structure``; its centre moves linearly
    from the structure's CV to the window's centre over 80% of ``steps`` and stays there; all windows in one batch.
    Returns the last positions (and velocities) of each window."""
    import torch

    from mlff.bias.cv import cv_from_spec
    from mlff.bias.model import Biases
    from mlff.bias.restraint import HarmonicRestraint
    from mlff.md.engines import BatchEngine
    from mlff.md.state import state_to_atoms

    n = len(centers)
    engine = BatchEngine(md_config, structure, potential, model=model, structures=[structure] * n)
    s0 = float(_cv_of(cv_spec, [structure])[0])
    restraint = HarmonicRestraint(np.full(n, s0), springs)
    from mlff.bias.engine import BiasedEngine

    biased = BiasedEngine(engine, Biases(cv_from_spec(cv_spec, [structure.info] * n), [restraint]))
    target = torch.as_tensor(centers, dtype=restraint.centers.dtype, device=restraint.centers.device)
    biased.start()
    ramp = max(1, int(0.8 * steps))
    for k in range(steps):
        restraint.centers.copy_(s0 + (target - s0) * min(1.0, (k + 1) / ramp))
        engine.model.refresh(engine.state)
        biased.step()
    values = biased.observables()["cv"].cpu().numpy()
    starts = []
    for atoms in state_to_atoms(engine.state):
        atoms.calc = None
        atoms.info = dict(structure.info)
        starts.append(atoms)
    return starts, values


# -- the run ------------------------------------------------------------------------------------------------
_RUN_FILES = ("bias.json", "checkpoint.pt", "trajectory.h5", "COLVAR", "starts.xyz")  # a fresh run refuses these


@dataclass
class _Plan:
    """What a checked config resolves to, before anything is written."""

    structure: Any
    md_config: Any
    potential: Any
    model: Any
    pins: dict
    biases: Any
    kind: str


def _plan(config: UmbrellaConfig, structure, model) -> _Plan:
    """Check the whole config (centres, springs, walls, CV, MD keys, potential); writes nothing."""
    from mlff.md.config import read_structure
    from mlff.md.runner import potential_pins

    structure = structure if structure is not None else read_structure(config.structure)
    n = config.systems if config.metad is not None else len(window_centers(config.centers_A))
    md_config = _md_config(config, n)
    biases, kind = build_biases(config, [structure.info] * n, md_config.temperature_K, md_config.seed)
    if kind == "umbrella" and config.starts == "pool" and config.pool is None:
        raise MLFFError("starts: pool needs pool: a geometry pool file (e.g. data/fdh-cluster/pool_small.h5)")
    potential, pins = None, {}
    if model is None:
        potential, model = make_force_model(config, md_config, structure)
        pins = potential_pins(md_config)  # the weights the windows run, in run.json and checked on --resume
    return _Plan(structure, md_config, potential, model, pins, biases, kind)


def _check_resume(out: Path, config: UmbrellaConfig) -> None:
    from mlff.bias.io import BIAS_JSON, read_bias_json

    path = out / BIAS_JSON
    if not path.is_file():
        raise MLFFError(f"no {path} to resume from: start the run without --resume")
    saved = read_bias_json(path, keys=("config",))["config"]
    current = json.loads(json.dumps(config.to_dict(), default=str))
    for key in sorted(set(saved) | set(current)):
        if key not in _RESUMABLE and saved.get(key) != current.get(key):
            raise MLFFError(f"{path} was written with a different umbrella config (key {key!r} differs); only "
                            f"{' and '.join(_RESUMABLE)} may change on --resume")


def _continues(out: Path, config: UmbrellaConfig, resume: bool) -> bool:
    """Whether the run continues from its checkpoint (under the lock: the directory is ours to judge)."""
    if not resume:
        existing = [out / name for name in _RUN_FILES if (out / name).exists()]
        if existing:
            raise MLFFError(f"{existing[0]} exists: continue that run with --resume, or choose another out directory "
                            "(nothing was written)")
        return False
    _check_resume(out, config)
    if (out / "checkpoint.pt").is_file():
        return True
    print(f"mlff umbrella: note: {out} holds no checkpoint (the run was stopped before writing one): starting it "
          "again from step 0", file=sys.stderr)
    return False


def _starts(config: UmbrellaConfig, plan: _Plan, n: int) -> tuple[list, np.ndarray]:
    structure, restraint = plan.structure, plan.biases.restraint
    if plan.kind == "metad" or config.starts == "structure":
        return [structure.copy() for _ in range(n)], _cv_of(config.cv, [structure] * n)
    if config.starts == "pool":
        return pool_starts(structure, config.pool, restraint.centers.cpu().numpy(), config.cv)
    return pull_starts(structure, restraint.centers.cpu().numpy(), restraint.kappas.cpu().numpy(), plan.md_config,
                       plan.potential, plan.model, config.cv, config.pull_steps)


def _read_starts(out: Path) -> list:
    from ase.io import read

    path = out / "starts.xyz"
    try:
        return read(path, ":", format="extxyz")
    except FileNotFoundError:
        raise MLFFError(f"no {path} to resume from: the run directory is incomplete; start a new run") from None
    except Exception as err:  # noqa: BLE001 - any unreadable file is one user error
        raise MLFFError(f"{path} is not readable ({type(err).__name__}: {err}): damaged; start a new run") from None


def _write_starts(out: Path, starts: list) -> None:
    from ase.io import write

    tmp = out / "starts.xyz.tmp"
    write(tmp, [a.copy() for a in starts], format="extxyz")
    tmp.replace(out / "starts.xyz")


def _meta(config, biases, kind, md_config, engine, start_cv) -> dict:
    from mlff.provenance import provenance

    restraint = biases.restraint
    metads = [t for t in biases.terms if type(t).__name__ == "MetaD"]
    return {"kind": kind, "temperature_K": md_config.temperature_K, "timestep_fs": md_config.timestep_fs,
            "n_systems": engine.n_systems, "beads": md_config.beads, "cv": biases.cv.spec(),
            "centers": [] if restraint is None else restraint.centers.tolist(),
            "kappas": [] if restraint is None else restraint.kappas.tolist(),
            "colvar_every": config.colvar_every, "equilibration_steps": config.equilibration_steps,
            "terms": [t.spec() for t in biases.terms],
            "exchange": None if biases.exchange is None else biases.exchange.spec(),
            "hills_files": engine.hills_files(), "shared_hills": bool(metads and metads[0].shared),
            "start_cv": [float(v) for v in start_cv], "potential": _potential_label(config),
            "units": {"COLVAR": "time ps, CV in its unit, bias kJ/mol", "HILLS": "time ps, height kJ/mol (PLUMED)"},
            "config": json.loads(json.dumps(config.to_dict(), default=str)), "md_config": md_config.to_dict(),
            "provenance": provenance()}


def _window_stats(out: Path, biases) -> list[dict]:
    from mlff.bias.io import read_biased_run

    run = read_biased_run(out)
    rates = biases.exchange.acceptance() if biases.exchange is not None else []
    rows = []
    for w in range(max(len(run.centers), 1) if run.kind == "umbrella" else run.n_systems):
        samples = run.samples_of_window(w) if run.kind == "umbrella" else run.cv[:, w]
        row = {"window": w, "samples": int(len(samples)),
               "mean_cv": float(samples.mean()) if len(samples) else None,
               "std_cv": float(samples.std()) if len(samples) else None}
        if run.kind == "umbrella":
            row.update(center=float(run.centers[w]), kappa=float(run.kappas[w]))
            if w < len(rates):
                row["exchange_acceptance_to_next"] = rates[w]
        rows.append(row)
    return rows


def run_umbrella(config: UmbrellaConfig | dict | str | Path, *, resume: bool = False, structure=None, model=None,
                 show_progress: bool | None = None) -> dict:
    """Run (or resume) the biased windows of ``config``; returns the MD summary plus per-window statistics.
    ``structure`` / ``model`` replace what the config names (tests: toy models). The whole config is checked
    and the run directory's lock taken before anything is written into it: a run refused (a live or finished
    run in ``out``, a bad key) leaves the directory as it was."""
    from mlff.lock import WriterLock

    if not isinstance(config, UmbrellaConfig):
        config = load_umbrella_config(config)
    plan = _plan(config, structure, model)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    with WriterLock(out / ".lock", f"umbrella run {out}"):  # the lock run_md takes (re-entrant)
        return _run_locked(config, plan, out, resume, show_progress)


def _run_locked(config: UmbrellaConfig, plan: _Plan, out: Path, resume: bool, show_progress) -> dict:
    from mlff.bias.engine import BiasedEngine
    from mlff.bias.io import read_bias_json, write_bias_json
    from mlff.md.engines import AseEngine, BatchEngine
    from mlff.md.runner import FILES, run_md

    restart = _continues(out, config, resume)
    n, md_config, biases = plan.md_config.replicas, plan.md_config, plan.biases
    if restart:
        starts, start_cv = _read_starts(out), read_bias_json(out).get("start_cv", [])
    else:
        starts, start_cv = _starts(config, plan, n)
    for atoms in starts:
        atoms.info = dict(plan.structure.info)
    if md_config.engine == "ase":
        calculator = plan.model.factory(starts[0]) if hasattr(plan.model, "factory") else None
        engine = AseEngine(md_config, starts[0], plan.potential, calculator=calculator)
    else:
        engine = BatchEngine(md_config, plan.structure, plan.potential, model=plan.model, structures=starts)
    biased = BiasedEngine(engine, biases, out=out, colvar_every=config.colvar_every)
    biased.report_progress = show_progress is not False
    if not restart:
        for name in biased.hills_files():  # a start again (no checkpoint): the last attempt's hills are void
            (out / name).unlink(missing_ok=True)
        _write_starts(out, starts)
        write_bias_json(out / "bias.json", _meta(config, biases, plan.kind, md_config, biased, start_cv))
    # resume=True also when a run stopped before its first checkpoint left MD outputs: run_md starts it again
    md_resume = restart or any((out / FILES[k]).exists() for k in ("trajectory", "log", "run", "stopped"))
    summary = run_md(md_config, resume=md_resume, engine=biased, show_progress=show_progress, pins=plan.pins)
    meta = read_bias_json(out)
    meta["windows"] = _window_stats(out, biases)
    meta["status"] = {"md": summary["status"], "step": summary["step"]}
    write_bias_json(out / "bias.json", meta)
    return {**summary, "kind": plan.kind, "windows": meta["windows"]}
