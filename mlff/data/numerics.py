"""Numerical settings as a measured calibration: faster labels that count as labels at the reference settings.

Numerical settings (SCF tolerance, the C-PCM surface grid, ...) are not the level of theory, but they move the
answer a little. ``measure`` compares labels of the same geometries at the reference settings and at others and
writes down by how much: the total-energy shift (mean, spread), the relative energies once that shift is removed
(the largest deviation of one geometry's shift from the mean), and the forces (RMS and largest component). A
calibration ``within`` its tolerance (a tenth of the model's target errors by default) lets labels at the other
settings join a dataset at the reference ones: ``apply`` shifts their energy by the measured mean so that the
constant offset is never left to the model, and records the raw energy, the shift and the calibration in the
record's provenance (``mlff.data.levels`` then counts it at the reference settings).

    cal = measure(default_records, fast_records)           # same geometries, matched by geometry hash
    cal.save("data/fdh-cluster/numerics_fast_small.json")
    label(pool, fast_labeller, "fdh_small.h5", calibration=cal)   # shifted on the way in, provenance kept
"""

from __future__ import annotations

import datetime
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.units import kcal, mol

from mlff.data.levels import describe_level, describe_numerics, effective_numerics_of, level_of, numerics_of
from mlff.data.records import geometry_hash, labels, make_record
from mlff.errors import MLFFError
from mlff.provenance import sha256_file

__all__ = ["NumericsCalibration", "TOLERANCE", "measure", "load_calibration"]

EV_TO_KCAL_MOL = mol / kcal
# the deviations that leave a label "at the same level": a tenth of the model targets (1 kcal/mol relative
# energies, 40 meV/Å force RMSE); the largest force component may move more (a few atoms near the cavity)
TOLERANCE = {"relative_energy_kcal_mol": 0.1, "force_rms_meV_A": 4.0, "force_max_meV_A": 25.0}


@dataclass
class NumericsCalibration:
    level: dict  # the level of theory both sides share (mlff.data.levels.LEVEL_KEYS)
    reference: dict  # the reference numerical settings (energies are shifted to these)
    numerics: dict  # the calibrated settings
    geometries: int  # geometries labelled at both
    xi_A: list  # their reaction coordinate (NaN where unknown)
    energy_shift_eV: float  # mean of E(numerics) - E(reference)
    energy_shift_std_eV: float  # its standard deviation over the geometries
    relative_energy_max_kcal_mol: float  # largest |shift_i - mean|: how far relative energies move
    force_rms_meV_A: float
    force_max_meV_A: float
    wall_s: dict = field(default_factory=dict)  # {"reference": [...], "numerics": [...]} from provenance
    tolerance: dict = field(default_factory=lambda: dict(TOLERANCE))
    sources: list = field(default_factory=list)  # files measured from, with sha256
    measured_utc: str = ""
    path: str | None = None  # where it was loaded from (not saved)

    def within(self) -> bool:
        """Whether every measured deviation is inside ``tolerance``."""
        return not self.exceeded()

    def exceeded(self) -> list[str]:
        t = self.tolerance
        out = []
        for name, value, limit, unit in (
                ("relative energies", self.relative_energy_max_kcal_mol, t["relative_energy_kcal_mol"], "kcal/mol"),
                ("force RMS", self.force_rms_meV_A, t["force_rms_meV_A"], "meV/Å"),
                ("largest force component", self.force_max_meV_A, t["force_max_meV_A"], "meV/Å")):
            if not value <= limit:
                out.append(f"{name} {value:.3g} {unit} > {limit:g}")
        return out

    def summary(self) -> str:
        """One paragraph: what was compared with what, on how many geometries, and by how much they differ."""
        xi = [x for x in self.xi_A if np.isfinite(x)]
        span = f", xi {min(xi):+.2f} to {max(xi):+.2f} Å" if xi else ""
        verdict = "within tolerance: one level" if self.within() else f"OUTSIDE tolerance ({'; '.join(self.exceeded())})"
        changed = [k for k in self.numerics if self.numerics.get(k) != self.reference.get(k)]
        new = describe_numerics({k: self.numerics[k] for k in changed})
        ref = describe_numerics({k: self.reference[k] for k in changed if k in self.reference})
        return (f"{new} against {ref} ({describe_level(self.level)}), {self.geometries} geometries{span}: total energy shifted by "
                f"{1e3 * self.energy_shift_eV:+.1f} ± {1e3 * self.energy_shift_std_eV:.1f} meV, relative energies "
                f"within {self.relative_energy_max_kcal_mol:.3f} kcal/mol, forces {self.force_rms_meV_A:.1f} meV/Å "
                f"RMS ({self.force_max_meV_A:.1f} max); {verdict}")

    def cost_ratio(self) -> float | None:
        """Median wall time at the calibrated settings over that at the reference (None if not recorded)."""
        ref, new = self.wall_s.get("reference", []), self.wall_s.get("numerics", [])
        return float(np.median(new) / np.median(ref)) if ref and new and np.median(ref) > 0 else None

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("path")
        return out

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, default=_builtin) + "\n")
        tmp.replace(path)
        return path

    def reference_of(self) -> dict:
        """What a record shifted by this calibration records in its provenance."""
        return {"reference": dict(self.reference), "numerics": dict(self.numerics),
                "energy_shift_eV": self.energy_shift_eV, "geometries": self.geometries,
                "relative_energy_max_kcal_mol": self.relative_energy_max_kcal_mol,
                "force_rms_meV_A": self.force_rms_meV_A, **({"file": Path(self.path).name} if self.path else {})}

    def check_usable(self, level: dict, numerics: dict, where: str) -> None:
        """MLFFError unless labels at (``level``, ``numerics``) are what this calibration measured, within tolerance."""
        if not self.within():
            raise MLFFError(f"{where}: the calibration {self.path or ''} is outside its tolerance "
                            f"({'; '.join(self.exceeded())}): these settings are not one level with the reference")
        if level != self.level:
            raise MLFFError(f"{where}: the calibration is for {describe_level(self.level)}, the labels are at "
                            f"{describe_level(level)}")
        if numerics != self.numerics:
            raise MLFFError(f"{where}: the calibration measured {describe_numerics(self.numerics)}, the labels are "
                            f"at {describe_numerics(numerics)}")

    def shift_if_calibrated(self, record: Atoms, where: str = "record") -> Atoms:
        """``apply`` for a record at the calibrated settings not yet shifted; any other record as it is."""
        prov = record.info.get("provenance", {})
        if "numerics_calibration" in prov or numerics_of(prov) != self.numerics:
            return record
        return self.apply(record, where)

    def apply(self, record: Atoms, where: str = "record") -> Atoms:
        """A copy of ``record`` (labelled at the calibrated settings) with its energy shifted to the reference
        settings; the raw energy, the shift and the calibration recorded in its provenance. Forces unchanged
        (their measured deviation is the calibration's force RMS)."""
        prov = dict(record.info.get("provenance", {}))
        if "numerics_calibration" in prov:
            raise MLFFError(f"{where}: its energy was shifted by a calibration already")
        self.check_usable(level_of(prov), numerics_of(prov), where)
        lab = labels(record)
        if "energy" not in lab:
            raise MLFFError(f"{where}: no energy to shift")
        prov.update(energy_raw_eV=lab["energy"], numerics_calibration=self.reference_of())
        shifted = make_record(record, energy=lab["energy"] - self.energy_shift_eV, forces=lab.get("forces"),
                              stress=lab.get("stress"))
        shifted.info["provenance"] = prov
        return shifted


def _builtin(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)


def _one(values: list[dict], what: str) -> dict:
    distinct = {json.dumps(v, sort_keys=True, default=str) for v in values}
    if len(distinct) != 1:
        raise MLFFError(f"measure: the {what} records are at {len(distinct)} different settings; give one setting a side")
    return values[0]


def measure(reference: Sequence[Atoms], other: Sequence[Atoms], *, tolerance: dict | None = None,
            sources: Sequence[str | Path] = ()) -> NumericsCalibration:
    """The calibration of ``other``'s numerical settings against ``reference``'s, from the geometries both label
    (matched by geometry hash; at least 2, and one level of theory on both sides)."""
    by_hash = {geometry_hash(r): r for r in reference}
    pairs = [(by_hash[geometry_hash(o)], o) for o in other if geometry_hash(o) in by_hash]
    if len(pairs) < 2:
        raise MLFFError(f"measure: {len(pairs)} geometries are labelled on both sides; at least 2 are needed "
                        "(label geometries of the reference dataset again at the new settings)")
    ref_prov = [r.info.get("provenance", {}) for r, _ in pairs]
    new_prov = [o.info.get("provenance", {}) for _, o in pairs]
    level = _one([level_of(p) for p in ref_prov + new_prov], "reference and other")
    ref_num = _one([effective_numerics_of(p) for p in ref_prov], "reference")
    new_num = _one([numerics_of(p) for p in new_prov], "other")
    if ref_num == new_num:
        raise MLFFError(f"measure: both sides are at the same settings ({describe_numerics(ref_num)})")
    shifts, dforces = [], []
    for r, o in pairs:
        lr, lo = labels(r), labels(o)
        if "energy" not in lr or "energy" not in lo or "forces" not in lr or "forces" not in lo:
            raise MLFFError(f"measure: geometry {r.info.get('source', '?')!r} needs energy and forces on both sides")
        shifts.append(lo["energy"] - lr["energy"])
        dforces.append((lo["forces"] - lr["forces"]).ravel())
    shifts, dforces = np.array(shifts), np.concatenate(dforces)
    mean = float(shifts.mean())
    return NumericsCalibration(
        level=level, reference=ref_num, numerics=new_num, geometries=len(pairs),
        xi_A=[float(r.info.get("xi", np.nan)) for r, _ in pairs], energy_shift_eV=mean,
        energy_shift_std_eV=float(shifts.std(ddof=1)),
        relative_energy_max_kcal_mol=float(np.abs(shifts - mean).max() * EV_TO_KCAL_MOL),
        force_rms_meV_A=float(1e3 * np.sqrt(np.mean(dforces**2))), force_max_meV_A=float(1e3 * np.abs(dforces).max()),
        wall_s={"reference": [float(p["wall_s"]) for p in ref_prov if "wall_s" in p],
                "numerics": [float(p["wall_s"]) for p in new_prov if "wall_s" in p]},
        tolerance={**TOLERANCE, **(tolerance or {})},
        sources=[{"path": str(s), "sha256": sha256_file(s)} for s in sources],
        measured_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))


def load_calibration(path: str | Path) -> NumericsCalibration:
    """A calibration written by ``NumericsCalibration.save`` (``mlff data numerics``); MLFFError naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        cal = NumericsCalibration(**data)
    except FileNotFoundError:
        raise MLFFError(f"no numerics calibration at {path}") from None
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as err:
        raise MLFFError(f"{path}: not a numerics calibration ({str(err).splitlines()[0]})") from None
    cal.path = str(path)
    return cal
