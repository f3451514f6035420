"""mlff: MACE machine-learned force fields trained on DFT data, driven by ASE and GPU molecular dynamics.

    import mlff
    potential = mlff.build_potential({"species": ["H", "C", "N", "O"]})
    atoms.calc = mlff.MLFFCalculator(potential)

The public names below are imported on first use: ASE imports ``mlff.ase_io`` and ``mlff.ase_plugin`` (its
plugin entry points) whenever ``ase.io`` loads, and that must not pull in torch and mace-torch.
"""

from importlib import import_module

__version__ = "0.1.0"

_HOMES = {
    "MLFFCalculator": "mlff.calculator", "MLFFError": "mlff.errors", "Potential": "mlff.models",
    "build_potential": "mlff.models", "load_potential": "mlff.models", "save_potential": "mlff.models",
    "neighbor_list": "mlff.neighbors",
}

__all__ = ["MLFFCalculator", "MLFFError", "Potential", "__version__", "build_potential", "load_potential",
           "neighbor_list", "save_potential"]


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'mlff' has no attribute {name!r}")
    value = getattr(import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
