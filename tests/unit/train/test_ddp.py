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
    assert_same_weights(single, load_potential(tmp_path / "ddp" / "potential"))


def assert_same_weights(one, other) -> None:
    """The weights of two potentials agree: integer buffers exactly, floats to 1e-9."""
    a, b = weights(one), weights(other)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a if not a[k].is_floating_point())
    worst = max(float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point() and a[k].numel())
    print(f"largest weight difference {worst:.3g}")
    assert worst < 1e-9, f"largest weight difference {worst:.3g}"


DRIVER = """
import os, sys, time
from mlff.signals import RESUMABLE, record_exit
from mlff.train import load_train_config, loop, train

config, late = sys.argv[1:3]
rank = os.environ["RANK"]
read = loop.Trainer.resume

def read_late(self):  # rank 1 reads the checkpoint last, as a slower process does
    time.sleep(3)
    read(self)

if late == "reader" and rank == "1":
    loop.Trainer.resume = read_late
result = train(load_train_config(config), resume=late == "reader")
if late == "leaver" and rank == "0":  # rank 1 exits first; torchrun then stops rank 0 (SIGTERM)
    time.sleep(5)
sys.exit(record_exit(RESUMABLE if result.status == "stopped" else 0))
"""


def torchrun_two(tmp_path, cfg: dict, late: str, **env) -> subprocess.CompletedProcess:
    """``cfg`` trained by two gloo ranks, one of them ``late`` (tests/unit/train/test_ddp.py DRIVER)."""
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "driver.py").write_text(DRIVER)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(tmp_path / "driver.py"), str(tmp_path / "train.yaml"), late],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", **env},
                          timeout=180)


def test_a_run_stopped_at_the_end_of_an_epoch_resumes_under_two_processes_without_a_race(small_config, emt_dataset,
                                                                                          tmp_path):
    # Resumed at the end of an epoch, rank 0 ends that epoch and writes the next checkpoint before any collective;
    # a rank that read the checkpoint only then ran one epoch ahead, and both waited for each other forever (seen on
    # SLURM). Every rank must read the checkpoint before rank 0 writes again, and the weights match an unbroken run.
    cfg = config(small_config, emt_dataset, tmp_path / "single", max_epochs=2, batch_size=5, device="cpu",
                 eval_every=2,  # no validation (a collective) after epoch 1
                 data={"paths": [str(emt_dataset)], "max_records": 16})
    single = load_potential(train(cfg).potential_dir)

    cfg["out"] = str(tmp_path / "ddp")

    def stop_at_the_end_of_epoch_one(trainer):
        if trainer.state["epoch"] == 0 and trainer.state["step"] == len(trainer._batches(0)):
            trainer.request_stop()

    assert train(cfg, on_step=stop_at_the_end_of_epoch_one).status == "stopped"
    run = torchrun_two(tmp_path, cfg, "reader")
    assert run.returncode == 0, run.stderr[-3000:]
    assert_same_weights(single, load_potential(tmp_path / "ddp" / "potential"))


def test_every_rank_records_its_resumable_stop_before_torchrun_stops_the_slow_ones(small_config, emt_dataset,
                                                                                   tmp_path):
    # mlff slurm requeues a torchrun job only when every rank left 75 in its exit file; torchrun SIGTERMs the ranks
    # still running once one has exited, so a rank slow to leave must have recorded its stop before that
    cfg = config(small_config, emt_dataset, tmp_path / "ddp", max_epochs=2, batch_size=5, device="cpu",
                 data={"paths": [str(emt_dataset)], "max_records": 16})
    (tmp_path / "stop").touch()  # a stop request from the start: both ranks stop after their first step
    run = torchrun_two(tmp_path, cfg, "leaver", MLFF_STOP_FILE=str(tmp_path / "stop"),
                       MLFF_EXIT_STATUS=str(tmp_path / "exit"))
    assert run.returncode != 0  # torchrun reports the ranks' non-zero exits
    assert "SIGTERM" in run.stderr, run.stderr[-3000:]  # rank 0 was stopped by torchrun before it could exit
    assert [(tmp_path / f"exit.{r}").read_text().strip() for r in (0, 1)] == ["75", "75"], run.stderr[-3000:]
    assert (tmp_path / "ddp" / "member_00" / "checkpoint.pt").is_file()
