"""Carrying a training across sessions: the resumable state packed into one file, the run directory deleted
(the session's machine is gone), restored elsewhere and resumed: the weights equal an uninterrupted run's;
a damaged or foreign bundle is named, never half restored; ``mlff train --carry`` does it end to end."""

import io
import os
import shutil
import signal
import tarfile

import pytest
import yaml
from helpers import assert_equal_weights, config

from mlff import load_potential
from mlff.cli import main
from mlff.errors import MLFFError
from mlff.train import train
from mlff.train.carry import pack_run, read_manifest, unpack_run
from mlff.train.loop import Trainer


def _cfg(small_config, emt_dataset, out, **kw):
    return config(small_config, emt_dataset, out, **{
        "max_epochs": 3, "batch_size": 6, "committee": 2, "data": {"paths": [str(emt_dataset)], "max_records": 18},
        "optim": {"name": "adamw", "lr": 0.02, "scheduler": "cosine", "ema_decay": 0.9}, **kw})


def _stop_at(step):
    def on_step(trainer):
        if trainer.state["global_step"] == step:
            trainer.request_stop()
    return on_step


@pytest.fixture(scope="module")
def straight(small_config, emt_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("carry") / "straight"
    return load_potential(train(_cfg(small_config, emt_dataset, out)).potential_dir)


def test_a_packed_run_resumes_elsewhere_with_the_weights_of_an_uninterrupted_run(small_config, emt_dataset,
                                                                                    tmp_path, straight):
    first = tmp_path / "session1" / "run"
    assert train(_cfg(small_config, emt_dataset, first), on_step=_stop_at(3)).status == "stopped"
    bundle = tmp_path / "carried" / "state.tar.gz"
    manifest = pack_run(first, bundle)
    assert sorted(manifest["members"]) == ["member_00"]  # member 0 stopped mid-run; member 1 never began
    assert manifest["members"]["member_00"]["global_step"] == 3
    assert pack_run(first, tmp_path / "again.tar.gz")["files"] == manifest["files"]
    assert read_manifest(bundle)["files"] == manifest["files"]
    shutil.rmtree(tmp_path / "session1")  # the machine of the first session is gone

    second = tmp_path / "session2" / "run"
    unpack_run(bundle, second)
    with pytest.raises(MLFFError, match="already holds a training run"):
        unpack_run(bundle, second)
    done = train(_cfg(small_config, emt_dataset, second), resume=True)
    assert done.status == "done"
    assert_equal_weights(load_potential(done.potential_dir), straight)


def _rewrite(bundle, out, change):
    with tarfile.open(bundle, "r:gz") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    change(files)
    with tarfile.open(out, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_a_damaged_or_foreign_bundle_is_named_and_nothing_is_restored(small_config, emt_dataset, tmp_path):
    run = tmp_path / "run"
    assert train(_cfg(small_config, emt_dataset, run, committee=1), on_step=_stop_at(1)).status == "stopped"
    bundle = tmp_path / "state.tar.gz"
    pack_run(run, bundle)
    flip = tmp_path / "flipped.tar.gz"
    _rewrite(bundle, flip, lambda f: f.__setitem__("member_00/checkpoint.pt", f["member_00/checkpoint.pt"][:-1] + b"x"))
    with pytest.raises(MLFFError, match="member_00/checkpoint.pt does not match its sha256"):
        unpack_run(flip, tmp_path / "restored")
    assert not (tmp_path / "restored").exists()
    bare = tmp_path / "bare.tar.gz"
    _rewrite(bundle, bare, lambda f: f.pop("manifest.json"))
    with pytest.raises(MLFFError, match="no manifest.json"):
        read_manifest(bare)
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(MLFFError, match="not a readable training state"):
        read_manifest(tmp_path / "junk.tar.gz")
    with pytest.raises(MLFFError, match="no checkpoint|no config.json"):
        pack_run(tmp_path / "nothing", tmp_path / "x.tar.gz")


def test_mlff_train_carry_restores_packs_on_a_stop_and_finishes(small_config, emt_dataset, tmp_path, straight,
                                                                  monkeypatch, capsys):
    bundle = tmp_path / "repo" / "train-state.tar.gz"
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(_cfg(small_config, emt_dataset, tmp_path / "s1")))
    step = Trainer._step

    def signalled(self, batch):  # the session's end: SIGTERM in the middle of member 0
        if self.state["global_step"] == 2 and self.checkpoint_path.parent.name == "member_00":
            os.kill(os.getpid(), signal.SIGTERM)
        return step(self, batch)

    monkeypatch.setattr(Trainer, "_step", signalled)
    assert main(["train", str(path), "--carry", str(bundle)]) == 75
    assert read_manifest(bundle)["members"]["member_00"]["global_step"] == 3
    monkeypatch.undo()
    shutil.rmtree(tmp_path / "s1")
    assert main(["train", str(path), "--out", str(tmp_path / "s2"), "--carry", str(bundle)]) == 0
    err = capsys.readouterr().err
    assert f"training state restored from {bundle}" in err and "member_00 epoch" in err
    assert_equal_weights(load_potential(tmp_path / "s2" / "potential"), straight)
    assert read_manifest(bundle)["members"]["member_01"]["done"] is True
    assert main(["train", str(path), "--out", str(tmp_path / "s2"), "--carry", str(tmp_path / "b.tar.gz"),
                 "--pack"]) == 0
    assert "packed into" in capsys.readouterr().out
