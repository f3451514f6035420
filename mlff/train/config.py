"""``TrainConfig``: everything a training run needs, as typed dataclasses filled from YAML.

Unknown keys are rejected by name at every level (``mlff.config.from_dict``). Units: energies eV,
forces eV/Å, learning rates per optimizer step, times in epochs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from mlff.config import checked, device_setting, from_dict, load_yaml
from mlff.errors import MLFFError

__all__ = ["DataConfig", "LossConfig", "OptimConfig", "StageTwoConfig", "TrainConfig", "check_inputs",
           "load_train_config", "train_config"]


@dataclass
class DataConfig:
    paths: str | list[str]  # mlff HDF5 datasets (records with energy and forces)
    split: dict[str, float] = checked(default_factory=lambda: {"train": 0.8, "valid": 0.1, "test": 0.1}, ge=0)
    split_seed: int = checked(0, ge=0)
    group_by: str | None = None  # info key kept whole in one split (e.g. "scan")
    split_key: str | None = None  # info key naming each record's split ("train"/"valid"/"test"): overrides split
    holdout_tag: str = "holdout-scan"  # records with this tag never enter training; scored as a scan
    regions: list[str] = field(default_factory=lambda: ["reactant", "ts", "product"])  # tags scored separately
    max_records: int | None = checked(None, ge=1)  # use only the first N records (quick trials)
    # times each training record of paths[k] is drawn per epoch (e.g. [1, 10]: a small active-learning set
    # weighted up beside a large one); None: once each. Validation, test and the held-out scan are not repeated.
    repeat: list[int] | None = None
    # the head each entry of paths trains (e.g. [dft, xtb]): data at other levels of theory, replayed in heads of
    # their own beside the potential's head, which is that of paths[0] (MACE multi-head fine-tuning; needs
    # init_from: the new heads start as the source model's). Records of the other heads only train: their
    # valid/test/held-out records are not used, and the errors in the card are those of the potential's head.
    heads: list[str] | None = None
    # per entry of paths: at most this many of its training records (a draw seeded by split_seed, fixed for the
    # run), None for all; e.g. [null, 1000]: a replay set drawn from a large dataset
    train_records: list[int | None] | None = None


@dataclass
class LossConfig:
    energy_weight: float = checked(1.0, ge=0)  # on ((E - E_ref) / n_atoms)^2, eV^2/atom^2
    forces_weight: float = checked(100.0, ge=0)  # on (F - F_ref)^2 per component, (eV/Å)^2
    stress_weight: float = checked(0.0, ge=0)  # on (σ - σ_ref)^2 per component, (eV/Å^3)^2; needs stress labels


@dataclass
class OptimConfig:
    name: str = checked("amsgrad", choices=("amsgrad", "adamw"))  # "amsgrad" (Adam with AMSGrad) or "adamw"
    lr: float = checked(0.01, gt=0)
    weight_decay: float = checked(5e-7, ge=0)
    # "plateau" (ReduceLROnPlateau on validation loss), "cosine" or "none"
    scheduler: str = checked("plateau", choices=("plateau", "cosine", "none"))
    plateau_factor: float = checked(0.8, gt=0, lt=1)
    # epochs without improvement before the LR is multiplied by plateau_factor (mace: 5)
    plateau_patience: int = checked(5, ge=0)
    min_lr: float = checked(0.0, ge=0)
    clip_grad_norm: float | None = checked(10.0, gt=0)
    ema_decay: float | None = checked(0.99, ge=0, lt=1)  # None: no exponential moving average of the weights


@dataclass
class StageTwoConfig:
    """MACE's "SWA" stage: from ``start_epoch`` on, a higher energy weight and a lower learning rate."""
    start_epoch: int | None = checked(None, ge=0)  # None: no second stage
    energy_weight: float = checked(1000.0, ge=0)
    forces_weight: float = checked(100.0, ge=0)
    stress_weight: float = checked(0.0, ge=0)
    lr: float = checked(1e-3, gt=0)


@dataclass
class TrainConfig:
    data: DataConfig
    model: dict = field(default_factory=dict)  # ModelConfig keys (mlff.models.ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    stage_two: StageTwoConfig = field(default_factory=StageTwoConfig)
    name: str = "potential"
    out: str = "runs/train"  # run directory (checkpoints, logs, plots, the potential)
    seed: int = checked(0, ge=0)
    max_epochs: int = checked(100, ge=0)
    batch_size: int = checked(8, ge=1)  # global batch: structures per optimizer step, over all processes
    valid_batch_size: int = checked(32, ge=1)
    patience: int | None = checked(None, ge=1)  # early stopping: epochs without a better validation loss
    eval_every: int = checked(1, ge=1)  # epochs between validations
    dtype: str = checked("float64", choices=("float32", "float64"))
    device: str = device_setting("auto")  # "auto" (cuda when present), "cpu", "cuda", "cuda:N"
    deterministic: bool = False  # deterministic CUDA kernels (slower): needed for bitwise-exact resume on a GPU
    committee: int = checked(1, ge=1)  # members, seeds seed, seed+1, ...; each on a bootstrap resample when bootstrap
    bootstrap: bool = True  # resample the training set with replacement for each member (committee > 1)
    # "fit" (least squares on the training set), {symbol: eV}, "model" (keep the model's), or the
    # path of an mlff dataset of isolated atoms (one atom per record, e.g. data/fdh-cluster/isolated_atoms.h5);
    # None: "fit" for a new model, "model" when fine-tuning; "shift" (fine-tuning to another level of theory, e.g.
    # xTB -> DFT): the model's E0s moved by the mean per-atom residual (E_ref - E_model) / N over the training set,
    # the same for every element, so training starts at the new level's energy offset instead of spending its
    # first epochs (and the energy weight) on it
    e0s: str | dict[str, float] | None = None
    # "rms_forces" (shift = mean per-atom interaction energy, scale = force RMS) or "none"
    scaling: str = checked("rms_forces", choices=("rms_forces", "none"))
    # fine-tune: a mace-torch .model file (a pickle: trusted files only) or a potential dir
    init_from: str | None = None
    # a residual (delta) model: a frozen potential (directory or shipped name, e.g. the xTB foundation) whose committee
    # mean the new model adds to; the new model (`model`, from scratch) trains on the labels minus the base's
    # predictions, E0s and scale from those residuals; the saved potential is the sum, pinned to the base's weights
    base: str | None = None
    plots: bool = True
    progress: bool = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def train_config(data: dict | TrainConfig, where: str = "train config") -> TrainConfig:
    """A checked TrainConfig from a plain mapping: unknown keys, types and ranges checked at every level by
    ``mlff.config.from_dict``, errors naming the full key path (``optim.lr``); ``where`` starts them."""
    if isinstance(data, TrainConfig):
        return data
    if isinstance(data, dict) and "data" not in data:
        raise MLFFError(f"{where}: missing required key 'data' (with 'paths': the HDF5 datasets)")
    config = from_dict(TrainConfig, data, where)
    _check(config, where)
    return config


def _check(c: TrainConfig, where: str) -> None:
    """The rules that involve more than one key (single keys: the checked(...) declarations above)."""
    if isinstance(c.data.paths, str):
        c.data.paths = [c.data.paths]
    if not c.data.paths:
        raise MLFFError(f"{where}: data.paths must list at least one dataset")
    if c.data.repeat is not None and (len(c.data.repeat) != len(c.data.paths) or min(c.data.repeat) < 1):
        raise MLFFError(f"{where}: data.repeat needs one whole number >= 1 per entry of data.paths "
                        f"({len(c.data.paths)}), got {c.data.repeat}")
    for key in ("heads", "train_records"):
        value = getattr(c.data, key)
        if value is not None and len(value) != len(c.data.paths):
            raise MLFFError(f"{where}: data.{key} needs one entry per entry of data.paths ({len(c.data.paths)}), "
                            f"got {value}")
    if c.data.train_records is not None and any(n is not None and n < 1 for n in c.data.train_records):
        raise MLFFError(f"{where}: data.train_records entries must be >= 1 or null, got {c.data.train_records}")
    if c.data.heads is not None and len(set(c.data.heads)) > 1 and c.init_from is None:
        raise MLFFError(f"{where}: data.heads with several heads fine-tunes a trained model: it needs init_from")
    if "train" not in c.data.split or "valid" not in c.data.split:
        raise MLFFError(f"{where}: data.split needs 'train' and 'valid' fractions, got {c.data.split}")
    if c.e0s == "shift" and c.init_from is None:
        raise MLFFError(f"{where}: e0s: shift moves the E0s of the model being fine-tuned: it needs init_from")
    if not c.model and c.init_from is None:
        raise MLFFError(f"{where}: give 'model' (MACE hyperparameters) or 'init_from' (a model to fine-tune)")
    if c.base is not None and (c.init_from is not None or c.data.heads is not None):
        raise MLFFError(f"{where}: base (a residual model on a frozen potential) trains a new model from scratch: it "
                        "cannot be combined with init_from or data.heads")
    if c.model and c.init_from is None:
        from mlff.models.config import model_config

        try:  # the model section's keys and values, before any data is read
            model_config(c.model)
        except MLFFError as err:
            raise MLFFError(f"{where}: {err}") from None


def check_inputs(c: TrainConfig, where: str = "train config") -> None:
    """The files a training reads, checked before its run directory is touched (nothing is loaded): every
    dataset of data.paths is an mlff dataset, init_from a model file or potential directory, base a potential
    directory (or shipped name), an e0s dataset of isolated atoms exists."""
    from mlff.data.store import Dataset
    from mlff.models.store import resolve_potential_path

    for path in c.data.paths:
        try:
            Dataset(path)
        except MLFFError as err:
            raise MLFFError(f"{where}: data.paths: {err}") from None
    if c.init_from is not None and not (Path(c.init_from).is_file() or (Path(c.init_from) / "potential.json").is_file()):
        raise MLFFError(f"{where}: init_from: no model file or potential directory at {c.init_from}")
    if c.base is not None and not (resolve_potential_path(c.base) / "potential.json").is_file():
        raise MLFFError(f"{where}: base: no potential directory (or shipped potential) {c.base!r}")
    if isinstance(c.e0s, str) and c.e0s not in ("fit", "model", "shift") and not Path(c.e0s).is_file():
        raise MLFFError(f"{where}: e0s: no dataset of isolated atoms at {c.e0s}; expected fit, model, shift, "
                        "{symbol: eV} or such a dataset")


def load_train_config(path, *, out: str | None = None) -> TrainConfig:
    """The TrainConfig in YAML file ``path``; ``out`` overrides the run directory; relative data paths
    are taken relative to the YAML file's folder."""
    config = train_config(load_yaml(path), str(path))
    base = Path(path).resolve().parent
    config.data.paths = [str(p if Path(p).is_absolute() or Path(p).exists() else base / p) for p in config.data.paths]
    if isinstance(config.e0s, str) and config.e0s not in ("fit", "model", "shift") and not Path(config.e0s).exists():
        config.e0s = str(base / config.e0s)
    if out is not None:
        config.out = str(out)
    return config
