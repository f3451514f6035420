"""Umbrella ladder of the FDH cluster: all windows in one batch against the same windows one at a time, one run.

    python benchmarks/umbrella.py --device cuda --append-results          # the GPU run (target: >= 10x)
    python benchmarks/umbrella.py --device cpu --steps 5 --warmup 2 --append-results

The ladder of workflows/fdh_umbrella.yaml (24 xi windows from -1.6 to +1.6 Å, spring 5 eV/Å², start structures
from the pool nearest each centre) on the small cluster (39 atoms per window), Langevin 0.5 fs, 300 K, with
the same potential, steps and biases both ways:
  batch:      one BatchEngine of 24 systems, BiasedModel with one centre per system (one force call per step);
  sequential: 24 BatchEngines of one system each, run one after the other (what a one-structure-at-a-time
              tool such as ASE + PLUMED does, without its host round trips).
Reported: ms per step (batch) and per window-step (sequential), window-steps/s, and their ratio.
Model: MACE small (hidden 128x0e, max_ell 3, 2 interactions, correlation 3, r_max 5 Å), untrained (seed 0):
speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mlff  # noqa: E402
import mlff.models._mace  # noqa: E402,F401  (mace before e3nn)
from _common import append_results, device_name, markdown_table, sync  # noqa: E402
from mlff.bias.cv import DistanceDifference  # noqa: E402
from mlff.bias.engine import BiasedEngine  # noqa: E402
from mlff.bias.model import Biases  # noqa: E402
from mlff.bias.restraint import HarmonicRestraint  # noqa: E402
from mlff.bias.umbrella import load_umbrella_config, pool_starts, window_centers  # noqa: E402
from mlff.md import load_md_config, read_structure  # noqa: E402
from mlff.md.engines import BatchEngine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SMALL = {"r_max": 5.0, "hidden_irreps": "128x0e", "max_ell": 3, "num_interactions": 2, "correlation": 3,
         "atomic_inter_scale": 0.1}


def engine_for(starts, centers, springs, potential, args) -> BiasedEngine:
    config = load_md_config({"structure": "-", "device": args.device, "dtype": args.dtype, "replicas": len(starts),
                             "neighbors": args.neighbors, "cueq": args.cueq, "seed": 0, "timestep_fs": 0.5})
    engine = BatchEngine(config, starts[0], potential, structures=starts)
    biases = Biases(DistanceDifference.xi([a.info for a in starts]), [HarmonicRestraint(centers, springs)])
    biased = BiasedEngine(engine, biases)
    biased.start()
    return biased


def timed(engine: BiasedEngine, steps: int, warmup: int, device) -> tuple[float, float]:
    """Wall and CPU seconds of this process for ``steps`` steps after ``warmup`` steps (GPU synchronised). On a
    shared CPU the CPU time is the fairer number (the wall time includes waiting for a core)."""
    for _ in range(warmup):
        engine.step()
    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        engine.step()
    sync(device)
    return time.perf_counter() - start, time.process_time() - cpu


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO / "workflows" / "fdh_umbrella.yaml"), help="umbrella config (windows)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--neighbors", default="all_pairs", choices=["all_pairs", "verlet"])
    p.add_argument("--cueq", action="store_true", help="cuEquivariance kernels (CUDA)")
    p.add_argument("--steps", type=int, default=100, help="timed steps per window (both ways)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--append-results", action="store_true", help="append to benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # small graphs on a shared CPU
    config = load_umbrella_config(args.config)
    structure = read_structure(config.structure)
    centers = window_centers(config.centers_A)
    springs = float(config.spring_eV_per_A2)
    starts, _ = pool_starts(structure, str(REPO / config.pool), centers, config.cv)
    species = sorted(set(structure.get_chemical_symbols()))
    potential = mlff.build_potential({**SMALL, "species": species}, seed=0, dtype=args.dtype)
    n = len(starts)

    batch_s, batch_cpu = timed(engine_for(starts, centers, springs, potential, args), args.steps, args.warmup, device)
    singles = [timed(engine_for([a], [c], springs, potential, args), args.steps, args.warmup, device)
               for a, c in zip(starts, centers)]
    sequential_s, sequential_cpu = sum(t[0] for t in singles), sum(t[1] for t in singles)
    work = n * args.steps
    rows = [[f"batch: {n} windows in one BatchEngine", 1e3 * batch_s / args.steps, work / batch_s, work / batch_cpu],
            [f"sequential: {n} windows one at a time", 1e3 * sequential_s / work, work / sequential_s,
             work / sequential_cpu]]
    table = markdown_table(["FDH small cluster (39 atoms), umbrella ladder", "wall ms per step (batch) / per window-step",
                            "window-steps/s (wall)", "window-steps per CPU-s"], rows)
    ratio, ratio_cpu = sequential_s / batch_s, sequential_cpu / batch_cpu
    batch_rate, seq_rate = work / batch_s, work / sequential_s
    notes = (f"Ratio batch / sequential: **{ratio:.2f}x** wall, {ratio_cpu:.2f}x CPU time ({n} windows, {args.steps} "
             f"timed steps after {args.warmup} warm-up steps, {args.dtype}, neighbors {args.neighbors}"
             f"{', cueq' if args.cueq else ''}; untrained MACE small; Langevin 0.5 fs; restraint k = {springs} eV/Å² "
             "on xi). Target on the GPU: >= 10x.")
    print(table)
    print(notes)
    if args.append_results:
        append_results(f"Umbrella ladder: batch vs one window at a time ({device_name(device)})", table, notes)
    return {"ratio": ratio, "ratio_cpu_time": ratio_cpu, "batch_window_steps_per_s": batch_rate,
            "sequential_window_steps_per_s": seq_rate}


if __name__ == "__main__":
    main()
