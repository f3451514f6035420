"""A dataset card: counts per region of xi, energy and force distributions (plots), level, checksums."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mlff.data.levels import LEVEL_KEYS, describe_numerics, effective_numerics_of, level_of, levels_in
from mlff.data.store import Dataset
from mlff.provenance import provenance, sha256_file
from mlff.plotting import save_figure

__all__ = ["dataset_statistics", "write_card"]

REGIONS = {"reactant": "xi < -0.3 Å", "ts": "|xi| < 0.3 Å", "product": "xi > 0.3 Å"}


def _forces(dataset: Dataset) -> np.ndarray:
    """All force components of the labelled records (empty for a pool of geometries)."""
    from mlff.data.records import labels

    parts = [labels(r)["forces"].ravel() for r in dataset.read() if "forces" in labels(r)]
    return np.concatenate(parts) if parts else np.zeros(0)


def dataset_statistics(dataset: Dataset) -> dict:
    """Counts per tag and region, energy per atom and force statistics, and the level(s) of theory."""
    infos = dataset.infos()
    energy, n_atoms = dataset.column("energy"), dataset.column("n_atoms")
    forces = _forces(dataset)
    energy = energy[np.isfinite(energy)]
    xi = np.array([info.get("xi", np.nan) for info in infos], dtype=float)
    levels = [{**level, "numerics": describe_numerics(numerics), "records": count,
               "calibrated": _calibrated(infos, level, numerics)} for level, numerics, count in levels_in(infos)]
    return {"records": len(infos), "failures": dataset.count("failures"),
            "per_region": {r: int(sum(r in info.get("tags", []) for info in infos)) for r in REGIONS},
            "holdout_scan": int(sum("holdout-scan" in info.get("tags", []) for info in infos)),
            "atoms_per_record": sorted({int(n) for n in n_atoms}),
            "xi_A": [float(np.nanmin(xi)), float(np.nanmax(xi))] if np.isfinite(xi).any() else None,
            "energy_eV": [float(energy.min()), float(energy.max())] if len(energy) else None,
            "force_rms_eV_A": float(np.sqrt(np.mean(forces**2))) if len(forces) else None,
            "force_max_eV_A": float(np.abs(forces).max()) if len(forces) else None,
            "levels": levels, "checksum": dataset.checksum()}


def _calibrated(infos, level: dict, numerics: dict) -> list[dict]:
    """The records of (level, numerics) labelled at other settings and shifted there by a calibration: one entry
    per calibration, with how many records it shifted."""
    out: dict[str, dict] = {}
    for info in infos:
        prov = info.get("provenance", {})
        applied = prov.get("numerics_calibration")
        if isinstance(applied, dict) and level_of(prov) == level and effective_numerics_of(prov) == numerics:
            key = json.dumps(applied, sort_keys=True)
            out.setdefault(key, {**applied, "records": 0})["records"] += 1
    return list(out.values())


def _calibration_line(path: Path) -> str:
    from mlff.data.numerics import load_calibration

    cal = load_calibration(path)
    ratio = cal.cost_ratio()
    cost = "" if ratio is None else (f" Wall time per label {ratio:.2f}x the reference's (medians of the recorded "
                                     f"times, {len(cal.wall_s['numerics'])} and {len(cal.wall_s['reference'])} labels).")
    return f"- `{path.name}` (measured {cal.measured_utc[:10]}): {cal.summary()}.{cost}"


def _describe_levels(levels: list[dict]) -> str:
    parts = []
    for lv in levels:
        text = ", ".join(f"{k} {lv[k]}" for k in LEVEL_KEYS if lv.get(k))
        text += (f"; numerical settings: {lv['numerics']}" if lv["numerics"] != describe_numerics({}) else "") + \
            f" ({lv['records']} records)"
        for cal in lv["calibrated"]:
            changed = {k: v for k, v in cal["numerics"].items() if cal["reference"].get(k) != v}
            text += (f"; {cal['records']} of them labelled at {describe_numerics(changed)} and shifted by "
                     f"{-1e3 * cal['energy_shift_eV']:+.1f} meV to these settings (calibration "
                     f"{cal.get('file', '?')}: {cal['geometries']} geometries, relative energies within "
                     f"{cal['relative_energy_max_kcal_mol']:.3f} kcal/mol, forces {cal['force_rms_meV_A']:.1f} meV/Å RMS)")
        parts.append(text)
    return "; ".join(parts)


def _plots(datasets: dict[str, Dataset], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_xi, ax_e, ax_f) = plt.subplots(1, 3, figsize=(13, 3.8))
    clusters = {n: ds for n, ds in datasets.items() if ds.column("n_atoms").max() > 1}  # not isolated atoms
    xi = {n: np.array([i.get("xi", np.nan) for i in ds.infos()], dtype=float) for n, ds in clusters.items()}
    finite = np.concatenate([x[np.isfinite(x)] for x in xi.values()] or [np.zeros(0)])
    span = (min(-1.6, finite.min(initial=0.0)), max(1.6, finite.max(initial=0.0)))
    for name, ds in clusters.items():
        energy, n_atoms = ds.column("energy"), ds.column("n_atoms")
        ax_xi.hist(xi[name], bins=int(round((span[1] - span[0]) / 0.1)), range=span, alpha=0.6, label=name)
        labelled = np.isfinite(energy)
        if labelled.any():
            e = energy[labelled]
            ax_e.hist(1e3 * (e - e.min()) / n_atoms[labelled], bins=50, alpha=0.6, label=name)
            ax_f.hist(_forces(ds), bins=80, alpha=0.6, log=True, label=name)
    for ax, label in ((ax_xi, "xi = d(C-H) - d(H-C4) (Å)"), (ax_e, "(E - E_min) / atom (meV)"),
                      (ax_f, "force component (eV/Å)")):
        ax.set_xlabel(label)
        if ax.has_data():
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no DFT labels yet", ha="center", va="center", transform=ax.transAxes)
    ax_xi.axvspan(-0.3, 0.3, color="grey", alpha=0.15)
    ax_xi.set_ylabel("configurations")
    fig.tight_layout()
    save_figure(fig, path)


def write_card(datasets: dict[str, str | Path], out_dir: str | Path, *, recipe: dict | None = None) -> Path:
    """CARD.md, distributions.png and checksums.json for the named datasets, in ``out_dir``; a
    ``dft_speed.md`` already there (the measured DFT speed options) becomes a section of the card."""
    out_dir = Path(out_dir)
    opened = {name: Dataset(path) for name, path in datasets.items()}
    stats = {name: dataset_statistics(ds) for name, ds in opened.items()}
    _plots({n: ds for n, ds in opened.items() if len(ds)}, out_dir / "distributions.png")
    checksums = {Path(p).name: {"sha256_file": sha256_file(p), "records_checksum": stats[n]["checksum"]}
                 for n, p in datasets.items()}
    (out_dir / "checksums.json").write_text(json.dumps(checksums, indent=2) + "\n")
    lines = ["# FDH active-site dataset card", "", "Written by `mlff.data.card.write_card`; numbers below are "
             "computed from the files. See README.md for the cluster model.", "",
             "| dataset | records | failures | reactant | ts | product | holdout scan | atoms | xi range (Å) | "
             "force RMS (eV/Å) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in stats.items():
        xi = "-" if s["xi_A"] is None else f"{s['xi_A'][0]:+.2f} .. {s['xi_A'][1]:+.2f}"
        rms = "-" if s["force_rms_eV_A"] is None else f"{s['force_rms_eV_A']:.3f}"
        r = s["per_region"]
        lines.append(f"| {name} | {s['records']} | {s['failures']} | {r['reactant']} | {r['ts']} | {r['product']} | "
                     f"{s['holdout_scan']} | {s['atoms_per_record']} | {xi} | {rms} |")
    lines += ["", "Regions: " + "; ".join(f"{k}: {v}" for k, v in REGIONS.items()), "",
              "## Level of theory", ""]
    for name, s in stats.items():
        lines += [f"- {name}: " + (_describe_levels(s["levels"]) or "unlabelled geometries (no energies or forces yet)")]
    if recipe:
        lines += ["", "## Sampling recipe", "", "```json", json.dumps(recipe, indent=2), "```"]
    calibrations = sorted(out_dir.glob("numerics_*.json"))  # written by `mlff data numerics --out`
    if calibrations:
        lines += ["", "## Numerical settings", "", "Labels at faster numerical settings join a dataset only through "
                  "a measured calibration within tolerance (`mlff data numerics`); their energies are shifted by it "
                  "to the dataset's settings, raw energy and shift kept in each record's provenance.", ""]
        lines += [_calibration_line(path) for path in calibrations]
    speed = out_dir / "dft_speed.md"  # written by benchmarks/dft_speed.py report --card
    if speed.exists():
        lines += ["", speed.read_text().strip()]
    lines += ["", "## Distributions", "", "![xi, energy and force distributions](distributions.png)", "",
              "## Checksums", "", "sha256 of each file and of its records' content hashes: `checksums.json`.",
              "", f"Card written {provenance()['created_utc']}."]
    card = out_dir / "CARD.md"
    card.write_text("\n".join(lines) + "\n")
    return card
