"""Neighbour lists: CuPy cell lists on the GPU, vesin on the CPU, a brute-force oracle for tests.

    from mlff.neighbors import neighbor_list
    i, j, S = neighbor_list(positions, cell, pbc, cutoff)   # like ase.neighborlist "ijS"
"""

from mlff.neighbors.api import BACKENDS, neighbor_list
from mlff.neighbors.verlet import VerletNeighborList

__all__ = ["BACKENDS", "VerletNeighborList", "neighbor_list"]
