"""mlff: MACE machine-learned force fields trained on DFT data, driven by ASE and GPU molecular dynamics.

    import mlff
    potential = mlff.build_potential({"species": ["H", "C", "N", "O"]})
    atoms.calc = mlff.MLFFCalculator(potential)
"""

__version__ = "0.1.0"

from mlff.calculator import MLFFCalculator
from mlff.errors import MLFFError
from mlff.models import Potential, build_potential, load_potential, save_potential
from mlff.neighbors import neighbor_list

__all__ = ["MLFFCalculator", "MLFFError", "Potential", "__version__", "build_potential", "load_potential",
           "neighbor_list", "save_potential"]
