"""Level of theory and numerical settings of labels: one home for what "one level per dataset" means.

A label's *level of theory* is what the model should learn (method, functional, basis, dispersion, solvent
model and dielectric, code): two levels never mix in one dataset or one training head unless the user asks
(``allow_mixed_levels``). Its *numerical settings* (SCF tolerance, C-PCM surface grid, XC grid, density
fitting) only decide how closely the code reaches that level. Records at other numerical settings join a
dataset only through a measured calibration (``mlff.data.numerics``) whose deviations are within tolerance;
such records carry the calibration in their provenance and count, here, as labels at its reference settings.

Both are read from a record's ``info["provenance"]`` (what ``labeler.level()`` returned at labelling time).
Records labelled before a setting was recorded get PySCF's default of that time (``NUMERICS_DEFAULTS``).
"""

from __future__ import annotations

import json
from typing import Iterable

from mlff.errors import MLFFError

__all__ = ["LEVEL_KEYS", "NUMERICS_KEYS", "NUMERICS_DEFAULTS", "level_of", "numerics_of", "effective_numerics_of",
           "describe_level", "describe_numerics", "levels_in", "check_one_level"]

LEVEL_KEYS = ("method", "functional", "basis", "dispersion", "solvent", "code")  # one level per dataset
NUMERICS_KEYS = ("density_fit", "grids_level", "conv_tol_Ha", "pcm_lebedev_order")  # how closely it is reached
# settings a record may lack (labelled before they were recorded): PySCF's defaults then (pyscf 2.8-2.15)
NUMERICS_DEFAULTS = {"pcm_lebedev_order": 29}


def level_of(prov: dict) -> dict:
    """The level of theory in a provenance dict (or ``labeler.level()``), every key a string."""
    return {k: str(prov.get(k, "")) for k in LEVEL_KEYS}


def numerics_of(prov: dict) -> dict:
    """The numerical settings a provenance dict records (``NUMERICS_DEFAULTS`` filled in for a C-PCM DFT/HF
    record that predates them); {} for backends without any (xTB, EMT)."""
    out = {k: prov[k] for k in NUMERICS_KEYS if k in prov}
    if out and str(prov.get("solvent", "")).startswith("C-PCM"):
        for key, value in NUMERICS_DEFAULTS.items():
            out.setdefault(key, value)
    return out


def effective_numerics_of(prov: dict) -> dict:
    """The settings a record counts as: its calibration's reference when its energy was shifted to one."""
    applied = prov.get("numerics_calibration")
    if isinstance(applied, dict) and isinstance(applied.get("reference"), dict):
        return dict(applied["reference"])
    return numerics_of(prov)


def describe_level(level: dict) -> str:
    """E.g. "DFT/b3lyp/def2-svp/d3bj/C-PCM eps=4.0/pyscf"."""
    return "/".join(v for v in (level.get(k, "") for k in LEVEL_KEYS) if v) or "unnamed"


def describe_numerics(numerics: dict) -> str:
    """E.g. "conv_tol_Ha 1e-07, pcm_lebedev_order 17" ("none recorded" for {})."""
    return ", ".join(f"{k} {numerics[k]:g}" if isinstance(numerics[k], float) else f"{k} {numerics[k]}"
                     for k in NUMERICS_KEYS if k in numerics) or "none recorded"


def _key(level: dict, numerics: dict) -> str:
    return json.dumps([level, numerics], sort_keys=True, default=str)


def levels_in(infos: Iterable[dict]) -> list[tuple[dict, dict, int]]:
    """(level, effective numerics, record count) of every distinct pair among record infos with a provenance
    that names a level (records without one, e.g. unlabelled geometries, are left out), first seen first."""
    seen: dict[str, list] = {}
    for info in infos:
        prov = info.get("provenance")
        if not isinstance(prov, dict) or not any(k in prov for k in LEVEL_KEYS):
            continue
        level, numerics = level_of(prov), effective_numerics_of(prov)
        seen.setdefault(_key(level, numerics), [level, numerics, 0])[2] += 1
    return [tuple(item) for item in seen.values()]


def check_one_level(present: list[tuple[dict, dict, int]], level: dict, numerics: dict, where: str, *,
                    incoming: str = "this labeller's", allow_mixed_levels: bool = False,
                    compare_code: bool = True) -> None:
    """MLFFError unless labels at (``level``, ``numerics``: effective, i.e. after a calibration) may join
    ``where``, whose labels are ``present`` (``levels_in``): the same level of theory and numerical settings.
    ``compare_code=False``: labels of another code are welcome (GPU4PySCF's for PySCF's, compared by the caller)."""
    if allow_mixed_levels:
        return
    if not compare_code:
        level = {**level, "code": ""}
    for other_level, other_numerics, count in present:
        if not compare_code:
            other_level = {**other_level, "code": ""}
        if other_level != level:
            key = next(k for k in LEVEL_KEYS if other_level[k] != level[k])
            raise MLFFError(f"{where} holds labels at another level of theory ({describe_level(other_level)}: {key} "
                            f"{other_level[key] or 'none'}) than {incoming} ({describe_level(level)}: {key} "
                            f"{level[key] or 'none'}): label into another dataset, or pass allow_mixed_levels=True "
                            "(--allow-mixed-levels)")
        if other_numerics != numerics:
            raise MLFFError(f"{where} holds {count} label(s) at other numerical settings "
                            f"({describe_numerics(other_numerics)}) than {incoming} ({describe_numerics(numerics)}): "
                            "measure the difference on a few geometries (`mlff data numerics`) and pass the "
                            "calibration (--calibration), or label into another dataset")
