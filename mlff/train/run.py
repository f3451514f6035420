"""``train(config)``: data -> E0s and scaling -> one trainer per committee member -> the potential and report."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mlff.errors import MLFFError
from mlff.models.config import model_config
from mlff.models.potential import Potential, _dtype
from mlff.signals import RESUMABLE, record_exit
from mlff.train.config import TrainConfig, check_inputs, train_config
from mlff.train.data import Records, build_graphs, check_species, load_records
from mlff.train.ddp import Dist, setup, teardown
from mlff.train.e0s import average_neighbors, fit_e0s, scale_shift
from mlff.train.loop import Trainer

__all__ = ["TrainResult", "train", "load_initial"]


@dataclass
class TrainResult:
    status: str  # "done" or "stopped" (a stop signal: resume with resume=True)
    run_dir: Path
    potential_dir: Path | None = None
    metrics: dict | None = None


def load_initial(path) -> Potential:
    """The model to fine-tune: a mace-torch ``.model`` file or an mlff potential directory.

    A ``.model`` file is a Python pickle: loading one runs code from it, so only load files you trust.
    """
    from mlff.models.store import load_potential

    path = Path(path)
    if path.is_dir():
        return load_potential(path)
    if not path.is_file():
        raise MLFFError(f"init_from: no model file or potential directory at {path}")
    import mlff.models._mace  # noqa: F401

    try:
        module = torch.load(path, map_location="cpu", weights_only=False)  # a pickle: trusted files only
    except Exception as err:
        raise MLFFError(f"init_from: {path} is not a readable mace-torch model ({type(err).__name__})") from None
    return Potential.from_mace_model(module, {"origin": f"fine-tuned from {path.name}"})


def _model_setup(config: TrainConfig, records: Records, initial: Potential | None):
    """The model config with E0s, scale/shift and avg_num_neighbors from the training data where asked."""
    if initial is not None:
        cfg = model_config(initial.config.to_dict())
        e0s = config.e0s or "model"
    else:
        cfg = model_config(dict(config.model))
        e0s = config.e0s or "fit"
    check_species(records.atoms, cfg.atomic_numbers)
    train = _target_train(records)
    atoms = [records.atoms[k] for k in train]
    energies = np.array([a.calc.results["energy"] for a in atoms])
    if e0s == "fit":
        cfg.E0s = fit_e0s(atoms, energies, cfg.atomic_numbers)
    elif isinstance(e0s, dict):
        cfg.E0s = dict(e0s)
    elif e0s not in ("model", "shift"):  # "shift": after the graphs are built (_shift_e0s)
        from mlff.train.e0s import isolated_atom_e0s

        cfg.E0s = isolated_atom_e0s(e0s)
    cfg = model_config(cfg.to_dict())
    if records.heads is not None:
        cfg = _with_heads(cfg, initial, records, e0s)
    if initial is None and config.scaling == "rms_forces":
        given = set(config.model)
        forces = np.concatenate([a.calc.results["forces"] for a in atoms])
        from mlff.models.config import _atomic_energies
        from ase.data import chemical_symbols

        e0 = dict(zip([chemical_symbols[z] for z in cfg.atomic_numbers], _atomic_energies(cfg)[0]))
        shift, scale = scale_shift(atoms, energies, forces, e0, cfg.atomic_numbers)
        if "atomic_inter_shift" not in given:
            cfg.atomic_inter_shift = shift
        if "atomic_inter_scale" not in given:
            cfg.atomic_inter_scale = scale
    return cfg


def _target_train(records: Records) -> np.ndarray:
    """The training records of the potential's own head (all of them without data.heads)."""
    train = np.unique(records.splits["train"])
    return train if records.heads is None else train[records.heads[train] == records.target_head]


def head_order(names) -> list[str]:
    """The model's heads for data.heads ``names``: the other heads in order of appearance, then the potential's
    own head (``names[0]``) last, where ``Potential`` looks for its evaluation head."""
    others = [h for h in dict.fromkeys(names) if h != names[0]]
    return others + [names[0]]


def _with_heads(cfg, initial: Potential, records: Records, e0s):
    """``cfg`` with the heads of data.heads: E0s and scale/shift of each head from the source model's head it
    starts from (mlff.models.heads), the potential's own head with the E0s this run chose (all but "model")."""
    from mlff.models.config import _atomic_energies
    from mlff.models.heads import source_heads_for

    heads = head_order([records.target_head] + records.heads.tolist())
    pick = source_heads_for(heads, initial.config.heads, initial.head)
    rows = _atomic_energies(initial.config)[pick]
    if e0s not in ("model", "shift"):
        rows[-1] = _atomic_energies(cfg)[0]
    n_src = len(initial.config.heads)
    scale = np.broadcast_to(np.atleast_1d(initial.config.atomic_inter_scale), n_src)[pick]
    shift = np.broadcast_to(np.atleast_1d(initial.config.atomic_inter_shift), n_src)[pick]
    cfg.heads, cfg.E0s = heads, rows.tolist()
    cfg.atomic_inter_scale, cfg.atomic_inter_shift = [float(x) for x in scale], [float(x) for x in shift]
    return model_config(cfg.to_dict())


def _shift_e0s(cfg, initial: Potential, graphs, train: np.ndarray, batch_size: int):
    """``cfg`` with the E0s of ``initial`` moved by the mean per-atom residual (E_ref - E_model) / N of the
    training records (the committee mean), the same for every element (e0s: shift)."""
    from ase.data import chemical_symbols

    from mlff.models.config import _atomic_energies
    from mlff.train.metrics import predict

    p = predict(initial, graphs, train, batch_size)
    per_atom = float(np.mean((p.energy_ref - p.energy) / p.n_atoms))
    rows = _atomic_energies(cfg)
    if len(rows) > 1:  # several heads: only the potential's own (the last) moves
        rows[-1] += per_atom
        cfg.E0s = rows.tolist()
    else:
        cfg.E0s = {chemical_symbols[z]: float(v) + per_atom for z, v in zip(cfg.atomic_numbers, rows[0])}
    return model_config(cfg.to_dict())


def _member(config: TrainConfig, cfg, initial: Potential | None, k: int, device) -> Potential:
    dtype = _dtype(config.dtype)
    if initial is None:
        return Potential.build(cfg, seed=config.seed + k, dtype=dtype).to(device)
    member = Potential.build(cfg, seed=config.seed + k, dtype=torch.float64).members[0]
    source = initial.members[k % initial.committee_size]
    e0_key = "atomic_energies_fn.atomic_energies"
    fresh_e0 = member.state_dict()[e0_key].clone()
    if list(cfg.heads) != list(initial.config.heads):  # data.heads: each head starts as its source head
        from mlff.models.heads import transfer_heads

        transfer_heads(source, initial.config.heads, initial.head, member, cfg.heads)
    else:
        member.load_state_dict(source.state_dict())
    with torch.no_grad():
        member.atomic_energies_fn.atomic_energies.copy_(fresh_e0)  # the E0s chosen for this run
    potential = Potential(cfg, [member.to(dtype)], {"origin": initial.metadata.get("origin", "fine-tuned")})
    if config.data.heads is not None:
        potential.head = cfg.heads[-1]  # data.heads[0], whatever the names (head_order puts it last)
    return potential.to(device)


def _train_indices(config: TrainConfig, records: Records, k: int) -> np.ndarray:
    train = np.sort(records.splits["train"])
    if records.repeat is not None:  # data.repeat: some datasets' records drawn several times per epoch
        train = np.repeat(train, records.repeat[train])
    if config.committee > 1 and config.bootstrap:
        rng = np.random.default_rng(config.seed + 7919 * (k + 1))
        return np.sort(rng.choice(train, size=len(train), replace=True))
    return train


def _check_run_dir(run_dir: Path, config: TrainConfig, resume: bool) -> None:
    saved = run_dir / "config.json"
    mine = {k: v for k, v in config.to_dict().items() if k not in ("out", "progress", "plots")}
    if resume:
        if not saved.is_file():
            raise MLFFError(f"nothing to resume in {run_dir} (no config.json); run without --resume")
        before = {k: v for k, v in _read_json(saved, "config").items() if k in mine}
        changed = sorted(k for k in mine if json.dumps(mine[k], sort_keys=True) != json.dumps(before.get(k), sort_keys=True))
        if changed:
            raise MLFFError(f"cannot resume {run_dir}: the config changed since the run started ({', '.join(changed)})")
    elif any(run_dir.glob("member_*/checkpoint.pt")):
        raise MLFFError(f"{run_dir} already holds a training run; pass --resume to continue it or choose another --out")


def _write_config(run_dir: Path, config: TrainConfig) -> None:
    import os

    from mlff.provenance import provenance

    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".config.json.{os.getpid()}"  # atomic: committee array tasks may write it at once
    tmp.write_text(json.dumps({"config": config.to_dict(), "provenance": provenance()}, indent=2) + "\n")
    os.replace(tmp, run_dir / "config.json")


def _members(config: TrainConfig, members) -> list[int]:
    if members is None:
        return list(range(config.committee))
    members = sorted({int(k) for k in members})
    bad = [k for k in members if not 0 <= k < config.committee]
    if bad:
        raise MLFFError(f"member {bad[0]} out of range: the committee has {config.committee} member(s), 0..{config.committee - 1}")
    return members


def train(config: TrainConfig | dict, *, resume: bool = False, on_step=None, members=None) -> TrainResult:
    """Train (or resume) the run described by ``config``; returns where the results are.

    Under ``torchrun`` every process calls this; rank 0 writes the files. ``members`` (committee indices)
    trains only those members, each resumed from its own checkpoint if it has one (e.g. one SLURM array
    task per member); the potential is written by a run of all members (``resume=True``) afterwards.
    """
    config = train_config(config)
    check_inputs(config)  # a missing dataset or model is refused before the run directory is touched
    if config.deterministic:  # CUDA scatter/index_add otherwise sum in a run-dependent order
        import os

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    dist = setup(config.device)
    try:
        result = _train(config, dist, resume, on_step, members)
        if result.status == "stopped" and dist.world > 1:  # torchrun stops (SIGTERM) the ranks still running as
            record_exit(RESUMABLE)  # soon as one exits: each records its resumable stop before any can exit
            dist.barrier()
        return result
    finally:
        teardown(dist)


def _locked(run_dir: Path, dist: Dist, members=None):
    """The run directory's writer lock, taken by rank 0 (the one writer); every rank fails if it is refused.
    A run of some committee members (array tasks) locks those members only: the others may be training."""
    from mlff.lock import WriterLock

    name, what = ".lock", f"training run {run_dir}"
    if members is not None:
        name = ".lock-member-" + "-".join(f"{k:02d}" for k in members)
        what = f"members {', '.join(map(str, members))} of training run {run_dir}"
    lock, refused = WriterLock(run_dir / name, what), None
    if dist.main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except MLFFError as err:
            refused = err
    if dist.any(refused is not None):
        raise refused or MLFFError(f"training run {run_dir} is being written by another process (see rank 0)")
    return lock


def _check_data(run_dir: Path, records: Records, resume: bool, dist: Dist) -> None:
    """data.json pins the content checksum of every dataset a run started with; a resume refuses changes."""
    saved = run_dir / "data.json"
    if resume and saved.is_file():
        before = _read_json(saved, "datasets")
        for old, new in zip(before, records.sources):
            if old["sha256"] != new["sha256"]:
                raise MLFFError(f"cannot resume {run_dir}: dataset {new['path']} changed since the run started "
                                f"(checksum {old['sha256'][:16]} then, {new['sha256'][:16]} now); restore it, or "
                                "train into a new --out")
        return
    if dist.main:
        tmp = saved.with_name(".data.json.tmp")  # whole or not at all: a kill while writing leaves no half file
        tmp.write_text(json.dumps({"datasets": records.sources}, indent=2) + "\n")
        tmp.replace(saved)


def _read_json(path: Path, key: str):
    """``key`` of a run's JSON file; a damaged file is one MLFFError naming it."""
    try:
        return json.loads(path.read_text())[key]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise MLFFError(f"{path} is damaged ({type(err).__name__}: {err}); it should hold {key!r}: restore it, or "
                        "train into a new --out") from None


def _train(config: TrainConfig, dist: Dist, resume: bool, on_step, members=None) -> TrainResult:
    run_dir = Path(config.out)
    chosen = _members(config, members)
    lock = _locked(run_dir, dist, None if members is None else chosen)
    try:
        return _train_locked(config, dist, resume, on_step, run_dir, members, chosen)
    finally:
        lock.release()


def _train_locked(config: TrainConfig, dist: Dist, resume: bool, on_step, run_dir: Path, members,
                  chosen) -> TrainResult:
    if members is None:
        _check_run_dir(run_dir, config, resume)
    else:  # some members (array tasks): others may be running; each chosen one resumes from its own checkpoint
        resume = (run_dir / "config.json").is_file()
        if resume:
            _check_run_dir(run_dir, config, True)
    if dist.main and not resume:
        _write_config(run_dir, config)
    dist.barrier()
    records = load_records(config.data)
    _check_data(run_dir, records, resume, dist)
    base, totals = None, records
    if config.base is not None:  # a residual model: train on what the frozen base leaves
        from mlff.models.store import load_potential

        base = load_potential(config.base, device=dist.device, dtype=config.dtype)
        records = residual_records(records, base, config.valid_batch_size)
    initial = load_initial(config.init_from) if config.init_from else None
    cfg = _model_setup(config, records, initial)
    graphs = build_graphs(records.atoms, cfg.r_max, device=dist.device, dtype=_dtype(config.dtype))
    if config.e0s == "shift":
        cfg = _shift_e0s(cfg, initial, graphs, _target_train(records), config.valid_batch_size)
    if initial is None and "avg_num_neighbors" not in config.model:
        cfg.avg_num_neighbors = average_neighbors(graphs, np.unique(records.splits["train"]))
    heads = None if records.heads is None else np.array([cfg.heads.index(h) for h in records.heads], np.int64)
    trained = []
    for k in chosen:
        potential = _member(config, cfg, initial, k, dist.device)
        trainer = Trainer(potential, graphs, _train_indices(config, records, k), records.splits.get("valid", []),
                          config, run_dir / f"member_{k:02d}", seed=config.seed + k, dist=dist, on_step=on_step,
                          progress=_progress(config, dist, k), heads=heads)
        if (resume or members is not None) and trainer.checkpoint_path.is_file():
            trainer.resume()
        status = trainer.run()
        if trainer.progress is not None:
            trainer.progress.close()
        if status == "stopped":
            return TrainResult("stopped", run_dir)
        trained.append(potential.members[0])
    if len(chosen) < config.committee:
        return TrainResult("done", run_dir)  # the potential is written once all members are trained
    potential = Potential(cfg, trained, {"origin": _origin(config)}, base=base, base_source=config.base)
    if config.data.heads is not None:
        potential.head = cfg.heads[-1]
    if not dist.main:
        return TrainResult("done", run_dir)
    from mlff.train.report import write_outputs

    if base is not None:  # the metrics and the card: the sum against the labels themselves
        records = totals
        graphs = build_graphs(records.atoms, potential.cutoff, device=dist.device, dtype=_dtype(config.dtype))

    potential_dir, metrics = write_outputs(potential, graphs, records, config, run_dir)
    return TrainResult("done", run_dir, potential_dir, metrics)


def residual_records(records: Records, base: Potential, batch_size: int = 16) -> Records:
    """``records`` with every label replaced by what ``base`` (its committee mean) leaves: E - E_base,
    F - F_base (and stress - stress_base where there is one): the targets of a residual model."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from mlff.models.graph import batch_atoms

    atoms = []
    for start in range(0, len(records.atoms), batch_size):
        chunk = records.atoms[start:start + batch_size]
        stress = any(a.calc.results.get("stress") is not None for a in chunk)
        out = base.evaluate(batch_atoms(chunk, base.cutoff, device=base.device, dtype=base.dtype), forces=True,
                            stress=stress)
        offset = 0
        for k, a in enumerate(chunk):
            n, results = len(a), dict(a.calc.results)
            copy = a.copy()
            results["energy"] = results["energy"] - float(out["energy"][k])
            results["forces"] = results["forces"] - out["forces"][offset:offset + n].double().cpu().numpy()
            if results.get("stress") is not None:
                from ase.stress import full_3x3_to_voigt_6_stress

                results["stress"] = results["stress"] - full_3x3_to_voigt_6_stress(
                    out["stress"][k].double().cpu().numpy())
            copy.calc = SinglePointCalculator(copy, **{key: v for key, v in results.items() if v is not None})
            atoms.append(copy)
            offset += n
    return dataclasses.replace(records, atoms=atoms)


def _origin(config: TrainConfig) -> str:
    what = f"committee of {config.committee}" if config.committee > 1 else "single model"
    start = f"fine-tuned from {config.init_from}" if config.init_from else "trained from scratch"
    if config.base:
        start += f", a residual model on the frozen base {config.base}"
    if config.init_from and Path(config.init_from).is_dir():  # the path may later hold other weights: pin these
        from mlff.models.store import weights_pins

        digest = weights_pins(config.init_from).get("potential_sha256")
        start += f" (weights sha256 {digest[:16]})" if digest else ""
    return f"mlff train: {what}, {start}, seed {config.seed}"


def _progress(config: TrainConfig, dist: Dist, k: int):
    if not (config.progress and dist.main):
        return None
    from mlff.train.report import EpochReporter

    return EpochReporter(f"member {k + 1}/{config.committee}")
