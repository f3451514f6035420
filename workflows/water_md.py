"""Main job (until trained FDH potentials ship): Langevin MD of a water box with a MACE potential.

    python workflows/water_md.py                       # 64 waters, untrained MACE "small", 60 steps
    python workflows/water_md.py --molecules 8000 --steps 2000 --device cuda --cueq
    python workflows/water_md.py --potential potentials/NAME --molecules 1000

Writes to --out: trajectory.extxyz (every --every steps), log.csv (time, energies, temperature),
md.png (energy and temperature against time) and run.json (settings, speed, provenance).
Reports ms/step and ns/day. With no --potential, the model is an untrained MACE (random weights, seed 0):
the numbers measure speed, not water.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.io import write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

import mlff
from mlff.data import water_box
from mlff.provenance import provenance
from mlff.plotting import save_figure

MODELS = {
    "small": {"hidden_irreps": "128x0e"},
    "medium": {"hidden_irreps": "128x0e+128x1o"},
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--molecules", type=int, default=64, help="water molecules in the box (default 64)")
    p.add_argument("--steps", type=int, default=60, help="MD steps (default 60)")
    p.add_argument("--timestep-fs", type=float, default=0.5)
    p.add_argument("--temperature-K", type=float, default=300.0)
    p.add_argument("--friction-per-fs", type=float, default=0.01)
    p.add_argument("--model", choices=sorted(MODELS), default="small", help="untrained MACE size when no --potential")
    p.add_argument("--potential", help="a potential directory (or shipped name) instead of an untrained model")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--cueq", action="store_true", help="cuEquivariance kernels (CUDA)")
    p.add_argument("--every", type=int, default=10, help="write a frame every N steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/water_md", help="output directory")
    return p.parse_args(argv)


def make_potential(args):
    if args.potential:
        return mlff.load_potential(args.potential, dtype=args.dtype)
    config = {"species": ["H", "O"], "r_max": 5.0, "max_ell": 3, "num_interactions": 2, "correlation": 3,
              "atomic_inter_scale": 0.1, **MODELS[args.model]}
    return mlff.build_potential(config, seed=args.seed, dtype=args.dtype)


def plot(log: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(7, 5))
    top.plot(log[:, 0], log[:, 1] - log[0, 1], label="potential")
    top.plot(log[:, 0], log[:, 3] - log[0, 3], label="total")
    top.set_ylabel("energy - start (eV)")
    top.legend()
    bottom.plot(log[:, 0], log[:, 4])
    bottom.set_ylabel("temperature (K)")
    bottom.set_xlabel("time (fs)")
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None) -> dict:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atoms = water_box(args.molecules, seed=args.seed)
    atoms.calc = mlff.MLFFCalculator(make_potential(args), device=args.device, cueq=args.cueq)
    MaxwellBoltzmannDistribution(atoms, temperature_K=args.temperature_K, rng=np.random.default_rng(args.seed))
    Stationary(atoms)
    dyn = Langevin(atoms, timestep=args.timestep_fs * units.fs, temperature_K=args.temperature_K,
                   friction=args.friction_per_fs / units.fs, rng=np.random.default_rng(args.seed + 1))
    trajectory = out / "trajectory.extxyz"
    trajectory.unlink(missing_ok=True)
    rows = []

    def record():
        epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
        rows.append((dyn.nsteps * args.timestep_fs, epot, ekin, epot + ekin, atoms.get_temperature()))
        if dyn.nsteps % args.every == 0:
            write(trajectory, atoms, append=True)

    dyn.attach(record, interval=1)
    steps = dyn.irun(args.steps)
    next(steps)  # first evaluation (model set-up, first neighbour list) and frame 0, kept out of the timing
    with Progress(TextColumn("MD"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                  TextColumn("{task.fields[rate]}"), TimeRemainingColumn()) as bar:
        task = bar.add_task("md", total=args.steps, rate="")
        start = time.perf_counter()
        for done, _ in enumerate(steps, start=1):
            rate = done / (time.perf_counter() - start)
            bar.update(task, advance=1, rate=f"{rate:.1f} steps/s, {rate * args.timestep_fs * 86400 * 1e-6:.3f} ns/day")
        elapsed = time.perf_counter() - start
    log = np.array(rows)
    np.savetxt(out / "log.csv", log, delimiter=",", header="time_fs,epot_eV,ekin_eV,etot_eV,temperature_K")
    plot(log, out / "md.png")
    ms_per_step = 1e3 * elapsed / max(args.steps, 1)
    summary = {"atoms": len(atoms), "steps": args.steps, "ms_per_step": ms_per_step,
               "ns_per_day": args.timestep_fs * 1e-6 * 86400 / (ms_per_step * 1e-3),
               "device": str(atoms.calc.device), "neighbour_list_builds": atoms.calc.neighbors.n_builds,
               "settings": vars(args), "potential": atoms.calc.potential.metadata, "provenance": provenance()}
    (out / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{len(atoms)} atoms, {args.steps} steps on {summary['device']}: {ms_per_step:.1f} ms/step, "
          f"{summary['ns_per_day']:.4f} ns/day; neighbour list built {summary['neighbour_list_builds']} times")
    print(f"wrote {trajectory}, {out / 'log.csv'}, {out / 'md.png'}, {out / 'run.json'}")
    return summary


if __name__ == "__main__":
    main()
