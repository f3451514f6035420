"""User errors in training configs and data: one clear line, through the library and through the CLI
(exit status 2, no traceback)."""

import pytest
import torch
import yaml
from ase.build import molecule
from helpers import config, emt_records

from mlff.cli import main
from mlff.data import Dataset, make_record
from mlff.errors import MLFFError
from mlff.train import train_config


def _cli(tmp_path, cfg, capsys) -> str:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlff: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_unknown_keys_are_named(small_config, emt_dataset, tmp_path, capsys):
    cfg = config(small_config, emt_dataset, tmp_path / "run", learning_rate=0.1)
    with pytest.raises(MLFFError, match="unknown key 'learning_rate'"):
        train_config(cfg)
    assert "unknown key 'learning_rate'" in _cli(tmp_path, cfg, capsys)
    nested = config(small_config, emt_dataset, tmp_path / "run", optim={"lr": 0.01, "momentum": 0.9})
    assert "unknown key 'optim.momentum'" in _cli(tmp_path, nested, capsys)
    model = config(small_config, emt_dataset, tmp_path / "run")
    model["model"]["hidden_channels"] = 8
    assert "model config: unknown key 'hidden_channels'" in _cli(tmp_path, model, capsys)


def test_dataset_without_forces(small_config, tmp_path, capsys):
    path = tmp_path / "energies_only.h5"
    atoms = molecule("H2O")
    Dataset.create(path).append([make_record(atoms, energy=-1.0)], require=("energy",))
    err = _cli(tmp_path, config(small_config, path, tmp_path / "run"), capsys)
    assert "record 0 has no forces" in err


def test_species_missing_from_the_model(small_config, tmp_path, capsys):
    path = tmp_path / "emt.h5"
    Dataset.create(path).append(emt_records(6))  # H, C, N, O
    cfg = config(small_config, path, tmp_path / "run")
    cfg["model"]["species"] = ["H", "C", "O"]
    err = _cli(tmp_path, cfg, capsys)
    assert "contains N, which the model's species" in err and "model.species" in err


def test_bad_values_and_missing_sections(small_config, emt_dataset, tmp_path, capsys):
    assert "optim.name = 'sgd' must be one of: amsgrad, adamw" in _cli(
        tmp_path, config(small_config, emt_dataset, tmp_path / "r", optim={"name": "sgd"}), capsys)
    no_model = config(small_config, emt_dataset, tmp_path / "r")
    del no_model["model"]
    assert "give 'model'" in _cli(tmp_path, no_model, capsys)
    assert "no dataset at" in _cli(tmp_path, config(small_config, tmp_path / "missing.h5", tmp_path / "r"), capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_asked_for_without_a_gpu_is_one_line(small_config, emt_dataset, tmp_path, capsys):
    err = _cli(tmp_path, config(small_config, emt_dataset, tmp_path / "r", device="cuda"), capsys)
    assert "device 'cuda' asked for, but torch sees no CUDA GPU" in err
