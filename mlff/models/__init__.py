"""MACE potentials: configs, the batched graph, the Potential contract and its on-disk format."""

from mlff.models.config import ModelConfig, model_config
from mlff.models.graph import Graph, batch_atoms
from mlff.models.potential import Potential
from mlff.models.store import load_potential, save_potential

__all__ = ["Graph", "ModelConfig", "Potential", "batch_atoms", "build_potential", "load_potential",
           "model_config", "save_potential"]


def build_potential(config, *, committee: int = 1, seed: int = 0, dtype="float64") -> Potential:
    """An untrained MACE potential from a plain dict of hyperparameters (see ``ModelConfig``)."""
    return Potential.build(config, committee=committee, seed=seed, dtype=dtype)
