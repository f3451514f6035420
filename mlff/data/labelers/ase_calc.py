"""Labels from any ASE calculator (ORCA, CP2K, GPAW, VASP, EMT in tests, ...) behind the labeller interface.

The user builds the calculator, one per structure, so that charge and multiplicity (``atoms.info``) can
be passed on in whatever way that code wants. Exceptions raised by the calculator (``CalculationFailed``,
SCF errors, a crashed subprocess, ...) and non-finite results become recorded failures, never data.
"""

from __future__ import annotations

import json
import time
from typing import Callable

import numpy as np

from mlff.data.labelers.base import LabelResult
from mlff.errors import MLFFError

__all__ = ["ASELabeler", "LEVEL_KEYS"]

LEVEL_KEYS = ("method", "functional", "basis", "dispersion", "solvent", "code", "code_version")


class ASELabeler:
    """Wrap ``calculator_factory(atoms) -> ase Calculator``; ``level`` is the provenance to record.

    ``level`` should name at least the method and code (e.g. ``{"method": "DFT", "functional": "b3lyp",
    "code": "orca", "code_version": "6.0"}``); missing standard keys are recorded as "".
    ``forces=False`` asks for the energy only.
    """

    def __init__(self, calculator_factory: Callable, *, name: str = "ase", level: dict, forces: bool = True):
        if not callable(calculator_factory):
            raise MLFFError(f"calculator_factory must be callable (atoms -> ASE calculator), "
                            f"got {calculator_factory!r}")
        if not isinstance(level, dict):
            raise MLFFError(f"level must be a dict such as {{'method': 'DFT', 'code': 'orca'}}, got {level!r}")
        try:
            json.dumps(level)
        except (TypeError, ValueError) as err:
            raise MLFFError(f"level must be JSON-serialisable ({err})") from None
        self.calculator_factory, self.name, self.forces = calculator_factory, str(name), bool(forces)
        self._level = {**{key: "" for key in LEVEL_KEYS}, **level}

    def __repr__(self) -> str:
        return f"ASELabeler(name={self.name!r}, level={self._level!r})"

    def level(self) -> dict:
        """The level dict given, with the standard keys that were missing set to ""."""
        return dict(self._level)

    def compute(self, atoms) -> LabelResult:
        """Energy (eV) and forces (eV/Å) of a copy of ``atoms``; calculator errors returned as failures."""
        start = time.perf_counter()
        work = atoms.copy()
        work.calc = self.calculator_factory(work)

        def failed(reason: str) -> LabelResult:
            return LabelResult(None, None, False, reason, time.perf_counter() - start)

        try:
            energy_eV = float(work.get_potential_energy())
            forces_eV_A = np.array(work.get_forces(), dtype=np.float64) if self.forces else None
        except Exception as err:  # the calculator is foreign code: any exception is this structure's failure
            lines = str(err).strip().splitlines()
            return failed(f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": "))
        if not np.isfinite(energy_eV):
            return failed(f"energy is not finite ({energy_eV})")
        if forces_eV_A is not None and (forces_eV_A.shape != (len(atoms), 3) or not np.all(np.isfinite(forces_eV_A))):
            return failed(f"forces are not finite or have shape {forces_eV_A.shape}")
        return LabelResult(energy_eV, forces_eV_A, True, "", time.perf_counter() - start)
