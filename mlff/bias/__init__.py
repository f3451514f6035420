"""Collective variables and bias potentials that wrap any force model (restraints, metadynamics, exchange)."""

from mlff.bias.io import BiasedRun

__all__ = ["BiasedRun"]
