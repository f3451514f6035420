"""What every labelling backend returns and provides: one interface for PySCF, GPU4PySCF and ASE calculators."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

__all__ = ["LabelResult", "Labeler", "charge_and_multiplicity"]


@dataclass
class LabelResult:
    energy_eV: float | None  # total energy, eV (None when the calculation failed)
    forces_eV_A: np.ndarray | None  # [N,3] eV/Å (None when not computed or failed)
    converged: bool  # False: a failure, recorded with its reason, never kept as data
    reason: str = ""  # why it failed ("" when converged)
    wall_s: float = 0.0  # wall time of this calculation, s
    info: dict = field(default_factory=dict)  # JSON-serialisable extras (SCF cycles, <S^2>, ...)


class Labeler(Protocol):
    """A labelling backend. ``level()`` is recorded as provenance with every record it labels."""

    name: str

    def level(self) -> dict:
        """method, functional, basis, dispersion, solvent, code, code_version (strings; "" when n/a)."""

    def compute(self, atoms) -> LabelResult:
        """Energy and forces of ``atoms`` (charge and multiplicity from ``atoms.info``)."""

    # optional: ``check(structures) -> None`` raises MLFFError, without running a calculation, for what would
    # fail every label of ``structures`` (an unknown basis, a missing code); ``mlff.data.labelers.check_labeler``


def charge_and_multiplicity(atoms) -> tuple[int, int]:
    """Total charge (e) and spin multiplicity from ``atoms.info`` (defaults 0 and 1), checked for parity."""
    from mlff.errors import MLFFError

    charge = int(atoms.info.get("charge", 0))
    multiplicity = int(atoms.info.get("multiplicity", 1))
    electrons = int(np.sum(atoms.numbers)) - charge
    if multiplicity < 1 or (electrons + multiplicity - 1) % 2:
        raise MLFFError(f"charge {charge} and multiplicity {multiplicity} impossible for {atoms.get_chemical_formula()} "
                        f"({electrons} electrons)")
    return charge, multiplicity
