"""Main job: MD of the FDH active-site cluster with the shipped potential; H5MD trajectory and a plot.

    python workflows/fdh_md.py                                  # 200 steps of Langevin MD at 300 K (~1 minute, CPU)
    python workflows/fdh_md.py --steps 200000 --device cuda --cueq --replicas 64
    python workflows/fdh_md.py --resume                         # continue a run stopped by the scheduler

Reads workflows/fdh_md.yaml (any key can be changed there; see README "Molecular dynamics"). Uses
potentials/fdh-cluster-small when it exists, else an untrained MACE "small" (random weights): then the
run measures speed, not chemistry, and says so loudly. Writes to the config's out directory:
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
from mlff.models.store import resolve_potential_path

HERE = Path(__file__).resolve().parent
UNTRAINED_SMALL = {"r_max": 5.0, "hidden_irreps": "128x0e", "max_ell": 3, "num_interactions": 2, "correlation": 3,
                   "atomic_inter_scale": 0.1}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(HERE / "fdh_md.yaml"), help="MD config (default workflows/fdh_md.yaml)")
    p.add_argument("--steps", type=int, help="total steps (overrides the config)")
    p.add_argument("--replicas", type=int)
    p.add_argument("--device", help="auto, cpu, cuda")
    p.add_argument("--cueq", action="store_true", help="cuEquivariance kernels (CUDA)")
    p.add_argument("--structure", help="a structure file instead of the shipped cluster")
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
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    args = parse_args(argv)
    overrides = {k: v for k, v in {"steps": args.steps, "replicas": args.replicas, "device": args.device,
                                   "structure": args.structure, "engine": args.engine, "out": args.out}.items()
                 if v is not None}
    if args.cueq:
        overrides["cueq"] = True
    data = load_yaml(args.config)
    potential = overrides.get("potential", data.get("potential"))
    if isinstance(potential, str) and not resolve_potential_path(potential).is_dir():
        print(f"WARNING: potential {potential!r} not found: using an UNTRAINED MACE small (random weights). "
              "The numbers below measure speed, not chemistry.", file=sys.stderr)
        overrides["potential"] = dict(UNTRAINED_SMALL)
    config = load_md_config({**data, **overrides})
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
