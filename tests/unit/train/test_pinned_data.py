"""Training pins its data: a resume refuses a dataset whose content changed (or a damaged data.json, in one
line), the potential records the checksum of the data it was trained on, and `mlff train` exits 75 after
SIGTERM/SIGUSR1 like `mlff md`."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest
import yaml
from helpers import config, emt_records

from mlff.cli import main
from mlff.data import Dataset
from mlff.errors import MLFFError
from mlff.train import train
from mlff.train.loop import Trainer


def _stop_after_one_step(trainer):
    trainer.request_stop()


def test_resume_refuses_changed_data_and_the_potential_records_its_checksum(small_config, emt_dataset, tmp_path):
    data = tmp_path / "data.h5"
    shutil.copy(emt_dataset, data)
    cfg = config(small_config, data, tmp_path / "run", max_epochs=1, batch_size=12)
    assert train(cfg, on_step=_stop_after_one_step).status == "stopped"
    started = Dataset(data).checksum()
    Dataset(data).append(emt_records(1, seed=5))
    with pytest.raises(MLFFError, match=rf"dataset {data} changed since the run started \(checksum "
                                        rf"{started[:16]} then, {Dataset(data).checksum()[:16]} now\)"):
        train(cfg, resume=True)
    shutil.copy(emt_dataset, data)  # the data it started with
    for name in ("data.json", "config.json"):  # a damaged run file is one line naming it, not a traceback
        path = tmp_path / "run" / name
        saved = path.read_text()
        path.write_text(saved[: len(saved) // 2])
        with pytest.raises(MLFFError, match=rf"{name} is damaged \(JSONDecodeError: .*\); it should hold"):
            train(cfg, resume=True)
        path.write_text(saved)
    done = train(cfg, resume=True)  # the run goes on
    card = json.loads((done.potential_dir / "potential.json").read_text())
    assert [d["sha256"] for d in card["metadata"]["training"]["data"]] == [started]
    assert started in card["metadata"]["training_data"]


def _signal_at_the_first_step(monkeypatch, signum) -> None:
    """Send ``signum`` to this process at the first optimizer step, as the scheduler would while a run trains."""
    step = Trainer._step

    def signalled(self, batch):
        if self.state["global_step"] == 0:
            os.kill(os.getpid(), signum)
        return step(self, batch)

    monkeypatch.setattr(Trainer, "_step", signalled)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_mlff_train_exits_75_after_a_signal(small_config, emt_dataset, tmp_path, monkeypatch, capsys, signum):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config(small_config, emt_dataset, tmp_path / "run", max_epochs=50)))
    _signal_at_the_first_step(monkeypatch, signum)
    assert main(["train", str(path)]) == 75
    assert "continue with `mlff train" in capsys.readouterr().err
    monkeypatch.undo()
    assert (tmp_path / "run" / "member_00" / "checkpoint.pt").is_file()


def test_a_stopped_member_is_told_to_resume_as_that_member(small_config, emt_dataset, tmp_path, monkeypatch, capsys):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config(small_config, emt_dataset, tmp_path / "run", max_epochs=50, committee=2)))
    _signal_at_the_first_step(monkeypatch, signal.SIGTERM)
    assert main(["train", str(path), "--member", "1"]) == 75
    assert f"continue with `mlff train {path} --member 1 --resume`" in capsys.readouterr().err
