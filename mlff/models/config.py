"""MACE hyperparameters as a plain, JSON-safe dataclass, and the translation to and from mace-torch.

Names follow mace-torch where they exist; classes and functions are stored by their names in
``mace.modules`` (interaction_classes, readout_classes, gate_dict), irreps as strings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase.data import atomic_numbers as _symbol_to_z
from ase.data import chemical_symbols

from mlff.config import checked, from_dict
from mlff.errors import MLFFError

__all__ = ["ModelConfig", "model_config", "mace_kwargs", "config_from_mace"]


@dataclass
class ModelConfig:
    species: list[str | int]  # chemical symbols or atomic numbers, e.g. ["H", "C", "N", "O"]
    r_max: float = checked(5.0, gt=0)  # cutoff, Å
    num_bessel: int = checked(8, ge=1)
    num_polynomial_cutoff: int = checked(5, ge=1)
    max_ell: int = checked(3, ge=0)
    hidden_irreps: str = "128x0e"
    MLP_irreps: str = "16x0e"
    edge_irreps: str | None = None
    num_interactions: int = checked(2, ge=1)
    correlation: int | list = 3
    interaction: str = "RealAgnosticResidualInteractionBlock"
    interaction_first: str = "RealAgnosticResidualInteractionBlock"
    readout: str = "NonLinearReadoutBlock"
    gate: str = "silu"
    radial_MLP: list[int] = field(default_factory=lambda: [64, 64, 64])
    radial_type: str = "bessel"
    distance_transform: str = "None"
    avg_num_neighbors: float = checked(10.0, gt=0)
    E0s: dict | list | None = None  # eV per isolated atom: {symbol: E0}, [E0 per species], or per head
    atomic_inter_scale: float | list = 1.0  # eV
    atomic_inter_shift: float | list = 0.0  # eV
    heads: list[str] = field(default_factory=lambda: ["default"])
    pair_repulsion: bool = False
    apply_cutoff: bool = True
    use_reduced_cg: bool = False
    use_so3: bool = False
    use_agnostic_product: bool = False
    use_last_readout_only: bool = False
    use_embedding_readout: bool = False
    use_edge_irreps_first: bool = False

    @property
    def atomic_numbers(self) -> list[int]:
        return sorted({_z(s) for s in self.species})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _z(species) -> int:
    if isinstance(species, (int, np.integer)) and 0 < int(species) < len(chemical_symbols):
        return int(species)
    if isinstance(species, str) and species in _symbol_to_z:
        return _symbol_to_z[species]
    raise MLFFError(f"unknown chemical species {species!r} in the model config")


def model_config(data: dict[str, Any] | ModelConfig) -> ModelConfig:
    """A checked ModelConfig from a plain dict (unknown keys rejected) or an existing config."""
    config = data if isinstance(data, ModelConfig) else from_dict(ModelConfig, data, "model config")
    if not config.species:
        raise MLFFError("model config: 'species' must list at least one element")
    _atomic_energies(config)
    return config


def _atomic_energies(config: ModelConfig) -> np.ndarray:
    """E0s as [n_heads, n_species] (in ``atomic_numbers`` order), zeros when not given."""
    zs = config.atomic_numbers
    e0 = config.E0s
    if e0 is None:
        return np.zeros((len(config.heads), len(zs)))
    if isinstance(e0, dict):
        by_z = {_z(k): float(v) for k, v in e0.items()}
        missing = [chemical_symbols[z] for z in zs if z not in by_z]
        if missing:
            raise MLFFError(f"model config: E0s has no value for {', '.join(missing)}")
        return np.array([[by_z[z] for z in zs]] * len(config.heads))
    arr = np.asarray(e0, dtype=np.float64).reshape(-1, len(zs)) if np.size(e0) % len(zs) == 0 else None
    if arr is None or len(arr) != len(config.heads):
        raise MLFFError(f"model config: E0s must give one energy per species ({len(zs)}) for each of "
                        f"{len(config.heads)} head(s), got {np.size(e0)} values")
    return arr


def mace_kwargs(config: ModelConfig) -> dict[str, Any]:
    """Keyword arguments for ``mace.modules.ScaleShiftMACE``."""
    import mlff.models._mace  # noqa: F401
    import mace.modules as mm
    from e3nn import o3

    for name, table in (("interaction", mm.interaction_classes), ("interaction_first", mm.interaction_classes),
                        ("readout", mm.readout_classes), ("gate", mm.gate_dict)):
        if getattr(config, name) not in table:
            raise MLFFError(f"model config: unknown {name} {getattr(config, name)!r}; "
                            f"expected one of: {', '.join(table)}")
    e0 = _atomic_energies(config)
    return dict(
        r_max=float(config.r_max), num_bessel=config.num_bessel, num_polynomial_cutoff=config.num_polynomial_cutoff,
        max_ell=config.max_ell, interaction_cls=mm.interaction_classes[config.interaction],
        interaction_cls_first=mm.interaction_classes[config.interaction_first],
        num_interactions=config.num_interactions, num_elements=len(config.atomic_numbers),
        hidden_irreps=o3.Irreps(config.hidden_irreps), MLP_irreps=o3.Irreps(config.MLP_irreps),
        edge_irreps=o3.Irreps(config.edge_irreps) if config.edge_irreps else None,
        atomic_energies=e0[0] if len(config.heads) == 1 else e0,
        avg_num_neighbors=float(config.avg_num_neighbors), atomic_numbers=config.atomic_numbers,
        correlation=config.correlation, gate=mm.gate_dict[config.gate], pair_repulsion=config.pair_repulsion,
        apply_cutoff=config.apply_cutoff, use_reduced_cg=config.use_reduced_cg, use_so3=config.use_so3,
        use_agnostic_product=config.use_agnostic_product, use_last_readout_only=config.use_last_readout_only,
        use_embedding_readout=config.use_embedding_readout, distance_transform=config.distance_transform,
        use_edge_irreps_first=config.use_edge_irreps_first, radial_MLP=list(config.radial_MLP),
        radial_type=config.radial_type, heads=list(config.heads), readout_cls=mm.readout_classes[config.readout],
        atomic_inter_scale=config.atomic_inter_scale, atomic_inter_shift=config.atomic_inter_shift,
    )


def _name_in(table: dict, value) -> str:
    for name, candidate in table.items():
        if candidate is value:
            return name
    raise MLFFError(f"cannot represent {value!r} in an mlff model config")


def _plain(x):
    """Scalars and arrays as JSON-safe floats or lists."""
    arr = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
    return float(arr) if arr.size == 1 else arr.tolist()


def config_from_mace(module) -> ModelConfig:
    """The ModelConfig that rebuilds a mace-torch ScaleShiftMACE model (weights not included)."""
    import mlff.models._mace  # noqa: F401
    import mace.modules as mm
    from mace.tools.scripts_utils import extract_config_mace_model

    if type(module).__name__ != "ScaleShiftMACE":
        raise MLFFError(f"only mace-torch ScaleShiftMACE models can be wrapped, got {type(module).__name__}")
    c = extract_config_mace_model(module)
    if c.get("embedding_specs"):
        raise MLFFError("MACE models with extra embeddings (embedding_specs) are not supported")
    zs = [int(z) for z in c["atomic_numbers"]]
    e0 = np.asarray(c["atomic_energies"], dtype=np.float64).reshape(len(c["heads"]), len(zs))
    return model_config(dict(
        species=[chemical_symbols[z] for z in zs], r_max=float(c["r_max"]), num_bessel=int(c["num_bessel"]),
        num_polynomial_cutoff=int(c["num_polynomial_cutoff"]), max_ell=int(c["max_ell"]),
        hidden_irreps=str(c["hidden_irreps"]), MLP_irreps=str(c["MLP_irreps"]),
        edge_irreps=str(c["edge_irreps"]) if c.get("edge_irreps") else None,
        num_interactions=int(c["num_interactions"]), correlation=int(c["correlation"]),
        interaction=_name_in(mm.interaction_classes, c["interaction_cls"]),
        interaction_first=_name_in(mm.interaction_classes, c["interaction_cls_first"]),
        readout=_name_in(mm.readout_classes, c["readout_cls"]), gate=_name_in(mm.gate_dict, c["gate"]),
        radial_MLP=[int(x) for x in c["radial_MLP"]], radial_type=c["radial_type"],
        distance_transform=str(c["distance_transform"] or "None"), avg_num_neighbors=float(c["avg_num_neighbors"]),
        E0s=e0.tolist() if len(e0) > 1 else {chemical_symbols[z]: float(v) for z, v in zip(zs, e0[0])}, atomic_inter_scale=_plain(c["atomic_inter_scale"]),
        atomic_inter_shift=_plain(c["atomic_inter_shift"]), heads=list(c["heads"]),
        pair_repulsion=bool(c["pair_repulsion"]), apply_cutoff=bool(c["apply_cutoff"]),
        use_reduced_cg=bool(c["use_reduced_cg"]), use_so3=bool(c["use_so3"]),
        use_agnostic_product=bool(c["use_agnostic_product"]), use_last_readout_only=bool(c["use_last_readout_only"]),
        use_embedding_readout=bool(c["use_embedding_readout"]), use_edge_irreps_first=bool(c["use_edge_irreps_first"]),
    ))
