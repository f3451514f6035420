"""Exact resume: a run stopped midway (mid-epoch or at an epoch boundary) and resumed from its checkpoint
ends with weights torch.equal to an uninterrupted run; checkpoints load with weights_only=True."""

import os
import signal

import pytest
import torch
from helpers import assert_equal_weights, config

from mlff import load_potential
from mlff.errors import MLFFError
from mlff.train import train


def _cfg(small_config, emt_dataset, out):
    # AdamW, cosine LR, EMA, early-stopping bookkeeping and a second stage all carry state across the stop
    return config(small_config, emt_dataset, out, max_epochs=3, batch_size=6,
                  data={"paths": [str(emt_dataset)], "max_records": 18},
                  optim={"name": "adamw", "lr": 0.02, "scheduler": "cosine", "ema_decay": 0.9},
                  stage_two={"start_epoch": 2, "lr": 0.005}, patience=5)


@pytest.fixture(scope="module")
def reference(small_config, emt_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "straight"
    result = train(_cfg(small_config, emt_dataset, out))
    return load_potential(result.potential_dir)


def _stopper(after_steps):
    def on_step(trainer):
        if trainer.state["global_step"] == after_steps:
            trainer.request_stop()
    return on_step


@pytest.mark.parametrize("stop_after", [2, 4])  # steps per epoch: 2 (epoch boundary) ... 4 (mid stage two)
def test_stopped_and_resumed_run_ends_with_identical_weights(small_config, emt_dataset, tmp_path, reference, stop_after):
    cfg = _cfg(small_config, emt_dataset, tmp_path / "run")
    first = train(cfg, on_step=_stopper(stop_after))
    assert first.status == "stopped" and first.potential_dir is None
    ck = torch.load(tmp_path / "run" / "member_00" / "checkpoint.pt", weights_only=True)
    assert ck["state"]["global_step"] == stop_after
    with pytest.raises(MLFFError, match="--resume"):
        train(cfg)  # refuses to overwrite a run in progress
    second = train(cfg, resume=True)
    assert second.status == "done"
    assert_equal_weights(load_potential(second.potential_dir), reference)


def test_resume_refuses_a_changed_config(small_config, emt_dataset, tmp_path):
    cfg = _cfg(small_config, emt_dataset, tmp_path / "run")
    assert train(cfg, on_step=_stopper(1)).status == "stopped"
    cfg["optim"]["lr"] = 0.5
    with pytest.raises(MLFFError, match="config changed.*optim"):
        train(cfg, resume=True)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_writes_a_checkpoint_and_stops_cleanly(small_config, emt_dataset, tmp_path, signum):
    cfg = _cfg(small_config, emt_dataset, tmp_path / "run")
    sent, previous = [], signal.getsignal(signum)

    def on_step(trainer):
        if not sent:
            sent.append(os.kill(os.getpid(), signum))

    assert train(cfg, on_step=on_step).status == "stopped"
    assert signal.getsignal(signum) == previous  # the run's handler is removed again
    ck = torch.load(tmp_path / "run" / "member_00" / "checkpoint.pt", weights_only=True)
    assert ck["state"]["global_step"] == 1 and ck["state"]["epoch"] == 0 and ck["state"]["step"] == 1
