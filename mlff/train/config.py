"""``TrainConfig``: everything a training run needs, as typed dataclasses filled from YAML.

Unknown keys are rejected by name at every level (``mlff.config.from_dict``). Units: energies eV,
forces eV/Å, learning rates per optimizer step, times in epochs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlff.config import from_dict, load_yaml
from mlff.errors import MLFFError

__all__ = ["DataConfig", "LossConfig", "OptimConfig", "StageTwoConfig", "TrainConfig", "load_train_config",
           "train_config"]


@dataclass
class DataConfig:
    paths: list  # mlff HDF5 datasets (records with energy and forces)
    split: dict = field(default_factory=lambda: {"train": 0.8, "valid": 0.1, "test": 0.1})
    split_seed: int = 0
    group_by: str | None = None  # info key kept whole in one split (e.g. "scan")
    split_key: str | None = None  # info key naming each record's split ("train"/"valid"/"test"): overrides split
    holdout_tag: str = "holdout-scan"  # records with this tag never enter training; scored as a scan
    regions: list = field(default_factory=lambda: ["reactant", "ts", "product"])  # tags scored separately
    max_records: int | None = None  # use only the first N records (quick trials)


@dataclass
class LossConfig:
    energy_weight: float = 1.0  # on ((E - E_ref) / n_atoms)^2, eV^2/atom^2
    forces_weight: float = 100.0  # on (F - F_ref)^2 per component, (eV/Å)^2
    stress_weight: float = 0.0  # on (σ - σ_ref)^2 per component, (eV/Å^3)^2; needs stress labels


@dataclass
class OptimConfig:
    name: str = "amsgrad"  # "amsgrad" (Adam with AMSGrad) or "adamw"
    lr: float = 0.01
    weight_decay: float = 5e-7
    scheduler: str = "plateau"  # "plateau" (ReduceLROnPlateau on validation loss), "cosine" or "none"
    plateau_factor: float = 0.8
    plateau_patience: int = 5  # epochs without improvement before the LR is multiplied by plateau_factor (mace: 5)
    min_lr: float = 0.0
    clip_grad_norm: float | None = 10.0
    ema_decay: float | None = 0.99  # None: no exponential moving average of the weights


@dataclass
class StageTwoConfig:
    """MACE's "SWA" stage: from ``start_epoch`` on, a higher energy weight and a lower learning rate."""
    start_epoch: int | None = None  # None: no second stage
    energy_weight: float = 1000.0
    forces_weight: float = 100.0
    stress_weight: float = 0.0
    lr: float = 1e-3


@dataclass
class TrainConfig:
    data: DataConfig
    model: dict = field(default_factory=dict)  # ModelConfig keys (mlff.models.ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    stage_two: StageTwoConfig = field(default_factory=StageTwoConfig)
    name: str = "potential"
    out: str = "runs/train"  # run directory (checkpoints, logs, plots, the potential)
    seed: int = 0
    max_epochs: int = 100
    batch_size: int = 8  # global batch: structures per optimizer step, over all processes
    valid_batch_size: int = 32
    patience: int | None = None  # early stopping: epochs without a better validation loss
    eval_every: int = 1  # epochs between validations
    dtype: str = "float64"  # "float32" or "float64"
    device: str = "auto"  # "auto" (cuda when present), "cpu", "cuda"
    deterministic: bool = False  # deterministic CUDA kernels (slower): needed for bitwise-exact resume on a GPU
    committee: int = 1  # members, seeds seed, seed+1, ...; each on a bootstrap resample when bootstrap
    bootstrap: bool = True  # resample the training set with replacement for each member (committee > 1)
    e0s: Any = None  # "fit" (least squares on the training set), {symbol: eV}, "model" (keep the model's), or the
    # path of an mlff dataset of isolated atoms (one atom per record, e.g. data/fdh-cluster/isolated_atoms.h5);
    # None: "fit" for a new model, "model" when fine-tuning
    scaling: str = "rms_forces"  # "rms_forces" (shift = mean per-atom interaction energy, scale = force RMS) or "none"
    init_from: str | None = None  # fine-tune: a mace-torch .model file (a pickle: trusted files only) or a potential dir
    plots: bool = True
    progress: bool = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_NESTED = {"data": DataConfig, "loss": LossConfig, "optim": OptimConfig, "stage_two": StageTwoConfig}


def train_config(data: dict | TrainConfig) -> TrainConfig:
    """A checked TrainConfig from a plain mapping (unknown keys rejected, with where they were)."""
    if isinstance(data, TrainConfig):
        return data
    data = dict(data or {})
    for key, cls in _NESTED.items():
        if key in data:
            if not isinstance(data[key], dict):
                raise MLFFError(f"train config: {key!r} must be a mapping, got {type(data[key]).__name__}")
            data[key] = from_dict(cls, data[key], f"train config '{key}'")
    if "data" not in data:
        raise MLFFError("train config: missing required key 'data' (with 'paths': the HDF5 datasets)")
    config = from_dict(TrainConfig, data, "train config")
    _check(config)
    return config


def _check(c: TrainConfig) -> None:
    if isinstance(c.data.paths, (str, Path)):
        c.data.paths = [str(c.data.paths)]
    if not c.data.paths:
        raise MLFFError("train config: data.paths must list at least one dataset")
    if "train" not in c.data.split or "valid" not in c.data.split:
        raise MLFFError(f"train config: data.split needs 'train' and 'valid' fractions, got {c.data.split}")
    if c.optim.name not in ("amsgrad", "adamw"):
        raise MLFFError(f"train config: optim.name must be 'amsgrad' or 'adamw', got {c.optim.name!r}")
    if c.optim.scheduler not in ("plateau", "cosine", "none"):
        raise MLFFError(f"train config: optim.scheduler must be 'plateau', 'cosine' or 'none', got {c.optim.scheduler!r}")
    if c.dtype not in ("float32", "float64"):
        raise MLFFError(f"train config: dtype must be 'float32' or 'float64', got {c.dtype!r}")
    if c.device not in ("auto", "cpu", "cuda") and not str(c.device).startswith("cuda:"):
        raise MLFFError(f"train config: device must be 'auto', 'cpu' or 'cuda', got {c.device!r}")
    if c.scaling not in ("rms_forces", "none"):
        raise MLFFError(f"train config: scaling must be 'rms_forces' or 'none', got {c.scaling!r}")
    if not (c.e0s is None or isinstance(c.e0s, (str, dict))):
        raise MLFFError(f"train config: e0s must be 'fit', 'model', a mapping symbol -> eV or a dataset path, got {c.e0s!r}")
    for name, value in (("max_epochs", c.max_epochs), ("batch_size", c.batch_size - 1), ("committee", c.committee - 1),
                        ("valid_batch_size", c.valid_batch_size - 1), ("eval_every", c.eval_every - 1)):
        if not isinstance(value, int) or value < 0:
            raise MLFFError(f"train config: {name} must be a {'non-negative' if name == 'max_epochs' else 'positive'} integer")
    if not c.model and c.init_from is None:
        raise MLFFError("train config: give 'model' (MACE hyperparameters) or 'init_from' (a model to fine-tune)")


def load_train_config(path, *, out: str | None = None) -> TrainConfig:
    """The TrainConfig in YAML file ``path``; ``out`` overrides the run directory; relative data paths
    are taken relative to the YAML file's folder."""
    raw = load_yaml(path)
    config = train_config(raw)
    base = Path(path).resolve().parent
    config.data.paths = [str(p if Path(p).is_absolute() or Path(p).exists() else base / p) for p in config.data.paths]
    if isinstance(config.e0s, str) and config.e0s not in ("fit", "model") and not Path(config.e0s).exists():
        config.e0s = str(base / config.e0s)
    if out is not None:
        config.out = str(out)
    return config
