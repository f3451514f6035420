"""One MD step of a water box with MACE, three ways, in one run on the same model and system.

    python benchmarks/md_step.py --cueq --append-results               # the H100 run (small + medium, 3k/24k/96k)
    python benchmarks/md_step.py --cueq --largest --append-results     # plus the largest box that fits, per model
    python benchmarks/md_step.py --cpu-smoke                            # a tiny CPU run that checks the script

(a) mace-torch's MACECalculator + ASE Langevin     (the peer: the same weights, exported as a .model file)
(b) mlff's MLFFCalculator + the same ASE Langevin  (ours)
(c) the MACE model's own forward + forces on a graph built once with mace-torch's data pipeline (the floor)

Targets (issue 2): (b) <= 1.25 x (c) at every size; (b) >= 10 x faster than (a) at 24k atoms.
Models: MACE "small" (128x0e) and "medium" (128x0e+128x1o), max_ell 3, 2 interactions, correlation 3,
r_max 5 Å, fp32, untrained (random weights, seed 0: speed does not depend on training).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from ase import units
from ase.md.langevin import Langevin

import mlff
from _common import SIZES, append_results, emit_json, is_oom, markdown_table, peak_gib, reset_peak, sync, time_ms
from mlff.data import water_box

MODELS = {"small": "128x0e", "medium": "128x0e+128x1o"}


def make_potential(hidden: str, smoke: bool = False) -> mlff.Potential:
    """MACE with ``hidden`` irreps; ``smoke``: a tiny one (8x0e, max_ell 1, correlation 2) that only checks the script."""
    config = {"species": ["H", "O"], "r_max": 5.0, "hidden_irreps": hidden, "max_ell": 3, "num_interactions": 2,
              "correlation": 3, "atomic_inter_scale": 0.1}
    if smoke:
        config.update(hidden_irreps="8x0e", max_ell=1, correlation=2)
    return mlff.build_potential(config, seed=0, dtype="float32")


def langevin_ms(atoms, calc, steps: int) -> float:
    """ms per Langevin step (0.5 fs, 300 K) with ``calc`` after two warm-up steps."""
    atoms = atoms.copy()
    atoms.calc = calc
    dyn = Langevin(atoms, timestep=0.5 * units.fs, temperature_K=300, friction=0.01 / units.fs, rng=None)
    dyn.run(2)
    start = time.perf_counter()
    dyn.run(steps)
    return 1e3 * (time.perf_counter() - start) / steps


def variant_a(atoms, model_file: Path, device, args):
    from mace.calculators import MACECalculator

    calc = MACECalculator(model_paths=str(model_file), device=str(device), default_dtype="float32",
                          enable_cueq=args.cueq)
    return langevin_ms(atoms, calc, args.steps)


def variant_b(atoms, potential, device, args):
    calc = mlff.MLFFCalculator(potential, device=str(device), dtype="float32", skin=0.5, cueq=args.cueq)
    return langevin_ms(atoms, calc, args.steps)


def variant_c(atoms, model_file: Path, device, args):
    from mace import data as mace_data
    from mace.tools import AtomicNumberTable, torch_geometric
    from mace.calculators import MACECalculator

    model = MACECalculator(model_paths=str(model_file), device=str(device), default_dtype="float32",
                           enable_cueq=args.cueq).models[0]
    config = mace_data.config_from_atoms(atoms)
    item = mace_data.AtomicData.from_config(config, z_table=AtomicNumberTable([1, 8]), cutoff=5.0, heads=["Default"])
    batch = next(iter(torch_geometric.dataloader.DataLoader([item], batch_size=1))).to(device)
    inputs = {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in batch.to_dict().items()}
    return time_ms(lambda: model(dict(inputs), compute_force=True, compute_stress=False, training=False), device,
                   warmup=3, repeats=args.steps)


VARIANTS = {"a": variant_a, "b": variant_b, "c": variant_c}


def measure(name, atoms, potential, model_file, device, args):
    reset_peak(device)
    try:
        ms = VARIANTS[name](atoms, potential if name == "b" else model_file, device, args)
    except Exception as err:  # noqa: BLE001 - an out-of-memory is a result, anything else is re-raised
        if not is_oom(err):
            raise
        torch.cuda.empty_cache()
        return "OOM", peak_gib(device)
    sync(device)
    return ms, peak_gib(device)


def largest_box(potential, device, args) -> int:
    """Atoms in the largest water box for which one MLFFCalculator step fits in GPU memory (x1.5 steps)."""
    fits, molecules = 0, SIZES["96k"]
    while True:
        atoms = water_box(molecules, seed=0)
        try:
            langevin_ms(atoms, mlff.MLFFCalculator(potential, device=str(device), dtype="float32",
                                                   cueq=args.cueq), steps=1)
        except Exception as err:  # noqa: BLE001
            if not is_oom(err):
                raise
            torch.cuda.empty_cache()
            return fits
        fits = len(atoms)
        print(f"  {fits} atoms fit")
        molecules = int(molecules * 1.5)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    p.add_argument("--cueq", action="store_true", help="cuEquivariance kernels in every variant")
    p.add_argument("--largest", action="store_true", help="also find the largest box that fits, per model")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny run on the CPU (checks the script)")
    p.add_argument("--append-results", action="store_true", help="append the table to benchmarks/RESULTS.md")
    p.add_argument("--json", help="append each row as a JSON line to this file as soon as it is measured")
    args = p.parse_args(argv)
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    sizes = {"192": 64} if args.cpu_smoke else {k: SIZES[k] for k in args.sizes}
    models = ["small"] if args.cpu_smoke else args.models
    if args.cpu_smoke:
        args.steps = min(args.steps, 3)
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            potential = make_potential(MODELS[model], smoke=args.cpu_smoke)
            model_file = Path(tmp) / f"{model}.model"
            potential.to_mace_model(model_file)
            for label, molecules in sizes.items():
                atoms = water_box(molecules, seed=0)
                result = {v: measure(v, atoms, potential, model_file, device, args) for v in VARIANTS}
                (a, mem_a), (b, mem_b), (c, mem_c) = result["a"], result["b"], result["c"]
                num = lambda x: x if isinstance(x, float) else None  # noqa: E731
                rows.append([model, len(atoms), a, b, c,
                             num(b) / num(c) if num(b) and num(c) else None,
                             num(a) / num(b) if num(a) and num(b) else None, mem_a, mem_b, mem_c])
                print(markdown_table(HEADER, rows[-1:]))
                emit_json(args.json, "md_step", cueq=args.cueq, steps=args.steps, row=dict(zip(HEADER, rows[-1])))
            if args.largest and device.type == "cuda":
                largest = largest_box(potential, device, args)
                notes.append(f"Largest water box that fits ({model}, MLFFCalculator step): {largest} atoms")
                print(notes[-1])
                emit_json(args.json, "md_step_largest", model=model, cueq=args.cueq, atoms=largest)
    table = markdown_table(HEADER, rows)
    print(table, *notes, sep="\n")
    if args.append_results:
        append_results(f"MD step, water 1 g/cm3, MACE fp32{' + cuEquivariance' if args.cueq else ''}", table,
                       "Targets: (b)/(c) <= 1.25 at every size; (a)/(b) >= 10 at 24k atoms.\n\n" + "\n".join(notes))


HEADER = ["model", "atoms", "(a) MACECalculator ms", "(b) MLFFCalculator ms", "(c) forward+forces ms",
          "(b)/(c)", "(a)/(b)", "peak GiB (a)", "peak GiB (b)", "peak GiB (c)"]

if __name__ == "__main__":
    main()
