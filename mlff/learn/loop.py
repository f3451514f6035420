"""``run_learning(config, resume=...)``: the active-learning loop, one run directory, a state record per iteration.

Per iteration ``iter_NNN`` the stages explore -> select -> label -> calibrate -> retrain -> report run in
order; each is marked done in ``iter_NNN/state.json`` only after its outputs are in place (written
atomically), so a kill -9 anywhere leaves a run that ``resume=True`` continues at the stage it was in:
explore continues its MD from the checkpoint, label skips what is labelled, retrain resumes training from
its checkpoints, select / calibrate / report are recomputed from their (unchanged) inputs.

SIGTERM / SIGUSR1 (a scheduler's stop), or a label stage that hits ``label.time_limit_s``, end the run with
status "interrupted" (the CLI exits 75: requeue and ``--resume``). For tests, ``MLFF_LEARN_KILL_AFTER=ITER:STAGE``
makes the process SIGKILL itself once that stage's outputs are written, before the stage is marked done
(``ITER:STAGE:TERM``: SIGTERM, which ends the run "interrupted" once the stage is marked).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from mlff.errors import MLFFError
from mlff.learn.config import LearnConfig, learn_config, load_learn_config
from mlff.learn.state import STAGES, IterationState, read_json, write_dataset, write_json

__all__ = ["run_learning", "labels_spent"]

_RESUMABLE_KEYS = ("stop", "label", "progress", "out")  # may change on --resume
# may change on --resume too, for the stages not yet begun: a campaign steers its exploration between iterations
# (a stiffer umbrella spring, another per-iteration budget); a stage part-way keeps the settings it began with
_STEERING_KEYS = ("explore", "select")


def labels_spent(path: Path) -> int:
    """Labels paid for so far: records plus recorded failures of the run's labels dataset."""
    from mlff.data.store import Dataset

    if not path.is_file():
        return 0
    ds = Dataset(path)
    return len(ds) + ds.count("failures")


def _device(config: LearnConfig) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if config.device == "auto" else config.device


def _load(ctx: dict, path: str):
    """The potential at ``path`` (kept for the next stage that asks: building MACE modules takes seconds)."""
    from mlff.models.store import load_potential

    cache = ctx.setdefault("potentials", {})
    if path not in cache:
        cache.clear()
        cache[path] = load_potential(path, device=_device(ctx["config"]))
    return cache[path]


def _kill_hook(iteration: int, stage: str) -> None:
    """Tests: ``MLFF_LEARN_KILL_AFTER=ITER:STAGE`` sends SIGKILL (``ITER:STAGE:TERM``: SIGTERM) to this process."""
    want = os.environ.get("MLFF_LEARN_KILL_AFTER", "")
    if want == f"{iteration}:{stage}":
        os.kill(os.getpid(), signal.SIGKILL)
    if want == f"{iteration}:{stage}:TERM":
        os.kill(os.getpid(), signal.SIGTERM)


# -- stages -------------------------------------------------------------------------------------------------
def _select(ctx: dict, state: IterationState) -> dict:
    from mlff.data.records import geometry_hash
    from mlff.data.store import Dataset
    from mlff.learn.retrain import SPLIT_KEY
    from mlff.learn.select import score_frames, select_frames

    config, it_dir = ctx["config"], state.dir
    c = config.select
    candidates, known = Dataset(it_dir / "candidates.h5").read(), _labelled_hashes(ctx)
    offered = [a for a in candidates if geometry_hash(a) not in known]  # a restarted campaign never pays twice
    already = len(candidates) - len(offered)
    candidates = offered
    potential = _load(ctx, state.potential)
    slope = ctx["slope"]
    budget = max(0, min(c.per_iteration, config.stop.total_labels - labels_spent(ctx["labels"])))
    scores = score_frames(potential, candidates, descriptor=c.descriptor) if candidates else None
    labelled = None
    if ctx["labels"].is_file() and len(Dataset(ctx["labels"])):
        labelled = score_frames(potential, Dataset(ctx["labels"]).read(), descriptor=c.descriptor).descriptors
    raw = scores.spread_eV_A if scores is not None else np.zeros(0)
    xi = np.array([float(a.info.get("xi", np.nan)) for a in candidates])
    picked = select_frames(slope * raw, xi, scores.descriptors if scores is not None else np.zeros((0, 0)),
                           window=tuple(c.trust_window_eV_A), xi_bin_A=c.xi_bin_A, max_per_bin=c.max_per_bin,
                           budget=budget, labelled=labelled, fill_from_above=c.fill_from_above)
    selected = []
    for j, k in enumerate(picked["chosen"]):
        atoms = candidates[k]
        atoms.calc = None
        valid = c.valid_every and (j + 1) % c.valid_every == 0
        atoms.info.update(learn_spread_raw_eV_A=float(raw[k]), learn_spread_eV_A=float(slope * raw[k]),
                          **{SPLIT_KEY: "valid" if valid else "train"})
        selected.append(atoms)
    write_dataset(it_dir / "selected.h5", selected, description=f"mlff learn iteration {state.data['iteration']}: "
                  "selected for labelling")
    write_json(it_dir / "select.json", {"slope": slope, "budget": budget, **picked, "spread_raw_eV_A": raw,
                                        "xi_A": xi})
    return {"status": "done", "slope": slope, "budget": budget, "already_labelled": already,
            **{k: v for k, v in picked.items()}}


def _labelled_hashes(ctx: dict) -> set:
    """Geometry hashes already labelled: the run's labels (records and failures) and the replay dataset's records."""
    from mlff.data.store import Dataset

    known = set()
    if ctx["labels"].is_file():
        ds = Dataset(ctx["labels"])
        known |= set(ds.column("geometry_hash")) | set(ds.column("geometry_hash", "failures"))
    replay = ctx["config"].retrain.replay
    if replay is not None and Path(replay).is_file():
        known |= set(Dataset(replay).column("geometry_hash"))
    return known


def _external(ctx: dict, state: IterationState, structures: list) -> dict | None:
    """External labels (array jobs): None once ``labels_in.h5`` covers every selected geometry (then they are
    imported into the run's labels); else the stage waits, with ``label.yaml`` written for ``mlff slurm label``."""
    import yaml

    from mlff.data.queue import import_labels
    from mlff.data.records import geometry_hash
    from mlff.data.store import Dataset

    config, inbox = ctx["config"], state.dir / "labels_in.h5"
    done = set()
    if inbox.is_file():
        ds = Dataset(inbox)
        done = set(ds.column("geometry_hash")) | set(ds.column("geometry_hash", "failures"))
    missing = sum(geometry_hash(s) not in done for s in structures)
    if missing:
        job = {"pool": str((state.dir / "selected.h5").resolve()), "out": str(inbox.resolve()),
               "labeler": dict(config.label.oracle), "shards": config.label.shards,
               "checkpoint_every": config.label.checkpoint_every, "run_dir": str((state.dir / "label-run").resolve())}
        path = state.dir / "label.yaml"
        path.write_text(yaml.safe_dump(job, sort_keys=False))
        return {"status": "awaiting_labels", "missing": missing, "label_config": str(path)}
    labels = Dataset(ctx["labels"]) if ctx["labels"].is_file() else Dataset.create(ctx["labels"])
    ds = Dataset(inbox)
    with labels.writer_lock():
        import_labels(labels, ds.read(), calibration=ctx["calibration"])
        known = set(labels.column("geometry_hash", "failures"))
        failures = [f for f in ds.read(table="failures") if geometry_hash(f) not in known]
        labels.append(failures, table="failures", where=f"failures of {inbox}", require=())
    return None


def _label(ctx: dict, state: IterationState) -> dict:
    from mlff.data.label import label
    from mlff.data.store import Dataset

    config, iteration = ctx["config"], state.data["iteration"]
    structures = Dataset(state.dir / "selected.h5").read()
    if config.label.external:
        waiting = _external(ctx, state, structures)
        if waiting is not None:
            return waiting
    options = dict(checkpoint_every=config.label.checkpoint_every, progress=config.progress,
                   time_limit_s=config.label.time_limit_s, description="mlff learn: labels of the oracle")
    if config.label.workers > 1:
        from mlff.data.workers import label_with_workers

        summary = label_with_workers(structures, dict(config.label.oracle), ctx["labels"], workers=config.label.workers,
                                     calibration=config.label.calibration, **options)
    else:
        summary = label(structures, ctx["labeler"], ctx["labels"], calibration=ctx["calibration"], **options)
    this_run = {"labelled": summary.labelled, "failed": summary.failed, "skipped": summary.skipped,
                "remaining": summary.remaining}
    if summary.remaining or summary.interrupted:
        return {"status": "interrupted", "this_run": this_run, "why": summary.interrupted or "label.time_limit_s reached"}
    ds = Dataset(ctx["labels"])
    mine = {table: sum(info.get("learn_iteration") == iteration for info in ds.infos(table))
            for table in ("records", "failures")}
    reasons = [info.get("provenance", {}).get("failure_reason", "") for info in ds.infos("failures")
               if info.get("learn_iteration") == iteration]
    return {"status": "done", "labelled": mine["records"], "failed": mine["failures"], "failure_reasons": reasons,
            "labels_spent": labels_spent(ctx["labels"]), "this_run": this_run}


def _calibrate(ctx: dict, state: IterationState) -> dict:
    from mlff.learn.calibrate import calibrate

    config = ctx["config"]
    fit = calibrate(_load(ctx, state.potential), ctx["labels"], state.data["iteration"], ctx["slope"],
                    config.select.descriptor)
    write_json(state.dir / "calibration.json", fit)
    return {"status": "done", **fit}


def _retrain(ctx: dict, state: IterationState) -> dict:
    from mlff.data.store import Dataset
    from mlff.learn.retrain import retrain

    if not ctx["labels"].is_file() or len(Dataset(ctx["labels"])) == 0:
        return {"status": "done", "potential": state.potential, "note": "no labels yet: committee kept"}
    return retrain(ctx["config"], state.potential, ctx["labels"], ctx["replay"], state.dir)


def _report(ctx: dict, state: IterationState) -> dict:
    from mlff.learn.report import profile_of, stop_reason, test_errors, write_plot

    config = ctx["config"]
    potential = state.get("retrain")["potential"]
    select = state.get("select")
    report = {"iteration": state.data["iteration"], "potential": potential, "potential_explored": state.potential,
              "labels_spent": labels_spent(ctx["labels"]), "labelled_this_iteration": state.get("label")["labelled"],
              "failed_this_iteration": state.get("label")["failed"], "candidates": select["candidates"],
              "rejected_unphysical": state.get("explore").get("rejected_unphysical", 0),
              "uncertain": select["uncertain"], "in_window": select["in_window"],
              "above_window": select["above_window"], "per_bin": select["per_bin"],
              "calibration": {k: v for k, v in state.get("calibrate").items() if k != "status"},
              "test": test_errors(_load(ctx, potential), config.test.path, config.test.regions_A,
                                  config.test.tag),
              "profile": profile_of(config, state.dir / "explore" / "umbrella")}
    report["stop"] = stop_reason(config, report, ctx["previous_report"])
    write_json(state.dir / "report.json", report)
    write_plot(ctx["reports"] + [report], state.dir / "report.png")
    return {"status": "done", **report}


def _explore(ctx: dict, state: IterationState) -> dict:
    from mlff.learn.explore import explore

    return explore(ctx["config"], state.potential, state.dir, state.data["iteration"])


_RUN = {"explore": _explore, "select": _select, "label": _label, "calibrate": _calibrate, "retrain": _retrain,
        "report": _report}


# -- the run ------------------------------------------------------------------------------------------------
def _nothing_begun(out: Path) -> str:
    """A hint for a run directory that holds learn.json and nothing else (a run refused after writing it, by an
    mlff that checked its config late): it may be started afresh. "" when the run has begun."""
    if any(p.name not in ("learn.json", ".lock") for p in out.iterdir()):
        return ""
    return f" (it has begun nothing: delete {out / 'learn.json'} to start it afresh with another config)"


def _check_run(out: Path, config: LearnConfig, resume: bool, *, write: bool = True) -> None:
    """Refuse a second run in ``out`` and a resume with a changed config; with ``write``, record learn.json (a new
    run) or the steering of explore/select (a resume). ``write=False`` only reads: the checks before ``out`` is
    created or locked."""
    from mlff.provenance import provenance

    path = out / "learn.json"
    mine = json.loads(json.dumps(config.to_dict(), default=str))
    if not resume:
        if path.is_file():
            raise MLFFError(f"{out} already holds a learning run; pass --resume to continue it, or choose another out"
                            + _nothing_begun(out))
        if write:
            write_json(path, {"config": mine, "provenance": provenance()})
        return
    if not path.is_file():
        raise MLFFError(f"nothing to resume in {out} (no learn.json); start the run without --resume")
    saved = read_json(path)["config"]
    changed = sorted(k for k in set(saved) | set(mine)
                     if k not in _RESUMABLE_KEYS + _STEERING_KEYS and saved.get(k) != mine.get(k))
    if changed:
        raise MLFFError(f"cannot resume {out}: the config changed since the run started ({', '.join(changed)}); only "
                        f"{', '.join(_RESUMABLE_KEYS + _STEERING_KEYS)} may change: resume with the settings in "
                        f"{path}, or start a new run in another out" + _nothing_begun(out))
    steered = [k for k in _STEERING_KEYS if saved.get(k) != mine.get(k)]
    point = _steering_point(out, steered) if steered else None  # refuses an exploration part-way
    if steered and write:
        record = read_json(path)
        record["config"] = {**saved, **{k: mine.get(k) for k in steered}}
        record.setdefault("steering", []).append(
            {"keys": steered, "from": point, "before": {k: saved.get(k) for k in steered}})
        write_json(path, record)


def _steering_point(out: Path, keys: list[str]) -> dict:
    """Where changed ``keys`` (stages of their own name) take effect: the first iteration whose stage has not
    begun. A stage part-way (begun, not done) cannot change settings under its feet."""
    iterations = sorted(int(d.name[5:]) for d in out.glob("iter_[0-9][0-9][0-9]") if (d / "state.json").is_file())
    if not iterations:
        return {key: 0 for key in keys}
    last = iterations[-1]
    done = read_json(out / f"iter_{last:03d}" / "state.json").get("done", {})
    point = {}
    for key in keys:
        if key in done:
            point[key] = last + 1
        elif key == "explore" and (out / f"iter_{last:03d}" / "explore").exists():
            raise MLFFError(f"cannot change explore on resume: iteration {last}'s exploration is part-way "
                            f"({out / f'iter_{last:03d}' / 'explore'}); resume with the settings it began with, "
                            "and change them once it is done")
        else:
            point[key] = last
    return point


def _preflight(config: LearnConfig) -> None:
    """Everything the run reads later, checked before anything is written or a label paid for: the datasets, the
    initial potential, the structure, and the oracle against it (``check_labeler``: its basis for every element,
    charge and multiplicity, its code installed; no calculation)."""
    from mlff.data.labelers import check_labeler
    from mlff.data.store import Dataset
    from mlff.md.config import read_structure

    for key, path in (("test.path", config.test.path), ("retrain.replay", config.retrain.replay)):
        if path is not None and not Path(path).is_file():
            raise MLFFError(f"{key}: no dataset at {path}")
    if config.initial.train is not None:
        from mlff.train.config import check_inputs, train_config

        check_inputs(train_config(config.initial.train, "initial.train"), "initial.train")
    if config.initial.potential is not None:
        _given_potential(config)
    if config.retrain.replay is not None:
        from mlff.learn.retrain import replay_heads

        if replay_heads(config) is not None and config.retrain.from_scratch:
            raise MLFFError(f"retrain.replay: {config.retrain.replay} is at another level of theory than the oracle, "
                            "so it is replayed in a head of its own, which fine-tunes the previous committee: "
                            "it cannot be combined with retrain.from_scratch")
    if config.test.path is not None:
        test = Dataset(config.test.path)
        n = len(test.indices(tag=config.test.tag)) if config.test.tag is not None else len(test)
        if n == 0:
            raise MLFFError(f"test.path: {config.test.path} holds no records"
                            + (f" tagged {config.test.tag!r}" if config.test.tag else ""))
    check_labeler(dict(config.label.oracle), [read_structure(config.structure)])


def _initial(config: LearnConfig, out: Path) -> dict:
    """The committee of iteration 0 (``OUT/initial.json`` records it once it is there)."""
    record = out / "initial.json"
    if record.is_file():
        return read_json(record)
    result = _initial_potential(config, out)
    if result["status"] == "done":
        write_json(record, result)
    return result


def _given_potential(config: LearnConfig) -> str:
    """The directory of ``initial.potential`` (a path or a shipped name); MLFFError when it holds none."""
    from mlff.models.store import resolve_potential_path

    path = resolve_potential_path(config.initial.potential)
    if not (path / "potential.json").is_file():
        raise MLFFError(f"initial.potential: no potential directory at {path} (no potential.json)")
    return str(path)


def _initial_potential(config: LearnConfig, out: Path) -> dict:
    if config.initial.potential is not None:
        return {"status": "done", "potential": _given_potential(config)}
    from mlff.learn.retrain import train_initial

    return train_initial(config, out)


def _iteration(ctx: dict, state: IterationState, flag) -> str:
    """Run the stages of one iteration not yet done; "done", "interrupted" or "awaiting_labels"."""
    if not state.path.is_file():
        state.save()  # the iteration has begun (with which committee)
    for stage in STAGES:
        if state.done(stage):
            continue
        if ctx["config"].progress:
            print(f"mlff learn: iteration {state.data['iteration']}: {stage}", file=sys.stderr, flush=True)
        began = time.perf_counter()
        summary = _RUN[stage](ctx, state)
        summary["wall_s"] = round(time.perf_counter() - began, 3)
        if summary.get("status") in ("interrupted", "awaiting_labels"):
            ctx["waiting"] = summary
            return summary["status"]
        _kill_hook(state.data["iteration"], stage)
        state.mark(stage, summary)
        if flag.received:
            return "interrupted"
    return "done"


def _finish(out: Path, status: str, **fields) -> dict:
    summary = {"status": status, "out": str(out), **fields}
    write_json(out / "summary.json", summary)
    return summary


def run_learning(config: LearnConfig | dict | str | Path, *, resume: bool = False) -> dict:
    """Run (or resume) the active-learning loop of ``config``; returns (and writes) ``OUT/summary.json``:
    status "finished" (with the stop reason and the final potential) or "interrupted" (resume later).
    Nothing is written into ``OUT`` before the whole config (``_preflight``, the oracle included) and the run
    directory (``_check_run``) have been checked; learn.json is written under the run's lock."""
    from mlff.lock import WriterLock

    if isinstance(config, (str, Path)):
        config = load_learn_config(config)
    config = learn_config(config)
    out = Path(config.out)
    _preflight(config)  # the whole config, the oracle included: a refused run leaves out as it was
    _check_run(out, config, resume, write=False)
    out.mkdir(parents=True, exist_ok=True)
    with WriterLock(out / ".lock", f"learning run {out}"):
        _check_run(out, config, resume)  # again, now that no other process can start a run here
        return _run(config, out)


def _run(config: LearnConfig, out: Path) -> dict:
    from mlff.data.labelers import make_labeler
    from mlff.learn.retrain import replay_set
    from mlff.signals import SignalFlag

    with SignalFlag() as flag:
        initial = _initial(config, out)
        if initial["status"] != "done":
            return _finish(out, "interrupted", stage="initial training")
        ctx = {"config": config, "labels": out / "labels.h5", "replay": replay_set(config, out),
               "labeler": make_labeler(dict(config.label.oracle)), "slope": 1.0, "previous_report": None,
               "reports": [], "calibration": None}
        if config.label.calibration is not None:
            from mlff.data.numerics import load_calibration

            ctx["calibration"] = load_calibration(config.label.calibration)
        potential, iteration = initial["potential"], 0
        while True:
            state = IterationState(out, iteration, potential)
            status = _iteration(ctx, state, flag)
            if status == "awaiting_labels":
                waiting = ctx["waiting"]
                return _finish(out, status, iteration=iteration, stage="label", missing=waiting["missing"],
                               label_config=waiting["label_config"], labels_spent=labels_spent(ctx["labels"]))
            if status == "interrupted":
                return _finish(out, "interrupted", iteration=iteration,
                               stage=next(s for s in STAGES if not state.done(s)) if len(state.data["done"]) < len(STAGES)
                               else "between iterations", labels_spent=labels_spent(ctx["labels"]))
            report = state.get("report")
            ctx["reports"].append(report)
            if report["stop"]:
                return _finish(out, "finished", reason=report["stop"], iterations=iteration + 1,
                               potential=report["potential"], labels_spent=report["labels_spent"])
            ctx["slope"] = state.get("calibrate")["used_slope"]
            ctx["previous_report"] = report
            potential, iteration = report["potential"], iteration + 1
