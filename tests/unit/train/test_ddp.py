"""Data parallel training: two gloo processes under torchrun end with the weights of one process that
trains on the same global batches (the loss is normalised by the global batch)."""

import os
import subprocess
import sys

import torch
import yaml
from helpers import config, weights

from mlff import load_potential
from mlff.train import train


def test_two_gloo_processes_match_one_process(small_config, emt_dataset, tmp_path):
    cfg = config(small_config, emt_dataset, tmp_path / "single", max_epochs=2, batch_size=5, device="cpu",
                 data={"paths": [str(emt_dataset)], "max_records": 16}, stage_two={"start_epoch": 1, "lr": 0.003})
    single = load_potential(train(cfg).potential_dir)

    cfg["out"] = str(tmp_path / "ddp")
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "mlff.cli", "train", str(tmp_path / "train.yaml")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    parallel = load_potential(tmp_path / "ddp" / "potential")
    a, b = weights(single), weights(parallel)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a if not a[k].is_floating_point())
    worst = max(float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point() and a[k].numel())
    print(f"largest weight difference {worst:.3g}")
    assert worst < 1e-9, f"largest weight difference {worst:.3g}"
