"""``mlff data ...``: build the FDH cluster, sample, label, validate, inspect, import and export datasets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


__all__ = ["add_data_commands"]


def _keys(args):
    from mlff.data.io import KeyMap

    return KeyMap(energy=args.energy_key, forces=args.forces_key, stress=args.stress_key)


def _read_any(path: str, args, require=("energy", "forces")):
    """Records from an mlff dataset (.h5) or any file ``read_structures`` takes."""
    from mlff.data import Dataset, read_structures

    if Path(path).suffix in (".h5", ".hdf5"):
        return Dataset(path).read()
    return read_structures(path, keys=_keys(args), require=require)


def _build_cluster(args) -> None:
    from ase.io import write

    from mlff.data.cluster import build_cluster, reaction_coordinate

    atoms = build_cluster(args.size, args.state, seed=args.seed)
    write(args.out, atoms, format="extxyz")
    print(f"wrote {args.size} {args.state} cluster ({len(atoms)} atoms, charge {atoms.info['charge']}, "
          f"xi = {reaction_coordinate(atoms):+.2f} Å, {len(atoms.info.get('fixed', []))} fixed) to {args.out}")


def _sample(args) -> None:
    from mlff.data import Dataset
    from mlff.data.recipe import load_recipe, sample_pool

    recipe = load_recipe(args.recipe)
    pool = sample_pool(recipe, progress=True)
    dataset = Dataset.create(args.out, description=f"unlabelled GFN2-xTB geometries, {recipe.size} cluster",
                             overwrite=args.overwrite, precision=args.precision)
    dataset.append(pool, require=())
    print(f"wrote {len(pool)} geometries to {args.out}")


def _labeler_spec(args) -> dict:
    if args.labeler is None:
        if args.backend == "xtb":  # GFN2-xTB has no functional or basis
            return {"backend": "xtb", "solvent_eps": None if args.gas else args.eps, "forces": not args.energy_only}
        spec = {"backend": args.backend, "basis": args.basis, "functional": args.functional,
                "solvent_eps": None if args.gas else args.eps, "forces": not args.energy_only,
                "scf_guess": args.scf_guess}
        for key in ("conv_tol", "pcm_lebedev_order"):  # only when given: the labeller's default otherwise
            if getattr(args, key) is not None:
                spec[key] = getattr(args, key)
        return spec
    from mlff.config import load_yaml
    from mlff.errors import MLFFError

    spec = load_yaml(args.labeler)  # JSON is YAML
    if "backend" not in spec:
        raise MLFFError(f"--labeler {args.labeler}: expected a labeller spec with 'backend' (e.g. pyscf, ase)")
    return spec


def _label(args) -> int:
    from mlff.data import Dataset, label
    from mlff.data.labelers import make_labeler

    spec = _labeler_spec(args)
    structures = _read_any(args.pool, args, require=())
    if args.limit is not None:
        structures = structures[:args.limit]
    if args.shard is not None:
        from mlff.data.merge import shard

        structures = shard(structures, args.shard)
    options = dict(checkpoint_every=args.checkpoint_every, time_limit_s=None if args.minutes is None else 60 * args.minutes,
                   allow_mixed_levels=args.allow_mixed_levels, skip_in=args.skip_labelled_in or ())
    if args.workers > 1:
        from mlff.data.workers import label_with_workers

        summary = label_with_workers(structures, spec, args.out, workers=args.workers, calibration=args.calibration,
                                     **options)
    else:
        summary = label(structures, make_labeler(spec), args.out, calibration=_calibration(args), **options)
    print(summary)
    if Dataset(args.out).count("failures"):
        print(f"failures are kept in {args.out} (table 'failures'); `mlff data info {args.out}` lists them")
    # 75 (EX_TEMPFAIL) after SIGTERM/SIGUSR1 or the time limit, as `mlff md` and `mlff train`: run again to go on
    return 75 if summary.interrupted or summary.remaining else 0


def _calibration(args):
    if getattr(args, "calibration", None) is None:
        return None
    from mlff.data.numerics import load_calibration

    return load_calibration(args.calibration)


def _numerics(args) -> None:
    from mlff.data import Dataset
    from mlff.data.numerics import measure

    reference = Dataset(args.reference).read()
    others = [r for path in args.others for r in Dataset(path).read()]
    tolerance = {k: v for k, v in (("relative_energy_kcal_mol", args.max_relative_kcal_mol),
                                   ("force_rms_meV_A", args.max_force_rms_meV_A)) if v is not None}
    cal = measure(reference, others, tolerance=tolerance, sources=[args.reference, *args.others])
    shifts = cal.to_dict()
    print(cal.summary())
    ratio = cal.cost_ratio()
    if ratio is not None:
        print(f"wall time per label (median, as recorded; compare like with like: threads, machine load): "
              f"{ratio:.2f}x the reference's ({len(shifts['wall_s']['numerics'])} and "
              f"{len(shifts['wall_s']['reference'])} labels)")
    if args.out:
        print(f"wrote {cal.save(args.out)}")


def _upgrade(args) -> None:
    from mlff.data.upgrade import upgrade

    for path in args.paths:
        u = upgrade(path)
        if u["checksum"] is None:
            print(f"{path}: already version {u['from_version']}, left as it is")
            continue
        print(f"{path}: version {u['from_version']} -> {u['to_version']}, {u['bytes_before'] / 1e3:.0f} kB -> "
              f"{u['bytes_after'] / 1e3:.0f} kB (checksum {u['checksum'][:16]}, unchanged)")


def _merge(args) -> None:
    from mlff.data.merge import merge

    order = _read_any(args.order, args, require=()) if args.order else None
    counts = merge(args.inputs, args.out, order=order, overwrite=args.overwrite,
                   allow_mixed_levels=args.allow_mixed_levels, calibration=_calibration(args))
    print(f"wrote {counts['records']} records and {counts['failures']} failures from {len(args.inputs)} "
          f"dataset(s) to {args.out}" + (f" in the order of {args.order}" if args.order else ""))


def _validate(args) -> None:
    if Path(args.path).suffix in (".h5", ".hdf5"):  # every stored hash against its data, every record read
        from mlff.data import Dataset

        counts = Dataset(args.path).verify()
        print(f"{args.path}: content hashes of {counts['records']} records and {counts['failures']} failures verified")
    records = _read_any(args.path, args, require=() if args.unlabelled else ("energy", "forces"))
    from mlff.data.records import validate

    for k, record in enumerate(records):  # .h5 records are validated on the way in; check again anyway
        validate(record, f"{args.path} record {k}", require=() if args.unlabelled else ("energy", "forces"),
                 elements=args.elements)
    print(f"{args.path}: {len(records)} records, all valid")


def _info(args) -> None:
    from mlff.data import Dataset

    dataset = Dataset(args.path)
    summary = dataset.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{summary['path']}: {summary['records']} records, {summary['failures']} failures, "
          f"{summary['atoms']} atoms; elements {', '.join(summary['elements'])}; "
          f"atoms per record {summary['atoms_per_record']}")
    if summary["tags"]:
        print("tags: " + ", ".join(f"{t} {n}" for t, n in sorted(summary["tags"].items())))
    if summary["energy_eV"]:
        print(f"energy range {summary['energy_eV'][0]:.4f} .. {summary['energy_eV'][1]:.4f} eV")
    print(f"checksum {summary['checksum']} (of the content; format version {summary['format_version']}, "
          f"positions and forces stored as {summary['precision']})")
    for source in summary.get("merged_from", []):
        print(f"merged from {source['path']}: {source['records']} records, {source['failures']} failures, checksum "
              f"{source['checksum'][:16]}, created {source.get('created', {}).get('created_utc', '?')}")
    for failure in dataset.infos("failures")[: args.failures]:
        print(f"  failed: {failure.get('source', '?')}: {failure['provenance'].get('failure_reason')}")


def _import(args) -> None:
    from mlff.data import Dataset

    records = _read_any(args.source, args)
    dataset = Dataset(args.out) if Path(args.out).exists() and not args.overwrite else \
        Dataset.create(args.out, description=f"imported from {args.source}", overwrite=args.overwrite,
                       precision=args.precision)
    print(f"{args.out}: {dataset.append(records, where=f'{args.source} record')} records")


def _export(args) -> None:
    from mlff.data import Dataset, write_db, write_extxyz

    split = None if args.split is None else _parse_split(args.split)  # before reading: a typo costs nothing
    records = Dataset(args.path).read()
    if split is not None:
        records = [records[i] for i in Dataset(args.path).split(seed=split[1])[split[0]]]
    if Path(args.out).suffix == ".db":
        write_db(args.out, records)
    else:
        write_extxyz(args.out, records, keys=_keys(args))
    print(f"wrote {len(records)} records to {args.out}")


def _parse_split(text: str) -> tuple[str, int]:
    """``--split NAME[:SEED]`` as (name, seed): train, valid or test, seed a non-negative integer."""
    from mlff.errors import MLFFError

    name, colon, seed = text.partition(":")
    if name not in ("train", "valid", "test") or (colon and not seed.isdigit()):
        raise MLFFError(f"--split {text!r}: expected train, valid or test, optionally followed by :SEED "
                        f"(a non-negative integer, default 0), e.g. --split valid:1")
    return name, int(seed or 0)


def _key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--energy-key", default="REF_energy", help="info key of the energy (default REF_energy)")
    parser.add_argument("--forces-key", default="REF_forces", help="array key of the forces (default REF_forces)")
    parser.add_argument("--stress-key", default="REF_stress", help="info key of the stress (default REF_stress)")


def _calibration_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calibration", metavar="JSON", help="a numerics calibration (`mlff data numerics`): labels "
                        "at its settings are shifted to its reference settings and count as that level")


def _precision_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=["float64", "float32"], default="float64",
                        help="storage of positions and forces in a new dataset (float32: half the bytes)")


def add_data_commands(commands) -> None:
    data = commands.add_parser("data", help="datasets: build the FDH cluster, sample, label, validate, info, "
                                            "import, export")
    sub = data.add_subparsers(dest="action", required=True)
    p = sub.add_parser("build-cluster", help="the FDH active-site QM cluster (extxyz)")
    p.add_argument("--size", choices=["small", "medium", "large"], default="small")
    p.add_argument("--state", choices=["reactant", "product"], default="reactant")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="cluster.xyz")
    p.set_defaults(run=_build_cluster)
    p = sub.add_parser("sample", help="GFN2-xTB geometries (MD, xi scans, normal modes, FPS) from a recipe")
    p.add_argument("recipe", help="YAML sampling recipe (see workflows/fdh_dataset.yaml)")
    p.add_argument("out", help="output .h5 pool of unlabelled geometries")
    p.add_argument("--overwrite", action="store_true")
    _precision_option(p)
    p.set_defaults(run=_sample)
    p = sub.add_parser("label", help="DFT labels for a pool, resumable (run again to go on)")
    p.add_argument("pool", help=".h5 pool or any structure file")
    p.add_argument("out", help="output .h5 dataset (created or extended)")
    p.add_argument("--backend", choices=["pyscf", "gpu4pyscf", "xtb"], default="pyscf",
                   help="pyscf (DFT, CPU), gpu4pyscf (DFT, GPU) or xtb (GFN2-xTB, tblite; same continuum eps)")
    p.add_argument("--functional", default="b3lyp")
    p.add_argument("--basis", default="def2-svp")
    p.add_argument("--eps", type=float, default=4.0, help="continuum dielectric constant (default 4)")
    p.add_argument("--gas", action="store_true", help="gas phase instead of the continuum")
    p.add_argument("--energy-only", action="store_true", help="single points (e.g. def2-TZVP basis checks)")
    p.add_argument("--scf-guess", choices=["minao", "nearest"], default="minao",
                   help="DFT: start each SCF from PySCF's minao guess or from the density of the nearest geometry "
                   "labelled in this run (MD frames; same converged answer, fewer cycles: benchmarks/dft_speed.py)")
    p.add_argument("--conv-tol", type=float, dest="conv_tol",
                   help="DFT: SCF energy tolerance in Eh (default 1e-9; 1e-7 measured inside 0.1 kcal/mol and 5 meV/Å "
                   "at 11 instead of 14 cycles: data/fdh-cluster/dft_speed.md)")
    p.add_argument("--pcm-lebedev-order", type=int, dest="pcm_lebedev_order",
                   help="DFT: C-PCM surface points per sphere as a Lebedev order (default PySCF's 29; 17 measured at "
                   "0.41x the CPU but forces off by up to 10 meV/Å: data/fdh-cluster/dft_speed.md)")
    p.add_argument("--limit", type=int, help="only the first N structures of the pool")
    p.add_argument("--minutes", type=float, help="stop cleanly before this wall time (resumable chunks)")
    p.add_argument("--checkpoint-every", type=int, default=1)
    p.add_argument("--allow-mixed-levels", action="store_true",
                   help="add labels at another level of theory than the dataset already holds")
    p.add_argument("--labeler", help="YAML/JSON labeller spec for make_labeler (any backend, e.g. "
                   "{backend: ase, calculator: emt}); replaces --backend/--functional/--basis/...")
    p.add_argument("--shard", help="K/N: label only structures K, K+N, K+2N, ... (array tasks; `mlff data merge` "
                   "joins the shards)")
    p.add_argument("--skip-labelled-in", action="append", metavar="DATASET",
                   help="also skip what this dataset holds (records and failures; repeatable): shards that continue "
                   "a dataset they will be merged into")
    p.add_argument("--workers", type=int, default=1, help="label in N one-thread processes side by side (each "
                   "its own shard file, merged into OUT in pool order; two one-thread DFT labels beat one two-thread)")
    _calibration_option(p)
    _key_options(p)
    p.set_defaults(run=_label)
    p = sub.add_parser("numerics", help="measure faster numerical settings against the reference ones on geometries "
                       "labelled at both: energy shift, relative energies, forces; write a calibration")
    p.add_argument("reference", help=".h5 dataset at the reference settings")
    p.add_argument("others", nargs="+", help=".h5 dataset(s) relabelling some of its geometries at other settings")
    p.add_argument("--out", help="write the calibration here (JSON), for label/merge --calibration")
    p.add_argument("--max-relative-kcal-mol", type=float, help="tolerance on relative energies (default 0.1)")
    p.add_argument("--max-force-rms-meV-A", type=float, help="tolerance on the force RMS (default 4)")
    p.set_defaults(run=_numerics)
    p = sub.add_parser("merge", help="datasets (e.g. labelled shards) into one, optionally in a pool's order")
    p.add_argument("out", help="output .h5 dataset")
    p.add_argument("inputs", nargs="+", help="input .h5 datasets")
    p.add_argument("--order", help="the pool the inputs were labelled from: records come out in its order")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--allow-mixed-levels", action="store_true",
                   help="merge inputs at different levels of theory or numerical settings")
    _calibration_option(p)
    _key_options(p)
    p.set_defaults(run=_merge)
    p = sub.add_parser("upgrade", help="rewrite datasets of an older format version in the current one, in place "
                       "(same records and checksum; version 2 compresses every column)")
    p.add_argument("paths", nargs="+", help=".h5 datasets")
    p.set_defaults(run=_upgrade)
    p = sub.add_parser("validate", help="check every record of a file (stored hashes of .h5 datasets, NaN, shapes, elements, overlaps)")
    p.add_argument("path")
    p.add_argument("--unlabelled", action="store_true", help="geometries only, no labels required")
    p.add_argument("--elements", nargs="+", help="allowed elements")
    _key_options(p)
    p.set_defaults(run=_validate)
    p = sub.add_parser("info", help="summary of a dataset: counts, tags, energies, checksum, failures")
    p.add_argument("path")
    p.add_argument("--json", action="store_true")
    p.add_argument("--failures", type=int, default=10, help="list up to N failures (default 10)")
    p.set_defaults(run=_info)
    p = sub.add_parser("import", help="extxyz / ASE db / DFT outputs into a dataset (validated)")
    p.add_argument("source")
    p.add_argument("out")
    p.add_argument("--overwrite", action="store_true")
    _precision_option(p)
    _key_options(p)
    p.set_defaults(run=_import)
    p = sub.add_parser("export", help="a dataset (or one split) to extxyz (mace-torch keys) or ASE db")
    p.add_argument("path")
    p.add_argument("out", help=".xyz/.extxyz or .db")
    p.add_argument("--split", help="train, valid or test, optionally :SEED (default seed 0)")
    _key_options(p)
    p.set_defaults(run=_export)
