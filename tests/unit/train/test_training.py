"""Training learns (force RMSE falls far below the untrained value), committees differ and report a spread,
fine-tuning starts from the given model's predictions, and outputs are written with provenance."""

import json

import numpy as np
import pytest
import torch
from helpers import assert_equal_weights, config, emt_records, weights

from mlff import MLFFCalculator, load_potential
from mlff.train import train


def test_training_drops_force_rmse_well_below_untrained(small_config, emt_dataset, tmp_path):
    cfg = config(small_config, emt_dataset, tmp_path / "run", max_epochs=25, batch_size=4, plots=True,
                 data={"paths": [str(emt_dataset)], "max_records": 20, "split": {"train": 0.8, "valid": 0.2}},
                 optim={"lr": 0.02, "ema_decay": 0.95})
    result = train(cfg)
    rows = [r for r in _csv(tmp_path / "run" / "member_00" / "log.csv")]
    untrained = float(rows[0]["valid_forces_rmse_meV_A"])
    best = min(float(r["valid_forces_rmse_meV_A"]) for r in rows[1:])
    assert best < 0.3 * untrained, (untrained, best)
    train_loss = [float(r["train_loss"]) for r in rows[1:]]
    assert np.mean(train_loss[-5:]) < 0.2 * np.mean(train_loss[:3])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "provenance" in metrics and {"train", "valid"} <= set(metrics["metrics"]["splits"])
    assert {"all", "reactant", "ts", "product"} <= set(metrics["metrics"]["splits"]["train"])
    scan = metrics["metrics"]["scans"]["OH-stretch"]
    assert scan["n_points"] == 6 and scan["max_abs_error_kcal_mol_mean_aligned"] >= 0
    assert metrics["metrics"]["splits"]["train"]["all"]["forces_rmse_meV_A"] < untrained
    for png in ("parity.png", "learning_curves.png", "scan.png"):
        assert (tmp_path / "run" / png).read_bytes()[:4] == b"\x89PNG"
        assert (result.potential_dir / png).read_bytes() == (tmp_path / "run" / png).read_bytes()  # ships with it
    card = (result.potential_dir / "MODEL_CARD.md").read_text()
    assert "## Training" in card and "held-out scan".lower() in card.lower()
    assert "| level of theory | unknown (no provenance in the records) |" in card  # EMT records carry none
    assert "Training time (sum of epoch wall times, device " in card and "(25 epochs)" in card
    meta = json.loads((result.potential_dir / "potential.json").read_text())["metadata"]
    assert meta["training"]["data"][0]["sha256"] and meta["training"]["split_sizes"]["holdout-scan"] == 6


def _csv(path):
    import csv

    with open(path) as handle:
        return list(csv.DictReader(line for line in handle if not line.startswith("#")))


def test_committee_members_differ_and_calculator_reports_spread(small_config, emt_dataset, tmp_path):
    cfg = config(small_config, emt_dataset, tmp_path / "run", max_epochs=1, committee=2, dtype="float32",
                 data={"paths": [str(emt_dataset)], "max_records": 12})
    potential = load_potential(train(cfg).potential_dir)
    assert potential.committee_size == 2 and potential.dtype == torch.float32
    # a committee run stopped inside member 1 and resumed ends with the same committee
    cfg["out"] = str(tmp_path / "stopped")

    def stop_in_member_1(trainer):
        if trainer.checkpoint_path.parent.name == "member_01" and trainer.state["global_step"] == 1:
            trainer.request_stop()

    assert train(cfg, on_step=stop_in_member_1).status == "stopped"
    assert_equal_weights(load_potential(train(cfg, resume=True).potential_dir), potential)
    w0, w1 = (weights(type(potential)(potential.config, [m])) for m in potential.members)
    assert any(not torch.equal(w0[k], w1[k]) for k in w0 if w0[k].is_floating_point())
    atoms = emt_records(1, seed=9)[0]
    atoms.calc = MLFFCalculator(potential)
    atoms.get_potential_energy()
    assert atoms.calc.results["energy_std"] > 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    assert metrics["splits"]["train"]["all"]["energy_std_mean_meV_atom"] > 0
    assert float(np.max(atoms.calc.results["forces_std"])) > 0


def test_bootstrap_resamples_differ_between_members(small_config, emt_dataset):
    from mlff.train.config import train_config
    from mlff.train.data import load_records
    from mlff.train.run import _train_indices

    cfg = train_config(config(small_config, emt_dataset, "unused", committee=3))
    records = load_records(cfg.data)
    draws = [_train_indices(cfg, records, k) for k in range(3)]
    train_set = set(records.splits["train"].tolist())
    for d in draws:
        assert len(d) == len(train_set) and set(d.tolist()) <= train_set
        assert len(set(d.tolist())) < len(d)  # with replacement: some records twice
    assert not np.array_equal(draws[0], draws[1]) and not np.array_equal(draws[1], draws[2])


def test_repeat_draws_a_dataset_records_several_times_per_epoch(small_config, emt_dataset, tmp_path):
    from mlff.data import Dataset
    from mlff.errors import MLFFError
    from mlff.train.config import train_config
    from mlff.train.data import load_records
    from mlff.train.run import _train_indices

    extra = tmp_path / "extra.h5"
    Dataset.create(extra, description="a small extra set").append(emt_records(10, seed=5))
    cfg = train_config(config(small_config, emt_dataset, "unused", bootstrap=False))
    cfg.data.paths, cfg.data.repeat = [str(emt_dataset), str(extra)], [1, 3]
    records = load_records(cfg.data)
    n_first = records.sources[0]["records"]
    train = np.sort(records.splits["train"])
    draws = _train_indices(cfg, records, 0)
    counts = np.bincount(draws, minlength=len(records.atoms))
    assert set(counts[train[train < n_first]]) == {1} and set(counts[train[train >= n_first]]) == {3}
    assert (train >= n_first).any() and counts[np.setdiff1d(np.arange(len(counts)), train)].sum() == 0
    assert len(np.unique(records.splits["train"])) == len(records.splits["train"])  # metrics see each once
    with pytest.raises(MLFFError, match="data.repeat needs one whole number"):
        train_config(config(small_config, emt_dataset, "unused", data={"paths": [str(emt_dataset)], "repeat": [1, 2]}))


def test_e0s_shift_starts_a_finetune_at_the_new_levels_energy_offset(small_potential, small_config, tmp_path):
    from mlff.data import Dataset
    from mlff.errors import MLFFError
    from mlff.train.config import train_config
    from mlff.train.data import build_graphs, load_records
    from mlff.train.metrics import predict

    records = emt_records(12, seed=3)
    for atoms in records:  # "another level of theory": every energy 0.3 eV per atom higher
        atoms.calc.results["energy"] += 0.3 * len(atoms)
    path = tmp_path / "shifted.h5"
    Dataset.create(path, description="EMT + 0.3 eV/atom").append(records)
    model_file = tmp_path / "foundation.model"
    small_potential.to_mace_model(model_file)
    cfg = config(small_config, path, tmp_path / "run", max_epochs=0, init_from=str(model_file), e0s="shift")
    del cfg["model"]
    tuned = load_potential(train(cfg).potential_dir)
    loaded = load_records(train_config(cfg).data)
    graphs = build_graphs(loaded.atoms, small_potential.cutoff)
    train_idx = np.unique(loaded.splits["train"])
    before, after = predict(small_potential, graphs, train_idx), predict(tuned, graphs, train_idx)
    shift = np.mean((before.energy_ref - before.energy) / before.n_atoms)
    assert abs(shift) > 0.1  # the E0s had something to absorb
    assert abs(np.mean((after.energy_ref - after.energy) / after.n_atoms)) < 1e-5  # ... and did
    np.testing.assert_allclose(after.forces, before.forces, atol=1e-5)  # a constant per atom: forces unchanged
    e0_key = "0.atomic_energies_fn.atomic_energies"
    moved = (weights(tuned)[e0_key] - weights(small_potential)[e0_key]).double().numpy()
    np.testing.assert_allclose(moved, shift, atol=1e-5)  # the same for every element
    with pytest.raises(MLFFError, match="e0s: shift .* needs init_from"):
        train_config(config(small_config, path, tmp_path / "x", e0s="shift"))


def test_finetune_from_mace_model_starts_at_its_predictions(small_potential, small_config, emt_dataset, tmp_path):
    from mlff.train.config import train_config
    from mlff.train.data import build_graphs, load_records
    from mlff.train.metrics import error_summary, predict

    model_file = tmp_path / "colleague.model"
    small_potential.to_mace_model(model_file)
    cfg = config(small_config, emt_dataset, tmp_path / "run", max_epochs=1, init_from=str(model_file),
                 optim={"ema_decay": None, "lr": 0.01}, data={"paths": [str(emt_dataset)], "max_records": 12})
    del cfg["model"]
    tuned = load_potential(train(cfg).potential_dir)
    # row 0 of the log: the starting model on the validation split == the .model's own predictions there
    records = load_records(train_config(cfg).data)
    graphs = build_graphs(records.atoms, small_potential.cutoff)
    expected = error_summary(predict(small_potential, graphs, records.splits["valid"]))
    row0 = _csv(tmp_path / "run" / "member_00" / "log.csv")[0]
    assert row0["epoch"] == "0"
    assert abs(float(row0["valid_forces_rmse_meV_A"]) - expected["forces_rmse_meV_A"]) < 1e-9 * expected["forces_rmse_meV_A"]
    assert abs(float(row0["valid_energy_rmse_meV_atom"]) - expected["energy_rmse_meV_atom"]) < 1e-6
    # one epoch of training moved the weights, and the model's own E0s were kept (e0s: model)
    a, b = weights(tuned), weights(small_potential)
    changed = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], b[k])]
    assert changed and "0.atomic_energies_fn.atomic_energies" not in changed


def test_progress_reports_steps_within_an_epoch(small_config, emt_dataset, tmp_path, capsys, monkeypatch):
    from mlff.train.report import EpochReporter

    monkeypatch.setattr(EpochReporter, "step_every_s", 0.0)  # a line at every step (60 s apart otherwise)
    train(config(small_config, emt_dataset, tmp_path / "run", max_epochs=1, progress=True, bootstrap=False,
                 data={"paths": [str(emt_dataset)], "max_records": 24, "split": {"train": 0.75, "valid": 0.25}}))
    err = capsys.readouterr().err
    steps = [line for line in err.splitlines() if ": step " in line]
    assert steps and all(line.startswith("member 1/1 epoch 1/1: step ") and "steps/s, epoch ETA" in line for line in steps)
    done, total = np.array([line.split("step ")[1].split(",")[0].split("/") for line in steps], int).T
    # the first step only starts the clock, the last one is the epoch's own line
    assert total[0] >= 4 and set(total) == {total[0]} and list(done) == list(range(2, total[0]))
    assert "member 1/1 epoch 1/1: loss " in err


def test_a_potential_fine_tuned_from_a_directory_names_the_weights_it_started_from(small_potential, small_config,
                                                                                   emt_dataset, tmp_path):
    from mlff.models.store import save_potential, weights_pins
    from mlff.train.config import train_config
    from mlff.train.run import _origin

    foundation = tmp_path / "foundation"
    save_potential(small_potential, foundation)
    cfg = config(small_config, emt_dataset, tmp_path / "run", init_from=str(foundation))
    digest = weights_pins(foundation)["potential_sha256"]
    assert _origin(train_config(cfg)).endswith(f"fine-tuned from {foundation} (weights sha256 {digest[:16]}), seed 0")
    cfg["init_from"] = None  # from scratch: nothing to pin
    assert "weights sha256" not in _origin(train_config(cfg))
