"""Retrain: fine-tune the committee on every label so far (plus the replay set), member k from member k of the
previous iteration, each on its own bootstrap resample (``mlff.train``: resumable after a kill by itself).

Splits come from each record's ``learn_split`` ("train"/"valid", set at selection); the fixed test set is
never among the training data. The replay set (e.g. xTB labels, to keep the short-range repulsion) is a
seeded draw of ``replay_records`` records written once to ``OUT/replay.h5``: at the oracle's level it trains in
the same head; at another level in a head of its own (``replay_heads``: MACE multi-head fine-tuning, the
committee's own head being the oracle's), so that it shapes the shared trunk without pulling the oracle's head
towards its level.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlff.errors import MLFFError
from mlff.learn.config import LearnConfig
from mlff.learn.state import write_dataset

__all__ = ["retrain", "train_initial", "replay_set", "replay_heads", "SPLIT_KEY"]

SPLIT_KEY = "learn_split"


def replay_set(config: LearnConfig, out: Path) -> Path | None:
    """``OUT/replay.h5``: the replay records (a seeded draw, never a held-out-scan or test-set geometry, nor a
    record of the replay dataset's own test split, ``info["split"] == "test"``), all in the training split;
    None without replay. The test set is what ``test_errors`` scores: the records of ``test.path`` tagged
    ``test.tag`` (all of them without a tag), so the replay and the test set may share a file."""
    if config.retrain.replay is None:
        return None
    path = out / "replay.h5"
    if path.is_file():
        return path
    from mlff.data.store import Dataset

    source = Dataset(config.retrain.replay)
    infos, hashes = source.infos(), source.column("geometry_hash")
    test = set()
    if config.test.path is not None:  # never train on the test set
        from mlff.learn.report import test_indices

        tested = Dataset(config.test.path)
        picked = test_indices(tested, config.test.tag)
        column = tested.column("geometry_hash")
        test = set(column if picked is None else [column[k] for k in picked])
    usable = np.array([k for k, info in enumerate(infos) if "holdout-scan" not in info.get("tags", [])
                       and info.get("split") != "test" and hashes[k] not in test], np.int64)
    if usable.size == 0:
        raise MLFFError(f"retrain.replay: no record of {config.retrain.replay} may be replayed: all are held out "
                        f"(the held-out scan, the test set of test.path, or the dataset's own test split)")
    rng = np.random.default_rng(config.seed)
    take = np.sort(rng.choice(usable, size=min(config.retrain.replay_records, len(usable)), replace=False))
    records = source.read(take)
    for atoms in records:
        atoms.info[SPLIT_KEY] = "train"
        atoms.info["replayed_from"] = str(config.retrain.replay)
    write_dataset(path, records, description=f"replay draw from {config.retrain.replay}", require=("energy", "forces"))
    return path


def _head_name(level: dict) -> str:
    return "".join(c if c.isalnum() else "-" for c in (level.get("method") or "labels").lower()).strip("-") or "labels"


def replay_heads(config: LearnConfig) -> list[str] | None:
    """``data.heads`` for [labels, replay] when the replay dataset is at another level of theory than the oracle
    (named after the levels' methods, e.g. ["dft", "gfn2-xtb"]); None when both are one level (one head)."""
    if config.retrain.replay is None:
        return None
    from mlff.data.label import LEVEL_KEYS, levels_of
    from mlff.data.labelers import make_labeler
    from mlff.data.store import Dataset

    level = make_labeler(dict(config.label.oracle)).level()
    oracle = {k: str(level.get(k, "")) for k in LEVEL_KEYS}
    others = [lv for lv in levels_of(Dataset(config.retrain.replay)) if lv != oracle]
    if not others:
        return None
    own, replayed = _head_name(oracle), _head_name(others[0])
    return [own, replayed if replayed != own else f"{own}-replay"]


def _run(train_config: dict) -> dict:
    from mlff.train import train

    run_dir = Path(train_config["out"])
    result = train(train_config, resume=(run_dir / "config.json").is_file())
    if result.status != "done":
        return {"status": "interrupted", "run_dir": str(run_dir)}
    potential = run_dir / train_config.get("name", "potential")
    return {"status": "done", "run_dir": str(run_dir), "potential": str(potential)}


def train_initial(config: LearnConfig, out: Path) -> dict:
    """The initial committee from ``initial.train`` in ``OUT/initial/train`` (resumed if it was started)."""
    spec = dict(config.initial.train)
    spec.setdefault("device", config.device)
    spec.setdefault("progress", config.progress)
    spec.update(out=str(out / "initial" / "train"), name="potential")
    return _run(spec)


def retrain(config: LearnConfig, previous: str, labels: Path, replay: Path | None, it_dir: Path) -> dict:
    """Fine-tune (or train from scratch) on every label so far into ``iter_NNN/train``."""
    from mlff.learn.state import read_json
    from mlff.models.store import resolve_potential_path

    committee = read_json(resolve_potential_path(previous) / "potential.json")["committee_size"]
    spec = {"device": config.device, "progress": config.progress, "committee": committee, **config.retrain.train}
    data = {"paths": [str(labels)] + ([str(replay)] if replay is not None else []), "split_key": SPLIT_KEY,
            "regions": []}
    heads = replay_heads(config) if replay is not None else None
    if heads is not None:
        data["heads"] = heads
    spec.update(data=data, out=str(it_dir / "train"), name="potential")
    if not config.retrain.from_scratch:
        spec["init_from"] = str(previous)
        spec.pop("model", None)
    return _run(spec)
