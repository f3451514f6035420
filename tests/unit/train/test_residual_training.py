"""A residual (delta) model trained on a frozen base: the new members learn what the base leaves, the base's
weights never move, and the metrics and the saved potential are the sum against the labels themselves."""

import json

import numpy as np
import pytest
from helpers import config

from mlff import load_potential
from mlff.errors import MLFFError
from mlff.models.graph import batch_atoms
from mlff.models.store import save_potential, weights_pins
from mlff.train import train
from mlff.train.config import train_config

DELTA = {"species": ["H", "C", "N", "O"], "r_max": 4.0, "hidden_irreps": "4x0e+4x1o", "max_ell": 1, "correlation": 1,
         "MLP_irreps": "4x0e", "radial_MLP": [8]}


def test_a_residual_model_learns_what_the_base_leaves(emt_dataset, committee_potential, tmp_path):
    from mlff.data import Dataset

    save_potential(committee_potential, tmp_path / "base")
    pins = weights_pins(tmp_path / "base")
    cfg = config(DELTA, emt_dataset, tmp_path / "run", max_epochs=12, committee=2, base=str(tmp_path / "base"),
                 e0s={"H": 0.0, "C": 0.0, "N": 0.0, "O": 0.0},
                 data={"paths": [str(emt_dataset)], "max_records": 16, "split": {"train": 0.8, "valid": 0.2}},
                 optim={"lr": 0.02})
    result = train(cfg)
    assert weights_pins(tmp_path / "base") == pins  # the base never trained
    model = load_potential(result.potential_dir)
    assert model.base is not None and model.committee_size == 2
    card = json.loads((result.potential_dir / "potential.json").read_text())
    assert card["base"]["sha256"] == pins["potential_sha256"] and "residual model" in card["metadata"]["origin"]
    # the reported errors are the sum's against the EMT labels (not the residuals'): the held-out scan (6 records)
    scan = Dataset(emt_dataset).read()[:6]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]["splits"]
    assert metrics["holdout-scan"]["all"]["n_records"] == 6 and all("holdout-scan" in r.info["tags"] for r in scan)
    reference = np.concatenate([r.get_forces() for r in scan])
    diff = model.evaluate(batch_atoms(scan, model.cutoff))["forces"].numpy() - reference
    pooled = np.sqrt(np.mean(diff ** 2)) * 1000
    assert pooled == pytest.approx(metrics["holdout-scan"]["all"]["forces_rmse_meV_A"], rel=1e-4)
    # on the records it trained on (and validated with) the sum is far better than the untrained base alone
    records = Dataset(emt_dataset).read()[6:16]
    reference = np.concatenate([r.get_forces() for r in records])

    def rmse(potential):
        return np.sqrt(np.mean((potential.evaluate(batch_atoms(records, potential.cutoff))["forces"].numpy()
                                - reference) ** 2)) * 1000

    assert rmse(model) < 0.5 * rmse(committee_potential)


def test_a_residual_model_trains_from_scratch_only(emt_dataset, tmp_path):
    cfg = config(DELTA, emt_dataset, tmp_path / "run", base="somewhere", init_from="elsewhere")
    with pytest.raises(MLFFError, match="cannot be combined with init_from"):
        train_config(cfg)
