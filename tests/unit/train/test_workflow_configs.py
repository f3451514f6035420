"""The shipped FDH training configs load, name real keys only, and describe the promised models."""

from pathlib import Path

import pytest

from mlff.models.config import mace_kwargs, model_config
from mlff.train import load_train_config

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("name, hidden", [("fdh_train.yaml", "128x0e"), ("fdh_train_medium.yaml", "128x0e+128x1o")])
def test_fdh_training_configs(name, hidden):
    config = load_train_config(ROOT / "workflows" / name)
    model = model_config(config.model)
    mace_kwargs(model)  # every name resolves in mace-torch
    assert model.hidden_irreps == hidden and model.max_ell == 3 and model.num_interactions == 2
    assert model.correlation == 3 and model.r_max == 5.0 and config.committee >= 4 and config.bootstrap
    assert all(Path(p).name.startswith("fdh_") for p in config.data.paths)
    assert config.data.holdout_tag == "holdout-scan"
