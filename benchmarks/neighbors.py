"""Neighbour lists on water boxes at 1 g/cm3: ours (CuPy cell list) vs vesin-torch (CUDA) vs matscipy (CPU).

    python benchmarks/neighbors.py --append-results           # the H100 run: 3k / 24k / 96k atoms, cutoff 5 Å, fp32
    python benchmarks/neighbors.py --cpu-smoke                # a small CPU run that checks the script itself

Each backend computes the full list ("ijS") from positions already on its device; times are medians of
--repeats calls after warm-up, with the GPU synchronised. Pair counts are compared: a backend that finds
a different number of pairs than ours is reported, not timed silently.
"""

from __future__ import annotations

import argparse

import torch

from _common import SIZES, append_results, emit_json, markdown_table, time_ms
from mlff.data import water_box
from mlff.neighbors import neighbor_list


def ours(atoms, device, dtype):
    positions = torch.as_tensor(atoms.positions, device=device, dtype=dtype)
    backend = "cupy" if device.type == "cuda" else "vesin"
    cell, pbc = atoms.cell.array, atoms.pbc
    return lambda: neighbor_list(positions, cell, pbc, CUTOFF, backend=backend)


def vesin_torch(atoms, device, dtype):
    from vesin.torch import NeighborList

    calc = NeighborList(cutoff=CUTOFF, full_list=True)
    points = torch.as_tensor(atoms.positions, device=device, dtype=dtype)
    box = torch.as_tensor(atoms.cell.array, device=device, dtype=dtype)
    return lambda: calc.compute(points=points, box=box, periodic=True, quantities="ijS")


def matscipy(atoms, device, dtype):
    from matscipy.neighbours import neighbour_list

    return lambda: neighbour_list("ijS", atoms, CUTOFF)


BACKENDS = {"ours": ours, "vesin-torch": vesin_torch, "matscipy": matscipy}
CUTOFF = 5.0
HEADER = ["atoms", "ours ms", "ours pairs", "vesin-torch ms", "vesin pairs", "matscipy ms", "matscipy pairs",
          "vesin / ours"]


def run(args) -> list[list]:
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    dtype = getattr(torch, args.dtype)
    sizes = {"192": 64} if args.cpu_smoke else SIZES
    rows = []
    for label, molecules in sizes.items():
        atoms = water_box(molecules, seed=0)
        row, n_ref = [f"{len(atoms)} ({label})"], None
        for name, make in BACKENDS.items():
            try:
                fn = make(atoms, device, dtype)
            except ImportError as err:
                print(f"{name}: not installed ({err})")
                row += [None, None]
                continue
            n_pairs = len(fn()[0])
            n_ref = n_pairs if n_ref is None else n_ref
            repeats = 3 if name == "matscipy" else args.repeats
            ms = time_ms(fn, device, warmup=1 if name == "matscipy" else 3, repeats=repeats)
            print(f"{len(atoms):>6} atoms  {name:<12} {ms:9.3f} ms  {n_pairs} pairs")
            if n_pairs != n_ref:
                print(f"  !! {name} found {n_pairs} pairs, ours {n_ref}")
            row += [ms, n_pairs]
        ours_ms, vesin_ms = row[1], row[3]
        row.append(vesin_ms / ours_ms if ours_ms and vesin_ms else None)
        rows.append(row)
        emit_json(args.json, "neighbors", cutoff_A=CUTOFF, dtype=args.dtype, row=dict(zip(HEADER, row)))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--cpu-smoke", action="store_true", help="tiny run on the CPU (checks the script)")
    p.add_argument("--append-results", action="store_true", help="append the table to benchmarks/RESULTS.md")
    p.add_argument("--json", help="append each row as a JSON line to this file as soon as it is measured")
    args = p.parse_args(argv)
    rows = run(args)
    table = markdown_table(HEADER, rows)
    print(table)
    if args.append_results:
        append_results(f"Neighbour lists, water 1 g/cm3, cutoff {CUTOFF} Å, {args.dtype}", table,
                       "Target: ours <= vesin-torch at 24k and 96k (vesin / ours >= 1).")


if __name__ == "__main__":
    main()
