"""Training MACE potentials on mlff datasets: config, precomputed data, E0s, the trainer, committees, reports."""

from mlff.train.config import TrainConfig, load_train_config, train_config
from mlff.train.e0s import fit_e0s
from mlff.train.run import TrainResult, load_initial, train

__all__ = ["TrainConfig", "TrainResult", "fit_e0s", "load_initial", "load_train_config", "train", "train_config"]
