"""MD of the FDH cluster and water boxes: our batched engine against mace-torch + ASE and TorchSim, one run.

    python benchmarks/md_cluster.py --cueq --append-results     # the H100 run (all four benchmarks)
    python benchmarks/md_cluster.py --cpu-smoke                 # a tiny CPU run that checks the script

(1) one cluster, Langevin 0.5 fs, 300 K: ms/step and ns/day for
    ours (batched engine: Verlet list eager; all-pairs + CUDA graph), MACECalculator + ASE Langevin, TorchSim
    nvt_langevin. Target: ours <= 2 ms/step.
(2) 512 replicas of the cluster in one batch: atom-steps/s, ours vs TorchSim (MACECalculator + ASE: one replica
    at a time, the same rate as (1)). Target: ours >= 1.8 x TorchSim.
(3) water boxes (24k, 96k atoms): our NVE step (Verlet list) vs the model's own forward + forces on a fixed
    graph. Target: <= 1.05.
(4) NVE energy drift on the cluster in fp32 and fp64 (eV/atom/ps, least-squares slope of the total energy).
Model: MACE small (hidden 128x0e, max_ell 3, 2 interactions, correlation 3, r_max 5 Å), untrained (seed 0):
speed does not depend on the weights; the drift numbers do, so (4) measures the integrator with this model.
Peers are optional imports: a missing one is reported as skipped. Results are appended to RESULTS.md only with
--append-results on a CUDA machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from ase import units

import mlff
import mlff.models._mace  # noqa: F401
from _common import SIZES, append_results, emit_json, markdown_table, sync, time_ms
from mlff.data import water_box
from mlff.md import load_md_config
from mlff.md.engines import BatchEngine, initial_velocities
from mlff.md.monitors import EnergyDrift

SMALL = {"r_max": 5.0, "hidden_irreps": "128x0e", "max_ell": 3, "num_interactions": 2, "correlation": 3,
         "atomic_inter_scale": 0.1}


def cluster_atoms(spec: str):
    from mlff.md.config import read_structure

    return read_structure(spec)


# --cpu-smoke only: a tiny model, so that the smoke run checks every code path in seconds on a busy CPU
TINY = {"r_max": 4.0, "hidden_irreps": "8x0e", "max_ell": 1, "num_interactions": 2, "correlation": 2,
        "atomic_inter_scale": 0.1}


def make_potential(atoms, dtype="float32", smoke=False):
    species = sorted(set(atoms.get_chemical_symbols()) | {"H", "C", "N", "O"})
    return mlff.build_potential({**(TINY if smoke else SMALL), "species": species}, seed=0, dtype=dtype)


def ours_ms(atoms, potential, device, args, *, replicas=1, neighbors="verlet", graph=False, integrator="langevin"):
    """ms per step of our batched engine (after warm-up, GPU synchronised)."""
    config = load_md_config({"structure": "-", "device": str(device), "dtype": "float32", "cueq": args.cueq,
                             "replicas": replicas, "neighbors": neighbors, "cuda_graph": graph,
                             "integrator": integrator, "seed": 0})
    engine = BatchEngine(config, atoms, potential)
    engine.start()
    for _ in range(args.warmup):
        engine.step()
    if graph and engine._graphed.failed:
        return f"capture failed: {engine._graphed.failed[:60]}"
    sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        engine.step()
    sync(device)
    return 1e3 * (time.perf_counter() - start) / args.steps


def mace_ase_ms(atoms, model_file: Path, device, args):
    from ase.md.langevin import Langevin
    from mace.calculators import MACECalculator

    atoms = atoms.copy()
    atoms.calc = MACECalculator(model_paths=str(model_file), device=str(device), default_dtype="float32",
                                enable_cueq=args.cueq)
    dyn = Langevin(atoms, timestep=0.5 * units.fs, temperature_K=300, friction=0.01 / units.fs, fixcm=False)
    dyn.run(args.warmup)
    sync(device)
    start = time.perf_counter()
    dyn.run(args.steps)
    sync(device)
    return 1e3 * (time.perf_counter() - start) / args.steps


def torchsim_ms(atoms, model_file: Path, device, args, replicas=1):
    """TorchSim nvt_langevin on ``replicas`` copies: the per-step time from two run lengths (set-up cancels)."""
    try:
        import torch_sim as ts
        from torch_sim.models.mace import MaceModel
        from torch_sim.neighbors import torch_nl_n2
    except ImportError:
        return "not installed"
    # "n2": TorchSim's batched all-pairs list on the device (its best without nvalchemiops, which needs warp-lang);
    # "default": what TorchSim picks itself (without nvalchemiops: vesin, one system at a time on the CPU)
    nl = torch_nl_n2 if args.torchsim_nl == "n2" else None
    model = MaceModel(model=torch.load(model_file, weights_only=False).to(device), device=device,
                      dtype=torch.float32, compute_forces=True, compute_stress=False, enable_cueq=args.cueq,
                      neighbor_list_fn=nl)
    integrator = getattr(getattr(ts, "Integrator", None), "nvt_langevin", None) or ts.nvt_langevin
    systems = [atoms.copy() for _ in range(replicas)]

    def run(n):
        sync(device)
        start = time.perf_counter()
        ts.integrate(system=systems, model=model, integrator=integrator, n_steps=n, timestep=0.0005,
                     temperature=300.0)
        sync(device)
        return time.perf_counter() - start

    run(args.warmup)
    short, long = run(args.warmup), run(args.warmup + args.steps)
    return 1e3 * (long - short) / args.steps


def peer(fn, *a, **kw):
    try:
        return fn(*a, **kw)
    except Exception as err:  # noqa: BLE001 - a peer that breaks is reported, not fatal
        return f"failed: {type(err).__name__}: {str(err)[:60]}"


def table(args, part: str, header: list[str], rows: list[list]) -> str:
    """The markdown table of one benchmark, printed and written as a JSON line at once (a cut-off run keeps it)."""
    text = markdown_table(header, rows)
    print(text, flush=True)
    emit_json(args.json, "md_cluster", part=part, cueq=args.cueq, steps=args.steps,
              rows=[dict(zip(header, row)) for row in rows])
    return text


def bench_cluster(atoms, potential, model_file, device, args):
    rows = [["ours, Verlet list, eager", ours_ms(atoms, potential, device, args)]]
    if device.type == "cuda":
        rows.append(["ours, all pairs + CUDA graph", ours_ms(atoms, potential, device, args, neighbors="all_pairs",
                                                              graph=True)])
    rows.append(["MACECalculator + ASE Langevin", peer(mace_ase_ms, atoms, model_file, device, args)])
    rows.append([f"TorchSim nvt_langevin ({args.torchsim_nl} list)", peer(torchsim_ms, atoms, model_file, device, args)])
    for row in rows:
        ms = row[1]
        row.append(0.5 * 86400e-6 / (ms * 1e-3) if isinstance(ms, float) else None)
    return table(args, "1", ["(1) one cluster, Langevin", "ms/step", "ns/day at 0.5 fs"], rows)


def bench_replicas(atoms, potential, model_file, device, args):
    n, rows = args.replicas, []
    graph = device.type == "cuda"
    ours = ours_ms(atoms, potential, device, args, replicas=n, neighbors="all_pairs", graph=graph)
    rows.append([f"ours, {n} replicas, all pairs{' + CUDA graph' if graph else ''}", ours])
    rows.append([f"ours, {n} replicas, Verlet list, eager", ours_ms(atoms, potential, device, args, replicas=n)])
    rows.append([f"TorchSim, {n} replicas ({args.torchsim_nl} list)",
                 peer(torchsim_ms, atoms, model_file, device, args, replicas=n)])
    rows.append(["MACECalculator + ASE, 1 replica", peer(mace_ase_ms, atoms, model_file, device, args)])
    for row in rows:
        atoms_per_step = len(atoms) * (1 if "1 replica" in row[0] else n)
        row.append(atoms_per_step * 1e3 / row[1] if isinstance(row[1], float) else None)
    return table(args, "2", ["(2) replicas of the cluster", "ms/step", "atom-steps/s"], rows)


def bench_water(potential_for, device, args):
    rows = []
    sizes = {"192": 64} if args.cpu_smoke else {k: SIZES[k] for k in ("24k", "96k")}
    for label, molecules in sizes.items():
        atoms = water_box(molecules, seed=0)
        potential = potential_for(atoms)
        step = ours_ms(atoms, potential, device, args, integrator="nve")
        pot = potential.to(device=device)
        if args.cueq:
            pot.enable_cueq()
        graph = mlff.models.batch_atoms([atoms], pot.cutoff, device=device, dtype=torch.float32)
        floor = time_ms(lambda: pot.evaluate(graph), device, warmup=args.warmup, repeats=args.steps)
        rows.append([len(atoms), step, floor, step / floor if isinstance(step, float) else None])
    return table(args, "3", ["(3) water atoms", "our NVE step ms", "forward+forces ms", "ratio"], rows)


def bench_drift(atoms, device, args):
    rows = []
    for dtype in ("float32", "float64"):
        potential = make_potential(atoms, dtype, smoke=args.cpu_smoke)
        config = load_md_config({"structure": "-", "device": str(device), "dtype": dtype, "integrator": "nve",
                                 "cueq": args.cueq and dtype == "float32", "timestep_fs": 0.5, "seed": 0})
        engine = BatchEngine(config, atoms, potential)
        engine.start()
        drift = EnergyDrift()
        for k in range(args.drift_steps):
            engine.step()
            if k % 10 == 0:
                drift.add(engine.state.step * 0.5, engine.conserved_energy())
        per_atom = float(drift.per_atom_per_ps(torch.tensor([len(atoms)]))[0])
        rows.append([dtype, args.drift_steps, args.drift_steps * 0.5e-3, per_atom])
    return table(args, "4", ["(4) NVE drift, cluster", "steps", "ps", "eV/atom/ps"], rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--structure", default="fdh-cluster:small:reactant")
    p.add_argument("--steps", type=int, default=200, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--replicas", type=int, default=512)
    p.add_argument("--drift-steps", type=int, default=20000, help="NVE steps for the drift benchmark (10 ps)")
    p.add_argument("--only", nargs="+", choices=["1", "2", "3", "4"], default=["1", "2", "3", "4"])
    p.add_argument("--cueq", action="store_true", help="cuEquivariance kernels everywhere")
    p.add_argument("--torchsim-nl", choices=["n2", "default"], default="n2",
                   help="TorchSim's neighbour list: its batched all-pairs one (n2) or the one it picks itself")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny run on the CPU (checks the script; no claims)")
    p.add_argument("--append-results", action="store_true", help="append to benchmarks/RESULTS.md (CUDA only)")
    p.add_argument("--json", help="append each benchmark's rows as a JSON line to this file as soon as measured")
    args = p.parse_args(argv)
    if args.cpu_smoke:
        args.steps, args.warmup, args.replicas, args.drift_steps = 3, 1, 4, 20
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu_smoke else "cpu")
    atoms = cluster_atoms(args.structure)
    initial_velocities(atoms, 300.0, 0)
    potential = make_potential(atoms, smoke=args.cpu_smoke)
    tables = []
    with tempfile.TemporaryDirectory() as tmp:
        model_file = Path(tmp) / "small.model"
        potential.to_mace_model(model_file)
        if "1" in args.only:
            tables.append(bench_cluster(atoms, potential, model_file, device, args))
        if "2" in args.only:
            tables.append(bench_replicas(atoms, potential, model_file, device, args))
    if "3" in args.only:
        tables.append(bench_water(lambda a: make_potential(a, smoke=args.cpu_smoke), device, args))
    if "4" in args.only:
        tables.append(bench_drift(atoms, device, args))
    text = "\n\n".join(tables)
    if args.append_results and device.type == "cuda":
        append_results(f"MD of the FDH cluster ({len(atoms)} atoms) and water, MACE small fp32"
                       f"{' + cuEquivariance' if args.cueq else ''}", text,
                       "Targets: (1) <= 2 ms/step; (2) >= 1.8 x TorchSim; (3) ratio <= 1.05.")
    elif args.append_results:
        print("not appended: RESULTS.md takes GPU runs only")


if __name__ == "__main__":
    main()
