"""After a GPU labelling run: its rate, a CPU recomputation of a few labels, and the import into the shipped dataset.

    python workflows/gpu_label_check.py summary out/gpu/fdh_small_gpu.h5 [--wall-s 480] [--json rate.json]
    python workflows/gpu_label_check.py check out/gpu/fdh_small_gpu.h5 [--n 1]      # PySCF on this CPU, ~9 min/label
    python workflows/gpu_label_check.py import out/gpu/fdh_small_gpu.h5             # into data/fdh-cluster/fdh_small.h5

``check`` compares the GPU labels with CPU labels of the same geometries at the same level: first, for free,
those of the held-out scan (``--holdout``, fdh_holdout_small.h5: the GPU queue puts the scan first), then
``--n`` seeded random others that it recomputes with PySCF at the level recorded in their provenance, into a
resumable dataset (``--work``; run it again to go on). Tolerances: |dE| <= 1e-5 Eh and max |dF| <= 1e-4 eV/Å
by default (exit 1 when a pair is outside). ``import`` appends the GPU records whose geometry the dataset lacks,
provenance kept plus where they came from, and never a held-out geometry (those stay out of the training set);
it refuses unless the comparisons exist and all are inside the tolerances (``--force`` skips that). Then rebuild
the card and checksums (``workflows/fdh_dataset.py --stage card``).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from mlff.data import Dataset, label
from mlff.data.labelers import PySCFLabeler
from mlff.data.queue import compare_labels, import_labels, same_level
from mlff.data.records import geometry_hash
from mlff.errors import MLFFError

DATASET = Path(__file__).resolve().parents[1] / "data" / "fdh-cluster" / "fdh_small.h5"
HOLDOUT = DATASET.parent / "fdh_holdout_small.h5"


def rate(path: Path, wall_s: float | None = None) -> dict:
    """Labels, failures and labels per minute (first-call compilation included) of one labelling run."""
    ds = Dataset(path)
    walls = [info["provenance"]["wall_s"] for info in ds.infos()]
    failed = [info["provenance"].get("wall_s", 0.0) for info in ds.infos("failures")] if ds.count("failures") else []
    busy_s = float(sum(walls) + sum(failed))
    out = {"file": str(path), "labels": len(walls), "failures": len(failed), "label_s_sum": round(busy_s, 1),
           "first_label_s": round(walls[0], 1) if walls else None,
           "median_label_s": round(float(np.median(walls)), 2) if walls else None,
           "labels_per_min_busy": round(60 * len(walls) / busy_s, 2) if busy_s else None,
           "codes": sorted({info["provenance"].get("code_version", "?") for info in ds.infos()})}
    if wall_s:
        out.update(command_wall_s=round(wall_s, 1), labels_per_min_wall=round(60 * len(walls) / wall_s, 2))
    return out


def labeler_for(record, device: str = "cpu") -> PySCFLabeler:
    """A (GPU4)PySCF labeller at the level recorded in ``record``'s provenance."""
    prov = record.info["provenance"]
    solvent = prov["solvent"]
    eps = None if solvent == "gas" else float(solvent.split("eps=")[1])
    return PySCFLabeler(functional=prov["functional"] or None, basis=prov["basis"], dispersion=prov["dispersion"] or None,
                        solvent_eps=eps, density_fit=prov["density_fit"], grids_level=prov["grids_level"],
                        conv_tol=prov["conv_tol_Ha"], device=device)


def held_out(path: Path | None, like=None) -> list:
    """The held-out records of ``path`` (none when it is absent); only those at ``like``'s level when given."""
    if path is None or not Path(path).exists():
        return []
    return [r for r in Dataset(path).read() if like is None or same_level(r, like)]


def choose(records, n: int, seed: int, skip=()) -> list[int]:
    """A seeded random choice of ``n`` records whose geometry hash is not in ``skip``."""
    skip = set(skip)
    rest = [k for k, r in enumerate(records) if geometry_hash(r) not in skip]
    picked = np.random.default_rng(seed).choice(rest, size=min(n, len(rest)), replace=False)
    return sorted(int(k) for k in picked)


def check(args) -> int:
    records = Dataset(args.gpu).read()
    if not records:
        raise MLFFError(f"{args.gpu} holds no records to check")
    known = [geometry_hash(r) for r in held_out(args.holdout, records[0])]
    picked = [records[k] for k in choose(records, args.n, args.seed, skip=known)]
    if picked:
        summary = label(picked, labeler_for(picked[0]), args.work, time_limit_s=args.minutes and 60 * args.minutes)
        print(summary)
    return report(records, args.work, args.tol_e_ha, args.tol_f_ev_a, args.holdout)


def report(records, work: Path, tol_e_ha: float, tol_f_ev_a: float, holdout: Path | None = None) -> int:
    """Print each GPU-CPU pair (recomputed in ``work``, or held out at the same level); exit code 1 unless all pass."""
    cpu = (Dataset(work).read() if Path(work).exists() else []) + (held_out(holdout, records[0]) if records else [])
    diffs = compare_labels(records, cpu)
    for d in diffs:
        print(f"{'ok ' if d.ok(tol_e_ha, tol_f_ev_a) else 'BAD'} record {d.index:3d}  dE = {d.dE_Ha:+.2e} Eh  "
              f"max|dF| = {d.max_dF_eV_A:.2e} eV/Å  ({d.source})")
    bad = [d for d in diffs if not d.ok(tol_e_ha, tol_f_ev_a)]
    print(f"{len(diffs)} compared, {len(bad)} outside |dE| <= {tol_e_ha} Eh, max|dF| <= {tol_f_ev_a} eV/Å")
    return 1 if bad or not diffs else 0


def do_import(args) -> int:
    records = Dataset(args.gpu).read()
    if not args.force and report(records, args.work, args.tol_e_ha, args.tol_f_ev_a, args.holdout) != 0:
        print(f"not imported: run `check` first (its recomputations go to {args.work}), or pass --force")
        return 1
    held = {geometry_hash(r) for r in held_out(args.holdout)}
    held |= {geometry_hash(r) for r in records if "holdout-scan" in r.info.get("tags", [])}
    sha = hashlib.sha256(Path(args.gpu).read_bytes()).hexdigest()
    note = {"imported_from": Path(args.gpu).name, "imported_file_sha256": sha,
            "imported_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    dataset = Dataset(args.dataset)
    added = import_labels(dataset, records, note=note, exclude=held)
    kept_out = sum(geometry_hash(r) in held for r in records)
    print(f"{args.dataset}: {added} records added, {len(dataset)} in all; checksum {dataset.checksum()}; "
          f"{kept_out} held-out geometries not imported")
    print("now rebuild the card and checksums: python workflows/fdh_dataset.py --stage card")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="action", required=True)
    for name in ("summary", "check", "import"):
        s = sub.add_parser(name)
        s.add_argument("gpu", type=Path, help="the dataset the GPU run wrote")
        s.add_argument("--work", type=Path, default=Path("out/gpu_label_check.h5"),
                       help="CPU recomputations (resumable)")
        if name != "summary":
            s.add_argument("--holdout", type=Path, default=HOLDOUT,
                           help="CPU labels of held-out geometries: compared with the GPU's, never imported")
        s.add_argument("--tol-e-ha", type=float, default=1e-5)
        s.add_argument("--tol-f-ev-a", type=float, default=1e-4)
        if name == "summary":
            s.add_argument("--wall-s", type=float, help="the labelling command's wall time")
            s.add_argument("--json", type=Path, help="also write the summary here")
        if name == "check":
            s.add_argument("--n", type=int, default=1, help="CPU recomputations of GPU labels not held out")
            s.add_argument("--seed", type=int, default=0)
            s.add_argument("--minutes", type=float, help="stop cleanly before this wall time (run again to go on)")
        if name == "import":
            s.add_argument("--dataset", type=Path, default=DATASET)
            s.add_argument("--force", action="store_true", help="import without a passed check")
    args = p.parse_args(argv)
    try:
        if args.action == "summary":
            out = rate(args.gpu, args.wall_s)
            print(json.dumps(out, indent=1))
            if args.json:
                args.json.write_text(json.dumps(out, indent=1) + "\n")
            return 0
        return check(args) if args.action == "check" else do_import(args)
    except MLFFError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
