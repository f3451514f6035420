"""``mlff``: a thin dispatcher over the library. User errors print one line and exit 2."""

from __future__ import annotations

import argparse
import json
import sys

from mlff.errors import MLFFError
from mlff.signals import RESUMABLE, record_exit

__all__ = ["main"]


def _potential_build(args) -> None:
    from mlff.config import load_yaml
    from mlff.models import build_potential, save_potential

    from pathlib import Path

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.force:
        raise MLFFError(f"{out} exists; pass --force to overwrite it, or choose another directory")
    config = load_yaml(args.config)
    potential = build_potential(config, committee=args.committee, seed=args.seed, dtype=args.dtype)
    path = save_potential(potential, args.out)
    print(f"wrote untrained potential ({potential.committee_size} member(s)) to {path}")


def _potential_info(args) -> None:
    from mlff.models.store import load_potential, resolve_potential_path

    potential = load_potential(args.path)  # checks the checksums too
    card = json.loads((resolve_potential_path(args.path) / "potential.json").read_text())
    c = potential.config
    print(f"{card['name']}: MACE, species {', '.join(map(str, c.species))}, cutoff {c.r_max} Å, hidden {c.hidden_irreps}, "
          f"max_ell {c.max_ell}, {c.num_interactions} interactions, correlation {c.correlation}")
    print(f"committee of {potential.committee_size}, {card['n_parameters_per_member']:,} parameters each, {card['dtype']}")
    print(f"origin: {card['metadata'].get('origin', 'unknown')}; created {card['provenance']['created_utc']}")


def _potential_export(args) -> None:
    from mlff.models import load_potential

    load_potential(args.path).to_mace_model(args.out, member=args.member)
    print(f"wrote mace-torch model {args.out} (member {args.member})")


def _train(args) -> int:
    from mlff.train import load_train_config, train

    members = None if args.member is None else [args.member]
    config = load_train_config(args.config, out=args.out)
    resume, on_step = args.resume, None
    if args.pack and args.carry is None:
        raise MLFFError("--pack writes the state to the file named by --carry BUNDLE; give it")
    if args.carry is not None:
        resume, on_step = _carry(args, config)
        if on_step is None:
            return 0
    result = train(config, resume=resume, members=members, on_step=on_step)
    if args.carry is not None:
        from mlff.train.carry import pack_run

        pack_run(result.run_dir, args.carry)
        print(f"mlff: training state carried in {args.carry}", file=sys.stderr)
    if result.status == "stopped":
        member = "" if args.member is None else f" --member {args.member}"
        print(f"mlff: stopped on a signal; checkpoint written in {result.run_dir}: continue with "
              f"`mlff train {args.config}{member} --resume`", file=sys.stderr)
        return RESUMABLE  # as `mlff md` (batch scripts requeue the job)
    if result.potential_dir is None and members is not None:
        print(f"member {args.member} trained in {result.run_dir}; once every member is, `mlff train {args.config} "
              "--resume` writes the potential")
    if result.potential_dir is not None:
        print(f"trained potential written to {result.potential_dir}; metrics in {result.run_dir / 'metrics.json'}")
    return 0


def _carry(args, config):
    """``--carry BUNDLE``: restore the run from BUNDLE when its directory holds none, and pack it back every
    ``--carry-every-min`` minutes (at a finished checkpoint), on a stop and at the end. With ``--pack``: pack
    now and return no step hook (nothing to train)."""
    import time
    from pathlib import Path

    from mlff.train.carry import pack_run, unpack_run

    run_dir, bundle = Path(config.out), Path(args.carry)
    if args.pack:
        manifest = pack_run(run_dir, bundle)
        print(f"mlff: {run_dir} packed into {bundle} ({bundle.stat().st_size / 1e6:.2f} MB): "
              + ", ".join(f"{m} epoch {p.get('epoch')}" for m, p in manifest["members"].items()))
        return False, None
    resume = args.resume
    if not (run_dir / "config.json").is_file() and bundle.is_file():
        manifest = unpack_run(bundle, run_dir)
        print(f"mlff: training state restored from {bundle} into {run_dir}: "
              + ", ".join(f"{m} epoch {p.get('epoch')}" for m, p in manifest["members"].items()), file=sys.stderr)
        resume = True
    every_s, last = 60.0 * args.carry_every_min, [time.monotonic()]

    def on_step(trainer):
        if time.monotonic() - last[0] >= every_s and trainer.checkpoint_path.is_file():
            last[0] = time.monotonic()
            pack_run(run_dir, bundle)
    return resume, on_step


def _info(args) -> None:
    import torch

    from mlff.neighbors.cupy_backend import cupy_available
    from mlff.provenance import provenance

    record = provenance()
    for name, version in record["versions"].items():
        print(f"{name:22s} {version}")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"{'CUDA device':22s} {gpu}")
    print(f"{'CuPy neighbour lists':22s} {'available' if cupy_available() else 'unavailable (CPU lists via vesin)'}")


def _md(args) -> int:
    from mlff.md.runner import run_md

    summary = run_md(args.config, resume=args.resume)
    if summary["status"] == "stopped":
        print(f"mlff: {summary['message']}", file=sys.stderr)
        return 3
    if summary["status"] == "interrupted":
        print(f"mlff: {summary['message']}", file=sys.stderr)
        return RESUMABLE
    print(f"{summary['atoms']} atoms in {summary['systems']} system(s), {summary['steps_done']} steps on "
          f"{summary['device']}: {summary['ms_per_step']:.2f} ms/step, {summary['ns_per_day']:.4f} ns/day; "
          f"outputs in {summary['config']['out']}")
    return 0


def _umbrella(args) -> int:
    from mlff.bias.umbrella import run_umbrella

    summary = run_umbrella(args.config, resume=args.resume)
    for row in summary["windows"]:
        centre = f"centre {row['center']:+.3f}, " if "center" in row else ""
        acc = row.get("exchange_acceptance_to_next")
        acc = f", exchange to next {acc:.2f}" if acc is not None else ""
        mean = "no samples" if row["mean_cv"] is None else f"cv {row['mean_cv']:+.3f} +- {row['std_cv']:.3f}"
        print(f"window {row['window']:3d}: {centre}{mean} ({row['samples']} samples){acc}")
    if summary["status"] != "finished":
        print(f"mlff: {summary['message']}", file=sys.stderr)
        return 3 if summary["status"] == "stopped" else 75
    print(f"{summary['systems']} {summary['kind']} system(s), {summary['steps_done']} steps on {summary['device']}: "
          f"{summary['ms_per_step']:.2f} ms/step; run directory {summary['config']['out']} (read with mlff fes)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlff", description="MACE force fields: potentials, neighbour lists, MD.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="versions, GPU and CuPy availability").set_defaults(run=_info)
    from mlff.data.cli import add_data_commands

    add_data_commands(commands)
    train = commands.add_parser("train", help="train a MACE potential (or committee) on mlff datasets")
    train.add_argument("config", help="YAML training config (see README, Training)")
    train.add_argument("--resume", action="store_true", help="continue the run in the output directory from its checkpoints")
    train.add_argument("--out", help="run directory (overrides 'out' in the config)")
    train.add_argument("--member", type=int, help="train only this committee member (0-based; e.g. one per array "
                       "task); a later `--resume` run writes the potential once every member is done")
    train.add_argument("--carry", metavar="BUNDLE", help="carry the run's resumable state in one small file "
                       "(.tar.gz) across sessions or machines: restored into the run directory when that holds no "
                       "run, packed back periodically, on a stop and at the end")
    train.add_argument("--carry-every-min", type=float, default=15.0, help="with --carry: minutes between packs "
                       "(default 15)")
    train.add_argument("--pack", action="store_true", help="with --carry: pack the run directory's state now and exit")
    train.set_defaults(run=_train)
    potential = commands.add_parser("potential", help="build, inspect and export potentials")
    sub = potential.add_subparsers(dest="action", required=True)
    build = sub.add_parser("build", help="an untrained potential from a YAML model config")
    build.add_argument("config", help="YAML file of MACE hyperparameters (see README)")
    build.add_argument("out", help="output potential directory")
    build.add_argument("--committee", type=int, default=1, help="number of members (default 1)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    build.add_argument("--force", action="store_true", help="overwrite an existing potential directory")
    build.set_defaults(run=_potential_build)
    info = sub.add_parser("info", help="summary of a potential directory (checksums verified)")
    info.add_argument("path")
    info.set_defaults(run=_potential_info)
    export = sub.add_parser("export", help="write a mace-torch .model file (MACECalculator, LAMMPS export)")
    export.add_argument("path")
    export.add_argument("out", help="output .model file")
    export.add_argument("--member", type=int, default=0, help="committee member to export (default 0)")
    export.set_defaults(run=_potential_export)
    md = commands.add_parser("md", help="molecular dynamics from a YAML config (see README, Molecular dynamics)")
    md.add_argument("config", help="YAML file of MD settings")
    md.add_argument("--resume", action="store_true", help="continue from the checkpoint in the config's out directory")
    md.set_defaults(run=_md)
    umbrella = commands.add_parser("umbrella", help="umbrella windows (one batch; replica exchange) or metaD along a "
                                   "CV, from a YAML config (see README, From a potential to a barrier)")
    umbrella.add_argument("config", help="YAML file of umbrella settings (e.g. workflows/fdh_umbrella.yaml)")
    umbrella.add_argument("--resume", action="store_true", help="continue from the checkpoint in the config's out directory")
    umbrella.set_defaults(run=_umbrella)
    from mlff.fes.cli import add_fes_command

    add_fes_command(commands)
    from mlff.learn.cli import add_learn_command

    add_learn_command(commands)
    from mlff.hpc.cli import add_slurm_commands

    add_slurm_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.run(args)
    except MLFFError as err:
        print(f"mlff: error: {err}", file=sys.stderr)
        return record_exit(2)
    except (FileNotFoundError, PermissionError, IsADirectoryError) as err:
        print(f"mlff: error: {err.strerror}: {err.filename}", file=sys.stderr)
        return record_exit(2)
    return record_exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    sys.exit(main())
