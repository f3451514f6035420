"""Main job: MD of the FDH active-site cluster with the shipped potential; H5MD trajectory and a plot.

    python workflows/fdh_md.py                                  # 200 steps of Langevin MD at 300 K (~1 minute, CPU)
    python workflows/fdh_md.py --steps 200000 --device cuda --cueq --replicas 64
    python workflows/fdh_md.py --resume                         # continue a run stopped by the scheduler

Reads workflows/fdh_md.yaml (any key can be changed there; see README "Molecular dynamics"). Runs the
potential the config names: `fdh-cluster-small-xtb` (a MACE committee trained on GFN2-xTB labels; NOT DFT)
until the DFT fine-tuned `fdh-cluster-small` ships. It prints the potential and the level of theory of its
training labels before the first step; a missing potential is an error (no random-weight fallback).
Writes to the config's out directory:
trajectory.h5 (H5MD: positions, velocities, forces, energies, temperature, xi, committee spread),
log.csv, md.png (energy, temperature and xi against time), checkpoint.pt and run.json (speed, provenance).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

import mlff.models._mace  # noqa: F401  (mace before e3nn)
from mlff.config import load_yaml
from mlff.errors import MLFFError
from mlff.md import load_md_config, run_md
from mlff.md.runlog import read_log
from mlff.models.store import potential_level, resolve_potential_path
from mlff.plotting import save_figure

HERE = Path(__file__).resolve().parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(HERE / "fdh_md.yaml"), help="MD config (default workflows/fdh_md.yaml)")
    p.add_argument("--steps", type=int, help="total steps (overrides the config)")
    p.add_argument("--replicas", type=int)
    p.add_argument("--device", help="auto, cpu, cuda")
    p.add_argument("--cueq", action="store_true", help="cuEquivariance kernels (CUDA)")
    p.add_argument("--structure", help="a structure file instead of the shipped cluster")
    p.add_argument("--potential", help="a potential directory or shipped name (overrides the config)")
    p.add_argument("--engine", choices=["gpu", "ase"])
    p.add_argument("--out", help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from the out directory's checkpoint")
    return p.parse_args(argv)


def plot(log_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_path)
    has_xi = "xi" in rows[0]
    fig, axes = plt.subplots(3 if has_xi else 2, 1, sharex=True, figsize=(7, 7 if has_xi else 5))
    for system in sorted({r["system"] for r in rows}):
        mine = [r for r in rows if r["system"] == system]
        t = [r["time_fs"] for r in mine]
        label = f"system {system}"
        axes[0].plot(t, [r["potential_energy"] - mine[0]["potential_energy"] for r in mine], label=f"{label}: potential")
        axes[0].plot(t, [r["total_energy"] - mine[0]["total_energy"] for r in mine], "--", label=f"{label}: total")
        axes[1].plot(t, [r["temperature"] for r in mine], label=label)
        if has_xi:
            axes[2].plot(t, [r["xi"] for r in mine], label=label)
    axes[0].set_ylabel("energy - start (eV)")
    axes[0].legend(fontsize=7)
    axes[1].set_ylabel("temperature (K)")
    if has_xi:
        axes[2].set_ylabel("xi = d(C-H) - d(H-C4) (Å)")
    axes[-1].set_xlabel("time (fs)")
    fig.tight_layout()
    save_figure(fig, png)


def describe_level(potential) -> str:
    """The level of theory of the potential's training labels, from its card; a missing potential is an error."""
    if not isinstance(potential, str):
        return "UNTRAINED model config (random weights): speed, not chemistry"
    level = potential_level(potential)
    if level is None:
        raise MLFFError(f"potential {potential!r} not found ({resolve_potential_path(potential)} has no "
                        "potential.json): the main job runs a trained potential only. Train it "
                        "(workflows/fdh_xtb_train.yaml for fdh-cluster-small-xtb), or give --potential DIR")
    return level


def main(argv=None) -> dict:
    args = parse_args(argv)
    overrides = {k: v for k, v in {"steps": args.steps, "replicas": args.replicas, "device": args.device,
                                   "structure": args.structure, "engine": args.engine, "out": args.out,
                                   "potential": args.potential}.items()
                 if v is not None}
    if args.cueq:
        overrides["cueq"] = True
    data = load_yaml(args.config)
    config = load_md_config({**data, **overrides})
    print(f"fdh_md: POTENTIAL {config.potential}: {describe_level(config.potential)}", file=sys.stderr)
    if "OMP_NUM_THREADS" not in os.environ and not torch.cuda.is_available():
        torch.set_num_threads(1)  # small graphs: one thread beats two on a shared 2-core machine (measured 27x)
    summary = run_md(config, resume=args.resume)
    out = Path(config.out)
    plot(out / "log.csv", out / "md.png")
    print(f"{summary['atoms']} atoms x {summary['systems']} system(s), {summary['steps_done']} steps on "
          f"{summary['device']}: {summary['ms_per_step']:.1f} ms/step, {summary['ns_per_day']:.4f} ns/day "
          f"({summary['status']})")
    if summary["message"]:
        print(summary["message"], file=sys.stderr)
    print(f"wrote {out / 'trajectory.h5'}, {out / 'log.csv'}, {out / 'md.png'}, {out / 'run.json'}")
    return summary


if __name__ == "__main__":
    try:
        main()
    except MLFFError as err:
        print(f"fdh_md: error: {err}", file=sys.stderr)
        sys.exit(2)
