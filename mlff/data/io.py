"""Import and export: extxyz (configurable label keys), ASE databases, and any ASE-readable DFT output.

extxyz files from mace-torch and other codes keep labels under their own keys (``REF_energy``,
``DFT_forces``, ...); ``KeyMap`` says which. Files that ASE reads with a calculator attached (VASP OUTCAR,
ORCA, CP2K, Gaussian, FHI-aims outputs, extxyz with plain ``energy``/``forces``) need no keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms

from mlff.errors import MLFFError
from mlff.data.records import labels, make_record

__all__ = ["KeyMap", "read_structures", "write_extxyz", "write_db"]


@dataclass(frozen=True)
class KeyMap:
    """Names of the labels in a file: info keys for energy/stress/charge/multiplicity, an array key for forces."""

    energy: str = "REF_energy"
    forces: str = "REF_forces"
    stress: str = "REF_stress"
    charge: str = "charge"
    multiplicity: str = "multiplicity"


def _from_keys(atoms: Atoms, keys: KeyMap, where: str = "record") -> Atoms:
    """A record from ``atoms``: labels under ``keys`` first, else the attached calculator's results.
    A label or charge/multiplicity that is not a number is one error naming ``where`` and the key."""
    found = labels(atoms)
    info = {k: _maybe_json(v) for k, v in atoms.info.items() if k not in (keys.energy, keys.stress)}
    if keys.energy in atoms.info:
        found["energy"] = _number(atoms.info[keys.energy], keys.energy, where)
    if keys.stress in atoms.info:
        found["stress"] = _numbers(atoms.info[keys.stress], keys.stress, where)
    if keys.forces in atoms.arrays:
        found["forces"] = _numbers(atoms.arrays[keys.forces], keys.forces, where)
    bare = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc,
                 constraint=atoms.constraints)
    info["charge"] = _integer(info.pop(keys.charge, 0), keys.charge, where)
    info["multiplicity"] = _integer(info.pop(keys.multiplicity, 1), keys.multiplicity, where)
    if info["multiplicity"] < 1:
        raise MLFFError(f"{where}: {keys.multiplicity} = {info['multiplicity']} must be at least 1 (2S+1)")
    return make_record(bare, **found, **info)


def _number(value, key: str, where: str) -> float:
    if not isinstance(value, (bool, np.bool_)):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    raise MLFFError(f"{where}: {key} = {_shown(value)} is not a number")


def _integer(value, key: str, where: str) -> int:
    number = _number(value, key, where)
    if not (np.isfinite(number) and number.is_integer()):
        raise MLFFError(f"{where}: {key} = {_shown(value)} is not a whole number")
    return int(number)


def _numbers(value, key: str, where: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise MLFFError(f"{where}: {key} holds something that is not an array of numbers ({_shown(value)})") from None


def _shown(value) -> str:
    return repr(value.item() if isinstance(value, np.generic) else value)[:60]


def _maybe_json(value):
    """Nested info written to extxyz as a JSON string comes back as what it was."""
    import json

    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def read_structures(path: str | Path, *, keys: KeyMap | None = None, index: str = ":", format: str | None = None,
                    require=("energy", "forces"), elements=None) -> list[Atoms]:
    """Records from ``path``: an extxyz, an ASE database (``.db``), or any file ``ase.io.read`` understands.

    Every record is validated; the first bad one raises ``MLFFError("<file> record <k>: <what>")``.
    ``require=()`` reads unlabelled geometries (e.g. structures still to be labelled).
    """
    from mlff.data.records import validate

    path, keys = Path(path), keys or KeyMap()
    if not path.exists():
        raise MLFFError(f"no such file: {path}")
    try:
        if path.suffix == ".db" or format == "db":
            raw = _read_db(path)
        else:
            from ase.io import read

            raw = read(path, index=index, format=format)
            raw = raw if isinstance(raw, list) else [raw]
    except MLFFError:
        raise
    except Exception as err:  # noqa: BLE001 - ASE raises many kinds on unreadable input
        raise MLFFError(f"{path}: cannot read ({type(err).__name__}: {err})") from None
    records = [_from_keys(a, keys, f"{path} record {k}") for k, a in enumerate(raw)]
    for k, record in enumerate(records):
        validate(record, f"{path} record {k}", require=require, elements=elements)
    return records


def _read_db(path: Path) -> list[Atoms]:
    import ase.db

    out = []
    with ase.db.connect(path) as db:
        for row in db.select():
            atoms = row.toatoms(add_additional_information=True)
            extra = atoms.info.pop("key_value_pairs", {})
            data = atoms.info.pop("data", {})
            atoms.info.pop("unique_id", None)
            atoms.info.update(extra)
            atoms.info.update({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in data.items()})
            out.append(atoms)
    return out


def write_extxyz(path: str | Path, records: Sequence[Atoms], *, keys: KeyMap | None = None) -> None:
    """Write records as extxyz with labels under ``keys`` (the defaults are what mace-torch reads)."""
    from ase.io import write

    keys = keys or KeyMap()
    frames = []
    for record in records:
        lab = labels(record)
        frame = Atoms(numbers=record.numbers, positions=record.positions, cell=record.cell, pbc=record.pbc,
                      constraint=[c.copy() for c in record.constraints])
        info = dict(record.info)
        if isinstance(info.get("provenance"), dict) or isinstance(info.get("tags"), list):
            info = _flatten_for_extxyz(info)
        frame.info.update(info)
        frame.info[keys.charge] = int(record.info.get("charge", 0))
        frame.info[keys.multiplicity] = int(record.info.get("multiplicity", 1))
        if "energy" in lab:
            frame.info[keys.energy] = lab["energy"]
        if "stress" in lab:
            frame.info[keys.stress] = lab["stress"]
        if "forces" in lab:
            frame.arrays[keys.forces] = lab["forces"]
        frames.append(frame)
    write(path, frames, format="extxyz")


def _flatten_for_extxyz(info: dict) -> dict:
    """extxyz holds scalars, strings and flat arrays: nested provenance becomes a JSON string."""
    import json

    out = {}
    for key, value in info.items():
        if isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, str) for v in value)):
            out[key] = json.dumps(value, sort_keys=True)
        else:
            out[key] = value
    return out


def write_db(path: str | Path, records: Sequence[Atoms]) -> None:
    """Write records to an ASE database (labels as the row's calculator results, info as key-value/data)."""
    import ase.db

    with ase.db.connect(path, append=False) as db:
        for record in records:
            from ase.db.core import reserved_keys

            scalars = {k: v for k, v in record.info.items()
                       if isinstance(v, (int, float, str, bool, np.integer, np.floating)) and k.isidentifier()
                       and k not in reserved_keys and k not in ("charge", "multiplicity")}  # rows own "charge"
            data = {k: v for k, v in record.info.items() if k not in scalars}
            db.write(record, key_value_pairs=scalars, data=data)
