"""Time to a validation force RMSE: `mlff train` vs mace-torch's `mace_run_train`, same data and hyperparameters.

    python benchmarks/train_vs_mace.py --data data/fdh-cluster/fdh_small.h5 --epochs 200 --append-results   # the H100 run
    python benchmarks/train_vs_mace.py --cpu-smoke        # checks that the script runs (tiny EMT data, no claims)

Both trainers start as fresh processes on the same train/valid extxyz split (mace-torch reads the extxyz, mlff the
same records as HDF5), with the same E0s (least squares on the training set), MACE small architecture, batch size,
learning rate, AMSGrad, EMA, plateau scheduler, loss weights, dtype and seed; no second stage. mace_run_train runs
``--epochs`` epochs; the target is the best validation force RMSE it reached, and its time is the wall time from
process start until its log first shows that value. mlff then trains until it reaches the target (or the same
number of epochs), timed the same way (wall time from process start, log files polled every 0.1 s).
Target (issue 4): mlff not slower.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from _common import append_results, emit_json, markdown_table

MODEL = {"species": ["H", "C", "N", "O"], "r_max": 5.0, "hidden_irreps": "128x0e", "max_ell": 3,
         "num_interactions": 2, "correlation": 3, "MLP_irreps": "16x0e", "radial_MLP": [64, 64, 64]}
TINY = {**MODEL, "r_max": 4.0, "hidden_irreps": "8x0e", "max_ell": 1, "correlation": 2, "radial_MLP": [16, 16]}


def prepare(data: Path | None, work: Path, n_smoke: int) -> tuple[Path, Path, Path, dict]:
    """train/valid extxyz files and an HDF5 copy holding only train+valid, with fitted E0s."""
    from mlff.data import Dataset, write_extxyz
    from mlff.train.e0s import fit_e0s

    if data is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit" / "train"))
        from helpers import emt_records

        records = emt_records(n_smoke, seed=1)
    else:
        ds = Dataset(data)
        records = ds.read(np.setdiff1d(np.arange(len(ds)), ds.indices(tag="holdout-scan")))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(records))
    n_valid = max(2, len(records) // 10)
    valid, train = [records[k] for k in order[:n_valid]], [records[k] for k in order[n_valid:]]
    write_extxyz(work / "train.xyz", train)
    write_extxyz(work / "valid.xyz", valid)
    for name, part in (("train", train), ("valid", valid)):
        for atoms in part:
            atoms.info["split"] = name
    h5 = Dataset.create(work / "data.h5", overwrite=True)
    h5.append(train + valid)  # the same split as the extxyz files (data.split_key: split)
    e0s = fit_e0s(train, [a.calc.results["energy"] for a in train], [1, 6, 7, 8])
    return work / "train.xyz", work / "valid.xyz", work / "data.h5", e0s


def watch(cmd: list[str], log_glob: str, read_rmse, target: float | None, limit_s: float, env: dict):
    """Run ``cmd``; poll its log; return (times [s], rmses [eV/Å]) of every validation, stopping at ``target``."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    seen, times, rmses = 0, [], []
    try:
        while True:
            done = proc.poll() is not None
            files = glob.glob(log_glob)
            values = read_rmse(files[0]) if files else []
            for v in values[seen:]:
                times.append(time.perf_counter() - start)
                rmses.append(v)
            seen = len(values)
            if done or (target is not None and rmses and min(rmses) <= target) or time.perf_counter() - start > limit_s:
                break
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
    if proc.returncode not in (0, None, -15) and not rmses:
        raise SystemExit(f"{cmd[0]} failed:\n{proc.stderr.read()[-3000:]}")
    return times, rmses


def mace_rmse(path: str) -> list[float]:
    out = []
    for line in Path(path).read_text().splitlines():
        d = json.loads(line)
        if d.get("mode") == "eval" and d.get("epoch") is not None:
            out.append(float(d["rmse_f"]))
    return out


def mlff_rmse(path: str) -> list[float]:
    with open(path) as fh:
        rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    return [float(r["valid_forces_rmse_meV_A"]) / 1000 for r in rows[1:] if r.get("valid_forces_rmse_meV_A")]


def mace_cmd(a, model, train, valid, e0s, work: Path) -> list[str]:
    z = {"H": 1, "C": 6, "N": 7, "O": 8}
    return ["mace_run_train", "--name", "bench", "--seed", "0", "--work_dir", str(work / "mace"),
            "--train_file", str(train), "--valid_file", str(valid), "--energy_key", "REF_energy",
            "--forces_key", "REF_forces", "--E0s", str({z[s]: v for s, v in e0s.items()}),
            "--model", "ScaleShiftMACE", "--hidden_irreps", model["hidden_irreps"], "--max_ell", str(model["max_ell"]),
            "--r_max", str(model["r_max"]), "--num_interactions", str(model["num_interactions"]),
            "--correlation", str(model["correlation"]), "--MLP_irreps", model["MLP_irreps"],
            "--radial_MLP", str(model["radial_MLP"]), "--loss", "weighted", "--energy_weight", "1",
            "--forces_weight", "100", "--batch_size", str(a.batch_size), "--valid_batch_size", str(a.batch_size),
            "--lr", str(a.lr), "--amsgrad", "--ema", "--ema_decay", "0.99", "--weight_decay", "5e-7",
            "--scheduler_patience", "5", "--lr_factor", "0.8", "--clip_grad", "10", "--max_num_epochs", str(a.epochs),
            "--eval_interval", "1", "--patience", "100000", "--default_dtype", a.dtype, "--device", a.device,
            "--num_workers", "0", "--error_table", "PerAtomRMSE"]


def mlff_config(a, model, h5: Path, e0s: dict, work: Path) -> Path:
    config = {"name": "bench", "out": str(work / "mlff"), "seed": 0, "model": model, "e0s": e0s,
              "data": {"paths": [str(h5)], "split_key": "split"},
              "loss": {"energy_weight": 1.0, "forces_weight": 100.0},
              "optim": {"name": "amsgrad", "lr": a.lr, "weight_decay": 5e-7, "scheduler": "plateau",
                        "plateau_factor": 0.8, "plateau_patience": 5, "clip_grad_norm": 10.0, "ema_decay": 0.99},
              "max_epochs": a.epochs, "batch_size": a.batch_size, "valid_batch_size": a.batch_size,
              "dtype": a.dtype, "device": a.device, "plots": False, "progress": False}
    path = work / "mlff.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="mlff HDF5 dataset (default: EMT molecules, smoke only)")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    p.add_argument("--limit-s", type=float, default=3600.0, help="wall-time limit per trainer")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny model and data on the CPU: checks the script only")
    p.add_argument("--keep", action="store_true", help="keep the work directory (data, logs, models)")
    p.add_argument("--append-results", action="store_true", help="append to RESULTS.md (GPU runs only)")
    p.add_argument("--json", help="append the result rows as a JSON line to this file")
    a = p.parse_args()
    import torch

    a.device = "cpu" if a.cpu_smoke or not torch.cuda.is_available() else "cuda"
    model = TINY if a.cpu_smoke else MODEL
    if a.cpu_smoke:
        a.epochs, a.batch_size = min(a.epochs, 3), 4
    work = Path(tempfile.mkdtemp(prefix="train_vs_mace_"))
    train, valid, h5, e0s = prepare(a.data, work, 24)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    mace_t, mace_r = watch(mace_cmd(a, model, train, valid, e0s, work), str(work / "mace" / "results" / "*_train.txt"),
                           mace_rmse, None, a.limit_s, env)
    if not mace_r:
        raise SystemExit("mace_run_train logged no validation")
    target = min(mace_r)
    t_mace = mace_t[int(np.argmin(mace_r))]
    cmd = [sys.executable, "-m", "mlff.cli", "train", str(mlff_config(a, model, h5, e0s, work))]
    ours_t, ours_r = watch(cmd, str(work / "mlff" / "member_00" / "log.csv"), mlff_rmse, target, a.limit_s, env)
    reached = [t for t, r in zip(ours_t, ours_r) if r <= target]
    t_ours = reached[0] if reached else None
    rows = [["mace_run_train", len(mace_r), 1000 * target, t_mace, t_mace / max(len(mace_r), 1)],
            ["mlff train", len(ours_r), 1000 * min(ours_r) if ours_r else None, t_ours,
             (ours_t[-1] / len(ours_t)) if ours_t else None]]
    header = ["trainer", "validations", "best valid F RMSE (meV/Å)", "s to target", "s per epoch (incl. start)"]
    table = markdown_table(header, rows)
    emit_json(a.json, "train_vs_mace", data=str(a.data), epochs=a.epochs, dtype=a.dtype,
              rows=[dict(zip(header, row)) for row in rows])
    print(table)
    print(f"target: {1000 * target:.2f} meV/Å; speed-up: {t_mace / t_ours:.2f}x" if t_ours else "mlff did not reach the target")
    if a.append_results and a.device == "cuda" and not a.cpu_smoke:
        append_results("Training: time to mace_run_train's validation force RMSE", table,
                       f"data: {a.data}; {a.epochs} mace epochs, batch {a.batch_size}, lr {a.lr}, {a.dtype}")
    if a.keep:
        print(f"work directory: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
