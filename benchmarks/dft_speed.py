"""Faster DFT labels on the CPU, measured: what each speed option costs in time and in accuracy.

    OMP_NUM_THREADS=1 python benchmarks/dft_speed.py run                   # resumable; one label at a time
    python benchmarks/dft_speed.py report --append-results --card data/fdh-cluster

Two neighbouring points of the held-out scan of the small cluster (default: records 7 and 6 of
data/fdh-cluster/dft_queue_gpu_small.h5, xi = 0.00 and -0.22 Å, RMSD 0.14 Å: the barrier top and its
neighbour) are labelled at the dataset's default level (B3LYP-D3(BJ)/def2-SVP, density fitting, C-PCM eps 4
with PySCF's Lebedev order 29, grid level 3, SCF tolerance 1e-9 Eh) and with one option changed at a time:
  lebedev17   the C-PCM surface with Lebedev order 17 (110 points per sphere instead of 302);
  conv_tol    SCF tolerance 1e-7 Eh instead of 1e-9 (PySCF's gradient tolerance follows as its square root);
  nearest     the SCF of B started from A's converged orbitals (scf_guess="nearest") instead of minao.
Reported per option: CPU seconds (this process, all threads: fairer than wall time on a shared machine) and
SCF cycles, against the default on the same geometry in the same run; the change in the relative energy
E(B) - E(A) (kcal/mol), in the absolute energies (meV), and in the forces (RMS and largest component, meV/Å).
The rule of issue 13: an option becomes the default only if it changes relative energies by < 0.1 kcal/mol
and forces by < 5 meV/Å (here: the largest component of either geometry).

The default labels are real data: they go, with the labeller's full provenance, into ``--keep`` (default
``out/dft_speed/holdout_dft.h5``), from which the held-out DFT scan is assembled (`mlff data label` skips them). When the
input records carry labels at the default level already, the default rerun is compared with them too.
Every label is appended to ``OUT/labels.jsonl`` (energy, forces, timings) as soon as it is done, and the
converged orbitals that the "nearest" run needs are saved beside it (not committed: 1 MB), so a killed run
resumes without repeating a label. OUT defaults to ``benchmarks/dft_speed/``, committed: the labels cost
~40 CPU-min each, and a session's scratch disk does not outlive it. A row restored from other records (the
first three, whose scratch file was lost) says so in "restored"; one without forces carries the comparison
that was measured against its default in "summary", and ``compare`` uses that as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mlff.data.label import label  # noqa: E402
from mlff.data.labelers import PySCFLabeler  # noqa: E402
from mlff.data.records import labels  # noqa: E402
from mlff.data.store import Dataset  # noqa: E402
from mlff.errors import MLFFError, script_exit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EV_PER_KCAL_MOL = 0.0433641  # 1 kcal/mol in eV
VARIANTS = {"default": {}, "lebedev17": {"pcm_lebedev_order": 17}, "conv_tol": {"conv_tol": 1e-7},
            "nearest": {"scf_guess": "nearest"}}
DESCRIBE = {"default": "default level", "lebedev17": "C-PCM Lebedev order 17 (default 29)",
            "conv_tol": "SCF tolerance 1e-7 Eh (default 1e-9)", "nearest": "SCF guess from the nearest geometry"}
# (variant, geometry) in the order they run: the cheap-to-judge pairs first, so a cut-off run is still useful
PLAN = [("default", "A"), ("nearest", "B"), ("default", "B"), ("lebedev17", "A"), ("lebedev17", "B"),
        ("conv_tol", "A"), ("conv_tol", "B")]
LIMITS = {"relative_kcal_mol": 0.1, "force_meV_A": 5.0}


def _done(out: Path) -> dict:
    path = out / "labels.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["variant"], r["geometry"]): r for r in rows}


def _orbitals_path(out: Path) -> Path:
    return out / "orbitals_A.npz"


def _labeler(variant: str, out: Path) -> PySCFLabeler:
    labeler = PySCFLabeler(**VARIANTS[variant])
    if variant == "nearest" and _orbitals_path(out).exists():  # A's orbitals from the default run of A
        saved = np.load(_orbitals_path(out))
        labeler.kept_orbitals = [(tuple(int(z) for z in saved["numbers"]), int(saved["charge"]),
                                  int(saved["multiplicity"]), saved["positions"],
                                  (saved["mo_coeff"], saved["mo_occ"]))]
    return labeler


def _save_orbitals(labeler: PySCFLabeler, out: Path) -> None:
    numbers, charge, multiplicity, positions, (mo_coeff, mo_occ) = labeler.kept_orbitals[-1]
    tmp = out / "orbitals_A.tmp.npz"
    np.savez(tmp, numbers=np.array(numbers), charge=charge, multiplicity=multiplicity, positions=positions,
             mo_coeff=mo_coeff, mo_occ=mo_occ)
    os.replace(tmp, _orbitals_path(out))


def _compute(labeler: PySCFLabeler, atoms, variant: str, keep: Path):
    """(energy eV, forces eV/Å, SCF info) of one label; default labels through `label` into ``keep``."""
    if variant != "default":
        result = labeler.compute(atoms)
        if not result.converged:
            raise MLFFError(f"{variant} failed: {result.reason}")
        return result.energy_eV, np.asarray(result.forces_eV_A), result.info
    summary = label([atoms], labeler, keep, progress=False)
    if summary.failed:
        raise MLFFError(f"the default label failed: see the failures table of {keep}")
    stored = Dataset(keep)
    hashes = list(stored.column("geometry_hash"))
    record = stored.read([hashes.index(stored.geometry_hash(atoms))])[0]
    return float(record.get_potential_energy()), labels(record)["forces"], record.info["provenance"]["details"]


def run(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keep = Path(args.keep or REPO / "out/dft_speed/holdout_dft.h5")
    records = Dataset(args.dataset).read(list(args.pair))
    geometries = dict(zip("AB", records))
    done = _done(out)
    for variant, name in PLAN:
        if (variant, name) in done:
            continue
        if variant == "nearest" and not _orbitals_path(out).exists():
            raise MLFFError("the 'nearest' label needs A's orbitals from the default label of A; "
                            f"{_orbitals_path(out)} is missing (delete {out} to start again)")
        atoms = geometries[name].copy()
        atoms.info = {k: v for k, v in geometries[name].info.items() if k not in ("provenance",)}
        # the A label of the default keeps its orbitals for B's "nearest" start
        labeler = _labeler("nearest" if (variant, name) == ("default", "A") else variant, out)
        print(f"{variant} {name}: {DESCRIBE[variant]} ...", flush=True)
        wall, cpu = time.perf_counter(), time.process_time()
        energy, forces, info = _compute(labeler, atoms, variant, keep)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if (variant, name) == ("default", "A"):
            _save_orbitals(labeler, out)
        row = {"variant": variant, "geometry": name, "record": int(args.pair["AB".index(name)]),
               "energy_eV": energy, "forces_eV_A": np.asarray(forces).tolist(),
               "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "scf_cycles": info.get("scf_cycles"),
               "scf_guess": info.get("scf_guess"), "threads": os.environ.get("OMP_NUM_THREADS", "all"),
               "level": labeler.level()}
        with (out / "labels.jsonl").open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(f"  {row['cpu_s']:.0f} CPU-s, {row['wall_s']:.0f} s wall, {row['scf_cycles']} SCF cycles", flush=True)


def compare(done: dict, seed: dict) -> dict:
    """Per option: time and cycles against the default, and the changes in energies and forces."""
    default = {g: done[("default", g)] for g in "AB" if ("default", g) in done}
    rows = {}
    for variant in VARIANTS:
        if variant == "default":  # the rerun against the stored labels
            pairs = [(default[g], seed[g]) for g in default if g in seed]
        else:
            pairs = [(done[(variant, g)], default[g]) for g in default if (variant, g) in done]
        if not pairs:
            continue
        if "summary" in pairs[0][0]:  # a restored row: the comparison measured when its label was made
            rows[variant] = _from_summary(variant, [a for a, _ in pairs], [b for _, b in pairs])
            continue
        dforces = np.concatenate([np.subtract(a["forces_eV_A"], b["forces_eV_A"]).ravel() for a, b in pairs])
        entry = {"geometries": [a["geometry"] for a, _ in pairs],
                 "energy_meV_max": 1e3 * max(abs(a["energy_eV"] - b["energy_eV"]) for a, b in pairs),
                 "force_rms_meV_A": 1e3 * float(np.sqrt(np.mean(dforces ** 2))),
                 "force_max_meV_A": 1e3 * float(np.abs(dforces).max())}
        if variant != "default":
            entry["cpu_ratio"] = sum(a["cpu_s"] for a, _ in pairs) / sum(b["cpu_s"] for _, b in pairs)
            entry["cycles"] = [f"{a['scf_cycles']} vs {b['scf_cycles']}" for a, b in pairs]
        if len(pairs) == 2 and variant != "nearest":
            (a, da), (b, db) = pairs
            entry["relative_kcal_mol"] = abs((b["energy_eV"] - a["energy_eV"]) - (db["energy_eV"] - da["energy_eV"])) \
                / EV_PER_KCAL_MOL
        elif variant == "nearest":
            entry["relative_kcal_mol"] = entry["energy_meV_max"] / 1e3 / EV_PER_KCAL_MOL  # A is the default itself
        if variant != "default" and "relative_kcal_mol" in entry:
            entry["within_limits"] = bool(entry["relative_kcal_mol"] < LIMITS["relative_kcal_mol"]
                                          and entry["force_max_meV_A"] < LIMITS["force_meV_A"])
        rows[variant] = entry
    return rows


def _from_summary(variant: str, rows: list, defaults: list) -> dict:
    """The entry of ``compare`` for rows restored without forces (one geometry: 'nearest' on B)."""
    if len(rows) != 1 or variant != "nearest":
        raise MLFFError(f"restored {variant} rows without forces are only understood for 'nearest' on one geometry")
    (row,), (default,) = rows, defaults
    entry = {"geometries": [row["geometry"]], **row["summary"], "cpu_ratio": row["cpu_s"] / default["cpu_s"],
             "cycles": [f"{row['scf_cycles']} vs {default['scf_cycles']}"], "restored": row["restored"]}
    entry["relative_kcal_mol"] = entry["energy_meV_max"] / 1e3 / EV_PER_KCAL_MOL
    entry["within_limits"] = bool(entry["relative_kcal_mol"] < LIMITS["relative_kcal_mol"]
                                  and entry["force_max_meV_A"] < LIMITS["force_meV_A"])
    return entry


def _table(rows: dict, done: dict) -> str:
    default_cpu = {g: done[("default", g)]["cpu_s"] for g in "AB" if ("default", g) in done}
    lines = ["| option | geometries | CPU time vs default | SCF cycles (option vs default) | d relative E (kcal/mol) | "
             "max d E (meV) | d F RMS / max (meV/Å) | within 0.1 kcal/mol and 5 meV/Å |", "|---" * 8 + "|"]
    for variant, r in rows.items():
        if variant == "default":
            cpu = ", ".join(f"{g}: {default_cpu[g]:.0f} CPU-s" for g in r["geometries"])
            lines.append(f"| default rerun vs the stored seed labels | {', '.join(r['geometries'])} | {cpu} | "
                         f"{', '.join(str(done[('default', g)]['scf_cycles']) for g in r['geometries'])} | - | "
                         f"{r['energy_meV_max']:.3g} | {r['force_rms_meV_A']:.2g} / {r['force_max_meV_A']:.2g} | - |")
            continue
        rel = f"{r['relative_kcal_mol']:.3g}" if "relative_kcal_mol" in r else "-"
        verdict = {True: "yes", False: "no"}.get(r.get("within_limits"), "-")
        lines.append(f"| {DESCRIBE[variant]} | {', '.join(r['geometries'])} | {r['cpu_ratio']:.2f}x | "
                     f"{'; '.join(r['cycles'])} | {rel} | {r['energy_meV_max']:.3g} | "
                     f"{r['force_rms_meV_A']:.2g} / {r['force_max_meV_A']:.2g} | {verdict} |")
    return "\n".join(lines)


def report(args) -> None:
    out = Path(args.out)
    done = _done(out)
    if ("default", "A") not in done:
        raise MLFFError(f"nothing measured in {out} yet: run `python benchmarks/dft_speed.py run` first")
    pair = [done[k]["record"] for k in (("default", "A"), ("default", "B")) if k in done]
    seeds = Dataset(args.dataset).read(pair)
    seed = {g: {"energy_eV": float(a.get_potential_energy()), "forces_eV_A": labels(a)["forces"]}
            for g, a in zip("AB", seeds) if "forces" in labels(a)}  # stored labels to compare the rerun with
    rows = compare(done, seed)
    table = _table(rows, done)
    threads = sorted({r["threads"] for r in done.values()})
    shown = Path(args.dataset).resolve()
    shown = shown.relative_to(REPO) if shown.is_relative_to(REPO) else shown
    notes = (f"Geometries: records {pair} of `{shown}` (A, B). Labels: {len(done)} of {len(PLAN)} planned; "
             f"{'/'.join(threads)} OpenMP thread(s), PySCF {done[('default', 'A')]['level']['code_version']}. "
             "'nearest' is judged on B alone (A is its start), and its relative-energy column is its change of "
             "E(B). The default level changes only for an option inside both limits.")
    restored = [f"{v} {g}" for (v, g), r in done.items() if "restored" in r]
    if restored:
        notes += (f" Rows {', '.join(restored)} were restored from committed records after the session's scratch file "
                  "was lost (labels.jsonl says from what); the others were measured into benchmarks/dft_speed/. "
                  "CPU-time ratios against a restored default compare labels of different sessions, each on a 2-core "
                  "machine shared with other jobs: read them as rough; the SCF cycle counts compare exactly.")
    print(table + "\n\n" + notes)
    (out / "comparison.json").write_text(json.dumps(rows, indent=2) + "\n")
    if args.card:
        text = ("## DFT speed options, measured\n\nWritten by `benchmarks/dft_speed.py report`; the default level "
                "of the DFT datasets stays as above unless an option is inside both limits.\n\n"
                f"{table}\n\n{notes}\n")
        (Path(args.card) / "dft_speed.md").write_text(text)
        print(f"wrote {Path(args.card) / 'dft_speed.md'} (included by the dataset card)")
    if args.append_results:
        from _common import append_results

        append_results("DFT labels on the CPU: speed options against the default level", table, notes)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("run", "report"):
        q = sub.add_parser(name)
        q.add_argument("--dataset", default=str(REPO / "data/fdh-cluster/dft_queue_gpu_small.h5"))
        q.add_argument("--out", default=str(REPO / "benchmarks/dft_speed"))
        if name == "run":
            q.add_argument("--pair", type=int, nargs=2, default=(7, 6), metavar=("A", "B"),
                           help="record indices of the two geometries")
            q.add_argument("--keep", help="dataset for the default labels (default out/dft_speed/holdout_dft.h5)")
        else:
            q.add_argument("--card", help="write dft_speed.md into this dataset folder (its card includes it)")
            q.add_argument("--append-results", action="store_true")
    args = p.parse_args(argv)
    return script_exit("dft_speed", run if args.command == "run" else report, args)


if __name__ == "__main__":
    sys.exit(main())
