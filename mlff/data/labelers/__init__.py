"""Labelling backends behind one interface: PySCF (CPU), GPU4PySCF (GPU), GFN2-xTB (tblite) and any ASE calculator."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from mlff.data.labelers.ase_calc import ASELabeler
from mlff.data.labelers.base import Labeler, LabelResult, charge_and_multiplicity
from mlff.data.labelers.pyscf import PySCFLabeler
from mlff.data.labelers.xtb import XTBLabeler
from mlff.errors import MLFFError

__all__ = ["ASELabeler", "LabelResult", "Labeler", "PySCFLabeler", "XTBLabeler", "charge_and_multiplicity",
           "check_labeler", "check_structures", "make_labeler"]

_BACKENDS = ("pyscf", "gpu4pyscf", "xtb", "ase")


def _reject_unknown(spec: dict, allowed, backend: str) -> None:
    for key in spec:
        if key not in allowed:
            raise MLFFError(f"unknown key {key!r} in the {backend} labeller spec; expected some of "
                            f"{', '.join(sorted(allowed))}")


def make_labeler(spec: dict) -> Labeler:
    """A labeller from a plain dict, e.g. ``{"backend": "pyscf", "functional": "b3lyp", "basis": "def2-svp"}``.

    "pyscf" (CPU) and "gpu4pyscf" (GPU) take ``PySCFLabeler``'s keyword arguments (but not ``device``);
    "xtb" takes ``solvent_eps`` (None: gas phase) and ``forces``;
    "ase" takes only ``{"calculator": "emt"}`` (build other ASE calculators in Python with ``ASELabeler``).
    """
    if not isinstance(spec, dict):
        raise MLFFError(f"a labeller spec must be a dict with a 'backend' key, got {spec!r}")
    options = dict(spec)
    backend = options.pop("backend", None)
    if backend not in _BACKENDS:
        raise MLFFError(f"labeller backend must be one of {', '.join(_BACKENDS)}, got {backend!r}")
    if backend == "xtb":
        _reject_unknown(options, {"solvent_eps", "forces"}, backend)
        return XTBLabeler(**options)
    if backend == "ase":
        _reject_unknown(options, {"calculator"}, backend)
        if str(options.get("calculator", "")).lower() != "emt":
            raise MLFFError(f"the 'ase' spec supports only calculator 'emt', got {options.get('calculator')!r}; "
                            "wrap other ASE calculators with mlff.data.labelers.ASELabeler in Python")
        import ase
        from ase.calculators.emt import EMT

        return ASELabeler(lambda atoms: EMT(), name="ase-emt",
                          level={"method": "EMT", "code": "ase", "code_version": ase.__version__})
    _reject_unknown(options, set(inspect.signature(PySCFLabeler).parameters) - {"device"}, backend)
    return PySCFLabeler(**options, device="gpu" if backend == "gpu4pyscf" else "cpu")


def check_structures(labeler: Labeler, structures: Sequence) -> None:
    """``labeler.check(structures)`` where the backend has one (PySCF, GFN2-xTB): MLFFError, without running a
    calculation, for what would fail every label (an unknown basis or one without an element of the structures,
    an impossible charge or multiplicity, a missing code)."""
    check = getattr(labeler, "check", None)
    if callable(check):
        check(structures)


def check_labeler(spec: dict, structures: Sequence = ()) -> Labeler:
    """The labeller of ``spec`` (``make_labeler``: backend, keys, functional, dispersion, options), checked
    against ``structures`` by ``check_structures``; nothing is computed and nothing is written."""
    labeler = make_labeler(spec)
    check_structures(labeler, structures)
    return labeler
