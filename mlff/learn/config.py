"""``LearnConfig``: the keys of an ``mlff learn CONFIG.yaml`` run (typed; unknown keys refused by name).

Units: force spreads and trust windows in eV/Å, xi in Å, barriers in kcal/mol, times in s.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlff.config import checked, device_setting, from_dict, load_yaml
from mlff.errors import MLFFError

__all__ = ["LearnConfig", "InitialConfig", "ExploreConfig", "SelectConfig", "LabelConfig", "RetrainConfig",
           "TestConfig", "StopConfig", "load_learn_config", "learn_config", "OWNED_TRAIN_KEYS", "OWNED_MD_KEYS"]

OWNED_TRAIN_KEYS = ("data", "init_from", "out", "name")  # set by the loop for every retraining
OWNED_MD_KEYS = ("structure", "potential", "out", "seed", "device")  # set by the loop for every explore run
_UMBRELLA_OWNED = ("structure", "potential", "out")


@dataclass
class InitialConfig:
    """The committee of iteration 0: an existing potential (a directory or shipped name), or a training config."""
    potential: str | None = None  # e.g. fdh-cluster-small-xtb (pre-trained on xTB), a committee
    train: dict | None = None  # a TrainConfig mapping (mlff train keys), trained into OUT/initial/train


@dataclass
class ExploreConfig:
    md: dict | None = None  # MDConfig keys (replicas, steps, temperature_K, timestep_fs, trajectory_every, ...)
    umbrella: dict | None = None  # UmbrellaConfig keys (centers_A, spring_eV_per_A2, production_steps, md, ...)
    skip_frames: int = checked(1, ge=0)  # leading trajectory frames of each system not offered to selection


@dataclass
class SelectConfig:
    # [lo, hi] on the calibrated committee spread (max over moving atoms of the force std), eV/Å:
    # below lo the committee is trusted, above hi the frame is taken as unphysical (DP-GEN's trust levels)
    trust_window_eV_A: list[float] = checked(default_factory=lambda: [0.05, 0.5], ge=0)
    xi_bin_A: float = checked(0.2, gt=0)  # width of the xi bins of the per-bin cap
    max_per_bin: int = checked(2, ge=1)  # labels per xi bin and iteration
    per_iteration: int = checked(10, ge=1)  # label budget of one iteration
    descriptor: str = checked("mean", choices=("mean", "xi_atoms"))  # MACE features averaged, or of the xi atoms
    valid_every: int = checked(0, ge=0)  # every n-th selected frame goes to the validation split (0: none)
    # too few frames in the window: fill the budget from above it, least uncertain first (same per-bin cap)
    fill_from_above: bool = False


@dataclass
class LabelConfig:
    oracle: dict = field(default_factory=lambda: {"backend": "xtb"})  # mlff.data.labelers.make_labeler spec
    time_limit_s: float | None = checked(None, gt=0)  # per run of the label stage: a longer one stops (exit 75)
    checkpoint_every: int = checked(1, ge=1)
    # true: the loop stops after select (status awaiting_labels) and writes iter_NNN/label.yaml for
    # `mlff slurm label` (array jobs) into iter_NNN/labels_in.h5; --resume imports them
    external: bool = False
    shards: int = checked(1, ge=1)  # array tasks of the label.yaml written for external labelling
    workers: int = checked(1, ge=1)  # one-thread labelling processes side by side (mlff.data.workers)
    # a numerics calibration (`mlff data numerics`): the oracle labels at faster settings than the data it joins
    # (e.g. the replay set); its energies are shifted to the reference settings and count as that level
    calibration: str | None = None


@dataclass
class RetrainConfig:
    train: dict = field(default_factory=dict)  # TrainConfig keys but data, init_from, out, name (committee, epochs, ...)
    from_scratch: bool = False  # train every iteration from scratch (train.model) instead of fine-tuning
    # a dataset replayed in every retraining (e.g. the xTB data): in the committee's head at the oracle's level of
    # theory, in a head of its own at another (mlff.learn.retrain.replay_heads)
    replay: str | None = None
    replay_records: int = checked(200, ge=1)  # records drawn (seeded) from the replay dataset


@dataclass
class TestConfig:
    path: str | None = None  # a fixed dataset of reference labels (the oracle's level); never trained on
    tag: str | None = None  # only its records with this tag (e.g. holdout-scan); None: all
    # xi regions [lo, hi] (Å, null for an open end) of the error report
    regions_A: dict = field(default_factory=lambda: {"reactant": [None, -0.3], "ts": [-0.3, 0.3],
                                                     "product": [0.3, None]})


@dataclass
class StopConfig:
    total_labels: int = checked(100, ge=1)  # label budget of the run (records + failures)
    max_iterations: int = checked(10, ge=1)
    min_uncertain: int = checked(0, ge=0)  # stop after two iterations running with fewer uncertain frames
    barrier_tol_kcal_mol: float | None = checked(0.5, gt=0)  # stop when the barrier moves less (umbrella runs)


@dataclass
class LearnConfig:
    structure: str  # a structure file or "fdh-cluster:SIZE:STATE" (charge, xi_atoms, fixed in its info)
    initial: InitialConfig = field(default_factory=InitialConfig)
    explore: ExploreConfig = field(default_factory=ExploreConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    test: TestConfig = field(default_factory=TestConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    fes: dict | None = None  # FESConfig keys for the profile of umbrella explore runs (None: defaults)
    seed: int = checked(0, ge=0)
    device: str = device_setting("auto")
    progress: bool = True
    out: str = "runs/learn"

    def __post_init__(self):
        _check(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check(c: LearnConfig) -> None:
    if (c.initial.potential is None) == (c.initial.train is None):
        raise MLFFError("initial: give exactly one of 'potential' (a potential directory) or 'train' (a training config)")
    lo_hi = c.select.trust_window_eV_A
    if len(lo_hi) != 2 or not lo_hi[0] < lo_hi[1]:
        raise MLFFError(f"select.trust_window_eV_A = {lo_hi}; expected [lo, hi] with lo < hi (eV/Å)")
    if c.explore.md is None and c.explore.umbrella is None:
        raise MLFFError("explore: give 'md' (MD replicas) and/or 'umbrella' (windows along xi)")
    for name, owned in (("md", OWNED_MD_KEYS), ("umbrella", _UMBRELLA_OWNED)):
        section = getattr(c.explore, name)
        bad = sorted(set(section or {}) & set(owned))
        if bad:
            raise MLFFError(f"explore.{name}: key {bad[0]!r} is set by the loop ({', '.join(owned)})")
    bad = sorted(set(c.retrain.train) & set(OWNED_TRAIN_KEYS))
    if bad:
        raise MLFFError(f"retrain.train: key {bad[0]!r} is set by the loop ({', '.join(OWNED_TRAIN_KEYS)})")
    if c.retrain.from_scratch and not c.retrain.train.get("model"):
        raise MLFFError("retrain.from_scratch: true needs retrain.train.model (MACE hyperparameters)")
    _check_fragments(c)
    for name, interval in c.test.regions_A.items():
        if not isinstance(interval, (list, tuple)) or len(interval) != 2 or not _lo(interval) < _hi(interval):
            raise MLFFError(f"test.regions_A.{name} = {interval!r}; expected [lo, hi] in Å (null for an open end)")


def _lo(interval) -> float:
    return -math.inf if interval[0] is None else float(interval[0])


def _hi(interval) -> float:
    return math.inf if interval[1] is None else float(interval[1])


def _check_fragments(c: LearnConfig) -> None:
    """The embedded MD, umbrella, training and labeller sections, checked now (not an hour into the run)."""
    from mlff.data.labelers import make_labeler
    from mlff.md.config import load_md_config
    from mlff.train.config import train_config

    if c.explore.md is not None:
        load_md_config({**c.explore.md, "structure": c.structure})  # keys, types, ranges
    if c.explore.umbrella is not None:
        from mlff.bias.umbrella import load_umbrella_config

        load_umbrella_config({**c.explore.umbrella, "structure": c.structure, "potential": "x"})
    fragment = {**c.retrain.train, "data": {"paths": ["labels.h5"]}}
    if not c.retrain.from_scratch:
        fragment["init_from"] = "previous"
    train_config(fragment, "retrain.train")
    if c.initial.train is not None:
        train_config(c.initial.train, "initial.train")
    if not isinstance(c.label.oracle, dict) or "backend" not in c.label.oracle:
        raise MLFFError(f"label.oracle = {c.label.oracle!r}; expected a labeller spec such as {{backend: xtb}}")
    labeler = make_labeler(dict(c.label.oracle))
    if c.label.calibration is not None:
        from mlff.data.levels import level_of, numerics_of
        from mlff.data.numerics import load_calibration

        level = labeler.level()
        load_calibration(c.label.calibration).check_usable(level_of(level), numerics_of(level), "label.calibration")
    if c.fes is not None:
        from mlff.fes.config import load_fes_config

        load_fes_config(dict(c.fes))


def learn_config(data: dict | LearnConfig, where: str = "learn config") -> LearnConfig:
    if isinstance(data, LearnConfig):
        return data
    return from_dict(LearnConfig, data, where)


def load_learn_config(path, *, out: str | None = None) -> LearnConfig:
    """The LearnConfig in YAML file ``path``; relative dataset paths are taken relative to the file's folder
    when they do not exist relative to the working directory."""
    data: dict[str, Any] = load_yaml(path)
    if out is not None:
        data["out"] = str(out)
    config = learn_config(data, str(path))
    base = Path(path).resolve().parent

    def resolve(p):
        return p if p is None or Path(p).is_absolute() or Path(p).exists() or not (base / p).exists() else str(base / p)

    config.test.path = resolve(config.test.path)
    config.retrain.replay = resolve(config.retrain.replay)
    config.initial.potential = resolve(config.initial.potential)
    config.label.calibration = resolve(config.label.calibration)
    return config
