"""One configuration as mlff stores it: ASE Atoms plus labels, charge, multiplicity and provenance.

A record is an ``ase.Atoms`` whose labels (energy eV, forces eV/Å, stress eV/Å³ in Voigt order) sit in a
``SinglePointCalculator``; ``atoms.info`` holds ``charge`` (e), ``multiplicity``, optional ``tags`` (list
of str), ``provenance`` (dict) and any JSON-serialisable extras (``xi``, ``source``, ...). Fixed atoms
(``FixAtoms``) are kept. Everything here is checked on the way in (``validate``): bad records are refused
with a message naming where they came from.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.data import chemical_symbols
from ase.stress import full_3x3_to_voigt_6_stress

from mlff.errors import MLFFError
from mlff.geometry import MIN_DISTANCE_A, geometry_problem

__all__ = ["labels", "make_record", "geometry_hash", "content_hash", "geometry_digest", "content_digest", "voigt",
           "validate", "json_info"]


def labels(atoms: Atoms) -> dict:
    """The labels of ``atoms`` present in its calculator's results: energy, forces, stress (any subset)."""
    results = getattr(atoms.calc, "results", {}) or {}
    out = {}
    for key in ("energy", "forces", "stress"):
        if results.get(key) is not None:
            out[key] = np.asarray(results[key], dtype=np.float64)
    if "energy" in out:
        out["energy"] = float(out["energy"])
    return out


def make_record(atoms: Atoms, energy=None, forces=None, stress=None, **info) -> Atoms:
    """A copy of ``atoms`` carrying the given labels and extra info (constraints kept)."""
    record = atoms.copy()
    record.info.update(info)
    results = {k: v for k, v in (("energy", energy), ("forces", forces), ("stress", stress)) if v is not None}
    if results:
        record.calc = SinglePointCalculator(record, **results)
    return record


def fixed_indices(atoms: Atoms) -> list[int]:
    fixed = set(int(i) for i in atoms.info.get("fixed", []))
    for constraint in atoms.constraints:
        if isinstance(constraint, FixAtoms):
            fixed.update(int(i) for i in constraint.index)
    return sorted(fixed)


def json_info(atoms: Atoms) -> dict:
    """``atoms.info`` without charge/multiplicity (stored as columns), with fixed atoms; JSON-checked."""
    info = {k: v for k, v in atoms.info.items() if k not in ("charge", "multiplicity")}
    fixed = fixed_indices(atoms)
    if fixed:
        info["fixed"] = fixed
    try:
        return json.loads(json.dumps(info, default=_to_builtin))
    except TypeError as err:
        raise MLFFError(f"atoms.info holds something that is not JSON-serialisable: {err}") from None


def _to_builtin(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} ({value!r:.60})")


def _digest(parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(np.ascontiguousarray(part).tobytes())
    return digest.hexdigest()


def geometry_digest(numbers, positions, cell, pbc, charge: int, multiplicity: int) -> str:
    """sha256 of a geometry given as arrays (numbers [N], positions [N,3] Å, cell [3,3] Å, pbc [3])."""
    return _digest([np.asarray(numbers, np.int64), np.asarray(positions, np.float64),
                    np.asarray(cell, np.float64), np.asarray(pbc, bool),
                    np.array([charge, multiplicity], np.int64)])


def geometry_hash(atoms: Atoms) -> str:
    """sha256 of what defines the calculation: numbers, positions, cell, pbc, charge, multiplicity."""
    return geometry_digest(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc,
                           atoms.info.get("charge", 0), atoms.info.get("multiplicity", 1))


def content_digest(geometry: str, energy, forces, stress, info_json: str) -> str:
    """sha256 of a geometry hash, the labels present (None: absent; stress in Voigt order) and the info JSON."""
    parts = [np.frombuffer(geometry.encode(), np.uint8)]
    parts += [np.asarray(v, np.float64) for v in (energy, forces, stress) if v is not None]
    parts.append(np.frombuffer(info_json.encode(), np.uint8))
    return _digest(parts)


def voigt(stress) -> np.ndarray:
    """Stress as 6 Voigt components (xx, yy, zz, yz, xz, xy), from 6 or 3x3."""
    stress = np.asarray(stress, np.float64)
    return full_3x3_to_voigt_6_stress(stress) if stress.shape == (3, 3) else stress


def content_hash(atoms: Atoms) -> str:
    """sha256 of the geometry hash, the labels and the info (provenance included)."""
    lab = labels(atoms)
    return content_digest(geometry_hash(atoms), lab.get("energy"), lab.get("forces"),
                          voigt(lab["stress"]) if "stress" in lab else None,
                          json.dumps(json_info(atoms), sort_keys=True))


def validate(atoms: Atoms, where: str, *, require=("energy", "forces"), elements=None,
             min_distance_A: float = MIN_DISTANCE_A) -> None:
    """Raise ``MLFFError("<where>: <what is wrong>")`` unless ``atoms`` is a sound record."""
    def fail(what):
        raise MLFFError(f"{where}: {what}")

    n = len(atoms)
    problem = geometry_problem(atoms.positions, atoms.cell.array, atoms.pbc, min_distance_A=min_distance_A)
    if problem is not None:  # empty, non-finite, a periodic cell without volume, overlapping atoms
        fail(problem)
    bad = [int(z) for z in atoms.numbers if not 0 < z < len(chemical_symbols)]
    if bad:
        fail(f"unknown atomic number(s) {sorted(set(bad))}")
    if elements is not None:
        unknown = sorted(set(atoms.get_chemical_symbols()) - set(elements))
        if unknown:
            fail(f"element(s) {', '.join(unknown)} not in the allowed set {sorted(elements)}")
    lab = labels(atoms)
    for key in require:
        if key not in lab:
            fail(f"no {key} (expected a labelled configuration)")
    if "energy" in lab and not np.isfinite(lab["energy"]):
        fail(f"energy is {lab['energy']}")
    if "forces" in lab:
        if lab["forces"].shape != (n, 3):
            fail(f"forces have shape {lab['forces'].shape}, expected ({n}, 3)")
        if not np.isfinite(lab["forces"]).all():
            fail("forces contain NaN or inf")
    if "stress" in lab and (lab["stress"].shape not in ((6,), (3, 3)) or not np.isfinite(lab["stress"]).all()):
        fail(f"stress must be 6 (Voigt) or 3x3 finite numbers, got shape {lab['stress'].shape}")
