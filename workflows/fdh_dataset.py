"""Regenerate the FDH active-site dataset in data/fdh-cluster/, resumably, stage by stage.

    python workflows/fdh_dataset.py --stage clusters               # relaxed reactant/product clusters (CPU)
    python workflows/fdh_dataset.py --stage sample                 # GFN2-xTB geometries (CPU, minutes)
    python workflows/fdh_dataset.py --stage label --backend gpu4pyscf --minutes 9   # repeat until done
    python workflows/fdh_dataset.py --stage card                   # CARD.md, plots, checksums

Stages: clusters (cluster_<size>_<state>.xyz: the GFN2-xTB relaxed reactant and product clusters, all three
sizes, read by MD and tests without RDKit or xTB), sample (pool_<size>.h5: unlabelled, selected geometries), label (fdh_<size>.h5 at
B3LYP-D3(BJ)/def2-SVP + C-PCM eps=4, energies and forces), e0s (isolated_atoms.h5, same level), tzvp
(fdh_<size>_tzvp.h5: def2-TZVP single points of a subset, for the basis error), card. Every stage skips
what is done, so a run stopped at any point (scheduler, --minutes) goes on where it was when run again.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from mlff.data import Dataset, label
from mlff.data.cluster import reaction_coordinate
from mlff.data.recipe import load_recipe, sample_pool

SIZES = {"small": 1500, "medium": 500}  # geometries selected per cluster size
HERE = Path(__file__).resolve().parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=["clusters", "sample", "label", "e0s", "tzvp", "card", "all"], default="all")
    p.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    p.add_argument("--recipe", default=str(HERE / "fdh_dataset.yaml"))
    p.add_argument("--out", default=str(HERE.parent / "data" / "fdh-cluster"))
    p.add_argument("--backend", choices=["pyscf", "gpu4pyscf"], default="gpu4pyscf")
    p.add_argument("--gas", action="store_true", help="gas phase instead of C-PCM (eps 4)")
    p.add_argument("--minutes", type=float, help="stop cleanly before this wall time; run again to go on")
    p.add_argument("--tzvp-subset", type=int, default=50, help="def2-TZVP single points per size")
    return p.parse_args(argv)


def labeler(args, **overrides):
    from mlff.data.labelers import make_labeler

    spec = {"backend": args.backend, "functional": "b3lyp", "basis": "def2-svp", "dispersion": "d3bj",
            "solvent_eps": None if args.gas else 4.0, **overrides}
    return make_labeler(spec)


def stage_clusters(args, out: Path) -> None:
    from ase.io import write

    from mlff.data.cluster import SIZES, STATES, build_cluster

    for size in SIZES:
        for state in STATES:
            path = out / f"cluster_{size}_{state}.xyz"
            if path.exists():
                print(f"{path.name}: exists, skipped")
                continue
            start = time.perf_counter()
            atoms = build_cluster(size, state)
            write(path, atoms, format="extxyz")
            print(f"{path.name}: {len(atoms)} atoms, charge {atoms.info['charge']}, "
                  f"xi {reaction_coordinate(atoms):+.3f} Å, {time.perf_counter() - start:.0f} s")


def stage_sample(args, out: Path) -> None:
    for size in args.sizes:
        pool = out / f"pool_{size}.h5"
        if pool.exists():
            print(f"{pool.name}: exists ({Dataset(pool).count()} geometries), skipped")
            continue
        recipe = replace(load_recipe(args.recipe), size=size, select=SIZES[size])
        start = time.perf_counter()
        frames = sample_pool(recipe, progress=True)
        Dataset.create(pool, description=f"GFN2-xTB geometries, {size} FDH cluster: {json.dumps(asdict(recipe))}")
        Dataset(pool).append(frames, require=())
        print(f"{pool.name}: {len(frames)} geometries in {time.perf_counter() - start:.0f} s")


def _remaining_s(args, start: float) -> float | None:
    return None if args.minutes is None else 60 * args.minutes - (time.perf_counter() - start)


def stage_label(args, out: Path, start: float) -> None:
    backend = labeler(args)
    for size in args.sizes:
        summary = label(Dataset(out / f"pool_{size}.h5").read(), backend, out / f"fdh_{size}.h5",
                        time_limit_s=_remaining_s(args, start), description=f"FDH {size} cluster, DFT labels")
        print(f"fdh_{size}.h5: {summary}")


def stage_e0s(args, out: Path, start: float) -> None:
    from mlff.data.cluster import isolated_atoms

    summary = label(list(isolated_atoms().values()), labeler(args), out / "isolated_atoms.h5",
                    time_limit_s=_remaining_s(args, start), description="isolated atoms for E0s")
    print(f"isolated_atoms.h5: {summary}")


def stage_tzvp(args, out: Path, start: float) -> None:
    for size in args.sizes:
        dataset = Dataset(out / f"fdh_{size}.h5")
        chosen = dataset.read(range(0, len(dataset), max(1, len(dataset) // args.tzvp_subset)))[: args.tzvp_subset]
        for atoms in chosen:
            atoms.calc = None
        summary = label(chosen, labeler(args, basis="def2-tzvp", forces=False), out / f"fdh_{size}_tzvp.h5",
                        time_limit_s=_remaining_s(args, start), description=f"def2-TZVP single points, {size}")
        print(f"fdh_{size}_tzvp.h5: {summary}")


def stage_card(args, out: Path) -> None:
    from mlff.data.card import write_card

    files = {size: out / f"fdh_{size}.h5" for size in args.sizes if (out / f"fdh_{size}.h5").exists()}
    files.update({p.stem: p for p in sorted(out.glob("*.h5")) if p.stem not in
                  {f"fdh_{s}" for s in files} and not p.stem.startswith("pool_")})
    files.update({p.stem: p for p in sorted(out.glob("pool_*.h5"))})
    print(f"wrote {write_card(files, out, recipe=load_recipe(args.recipe).__dict__)}")


def main(argv=None) -> None:
    args, start = parse_args(argv), time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = ["clusters", "sample", "label", "e0s", "tzvp", "card"] if args.stage == "all" else [args.stage]
    for stage in stages:
        if stage in ("clusters", "sample", "card"):
            globals()[f"stage_{stage}"](args, out)
        else:
            globals()[f"stage_{stage}"](args, out, start)


if __name__ == "__main__":
    main()
