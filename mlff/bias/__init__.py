"""Collective variables and bias potentials that wrap any force model (restraints, walls, well-tempered
metadynamics, Hamiltonian replica exchange), for both MD engines; ``mlff umbrella`` runs a ladder of
windows as one batch and writes the run directory that ``read_biased_run`` (and ``mlff fes``) read.

    from mlff.bias import Biases, DistanceDifference, HarmonicRestraint, BiasedModel
    biases = Biases(DistanceDifference.xi(infos), [HarmonicRestraint(centers, 5.0)]).bind(counts)
    model = BiasedModel(physical_model, biases)   # energy/forces: totals; bias_energy/bias_forces: the bias
"""

from mlff.bias.cv import CV, Coordinate, Distance, DistanceDifference, LinearCombination, cv_from_spec
from mlff.bias.exchange import ReplicaExchange
from mlff.bias.io import BiasedRun, read_biased_run, read_colvar, read_hills, write_hills
from mlff.bias.metad import MetaD
from mlff.bias.model import BiasCalculator, BiasedModel, Biases
from mlff.bias.restraint import BiasTerm, HarmonicRestraint, Wall

__all__ = ["BiasCalculator", "BiasTerm", "BiasedModel", "BiasedRun", "Biases", "CV", "Coordinate", "Distance",
           "DistanceDifference", "HarmonicRestraint", "LinearCombination", "MetaD", "ReplicaExchange", "Wall",
           "cv_from_spec", "read_biased_run", "read_colvar", "read_hills", "write_hills"]
