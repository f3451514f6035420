"""``mlff train`` checks the files its config names (datasets, init_from, base, an e0s dataset) before it
creates or writes its run directory: a typo leaves no run directory behind."""

import pytest
import yaml
from helpers import config

from mlff.cli import main
from mlff.errors import MLFFError
from mlff.train import train


@pytest.mark.parametrize("changes, words", [
    ({"data": {"paths": ["no/such/data.h5"]}}, ["data.paths", "no dataset at", "no/such/data.h5"]),
    ({"init_from": "no/such/potential"}, ["init_from", "no/such/potential"]),
    ({"base": "no-such-foundation"}, ["base", "no-such-foundation"]),
    ({"e0s": "no/such/isolated_atoms.h5"}, ["e0s", "no/such/isolated_atoms.h5"]),
])
def test_a_missing_input_is_refused_before_the_run_directory_is_created(small_config, emt_dataset, tmp_path,
                                                                        capsys, changes, words):
    out = tmp_path / "run"
    cfg = config(small_config, emt_dataset, out, **changes)
    if "init_from" in changes:
        cfg.pop("model")
    with pytest.raises(MLFFError) as info:
        train(cfg)
    assert all(word in str(info.value) for word in words), str(info.value)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(word in err for word in words), err
    assert not out.exists()
