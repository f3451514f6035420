"""Config errors are one line naming the bad key and what is expected (checked before anything runs)."""

from __future__ import annotations

import pytest
from learn_helpers import learn_dict

from mlff.errors import MLFFError
from mlff.learn.config import learn_config

SETS = {"seed": "seed.h5", "test": "test.h5"}


def _error(tmp_path, **changes) -> str:
    with pytest.raises(MLFFError) as info:
        learn_config(learn_dict(tmp_path, SETS, **changes))
    return str(info.value)


def test_a_good_config_loads(tmp_path):
    config = learn_config(learn_dict(tmp_path, SETS))
    assert config.select.trust_window_eV_A == [0.0, 100.0] and config.stop.total_labels == 6


@pytest.mark.parametrize("changes, words", [
    ({"explorer": {}}, ["unknown key 'explorer'", "explore"]),
    ({"select__trust_window": [0, 1]}, ["unknown key 'select.trust_window'", "trust_window_eV_A"]),
    ({"select__trust_window_eV_A": [0.5, 0.1]}, ["trust_window_eV_A", "lo < hi"]),
    ({"select__max_per_bin": 0}, ["select.max_per_bin = 0", ">= 1"]),
    ({"select__descriptor": "pca"}, ["select.descriptor", "mean, xi_atoms"]),
    ({"initial": {}}, ["initial", "exactly one"]),
    ({"initial": {"potential": "x", "train": {}}}, ["initial", "exactly one"]),
    ({"explore": {}}, ["explore", "md", "umbrella"]),
    ({"explore": {"md": {"steps": 10, "out": "x"}}}, ["explore.md", "'out'", "set by the loop"]),
    ({"explore": {"md": {"stepz": 10}}}, ["unknown key 'stepz'"]),
    ({"retrain": {"train": {"init_from": "x"}}}, ["retrain.train", "'init_from'", "set by the loop"]),
    ({"retrain": {"train": {"max_epoch": 2}}}, ["retrain.train", "unknown key 'max_epoch'"]),
    ({"retrain": {"train": {}, "from_scratch": True}}, ["from_scratch", "retrain.train.model"]),
    ({"label": {"oracle": {"backend": "gaussian"}}}, ["backend", "gaussian", "xtb"]),
    ({"test__regions_A": {"ts": [0.3, -0.3]}}, ["test.regions_A.ts", "[lo, hi]"]),
    ({"stop__total_labels": 0}, ["stop.total_labels = 0", ">= 1"]),
])
def test_config_errors_are_named(tmp_path, changes, words):
    message = _error(tmp_path, **changes)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_resume_refuses_a_changed_config_and_a_second_run(tmp_path):
    from mlff.learn.loop import _check_run

    config = learn_config(learn_dict(tmp_path, SETS))
    _check_run(tmp_path, config, resume=False)
    with pytest.raises(MLFFError, match="already holds a learning run; pass --resume"):
        _check_run(tmp_path, config, resume=False)
    changed = learn_config(learn_dict(tmp_path, SETS, retrain__replay_records=5))
    with pytest.raises(MLFFError, match=r"config changed since the run started \(retrain\)"):
        _check_run(tmp_path, changed, resume=True)
    _check_run(tmp_path, learn_config(learn_dict(tmp_path, SETS, stop__total_labels=9)), resume=True)  # allowed
    with pytest.raises(MLFFError, match="nothing to resume"):
        _check_run(tmp_path / "other", config, resume=True)


def test_resume_steers_explore_and_select_from_the_stages_not_yet_begun(tmp_path):
    """A campaign may change its exploration and selection between iterations: learn.json keeps the settings in
    force and a record of each change with the iteration it takes effect from; an exploration part-way refuses."""
    from mlff.learn.loop import _check_run
    from mlff.learn.state import IterationState, read_json

    _check_run(tmp_path, learn_config(learn_dict(tmp_path, SETS)), resume=False)
    state = IterationState(tmp_path, 0, "committee")
    state.save()
    for stage in ("explore", "select"):
        state.mark(stage, {})
    steered = learn_dict(tmp_path, SETS, select__per_iteration=5)
    _check_run(tmp_path, learn_config(steered), resume=True)
    record = read_json(tmp_path / "learn.json")
    assert record["config"]["select"]["per_iteration"] == 5
    (change,) = record["steering"]
    assert change["keys"] == ["select"] and change["from"] == {"select": 1}
    assert change["before"]["select"]["per_iteration"] != 5
    _check_run(tmp_path, learn_config(steered), resume=True)  # the same settings again: nothing new to record
    assert len(read_json(tmp_path / "learn.json")["steering"]) == 1

    IterationState(tmp_path, 1, "committee").save()  # iteration 1 has begun its exploration
    (tmp_path / "iter_001" / "explore").mkdir()
    moved = learn_dict(tmp_path, SETS, select__per_iteration=5, explore__skip_frames=3)
    with pytest.raises(MLFFError, match="exploration is part-way"):
        _check_run(tmp_path, learn_config(moved), resume=True)
    (tmp_path / "iter_001" / "explore").rmdir()
    _check_run(tmp_path, learn_config(moved), resume=True)
    assert read_json(tmp_path / "learn.json")["steering"][-1]["from"] == {"explore": 1}


@pytest.mark.parametrize("name, barrier_tol", [("fdh_learn_xtb.yaml", 0.5), ("fdh_learn_dft.yaml", None)])
def test_the_shipped_workflow_configs_load(name, barrier_tol, monkeypatch):
    from learn_helpers import REPO

    from mlff.learn import load_learn_config

    monkeypatch.chdir(REPO)  # their paths are relative to the repository root
    config = load_learn_config(REPO / "workflows" / name)
    assert config.explore.md is not None and config.explore.umbrella is not None
    assert config.test.tag == "holdout-scan" and config.stop.barrier_tol_kcal_mol == barrier_tol
    if name == "fdh_learn_dft.yaml":  # the CPU campaign: fast numerics through their calibration, two workers
        assert config.label.workers == 2 and config.label.calibration.endswith("numerics_fast_small.json")


def test_replay_at_another_level_than_the_oracle_goes_to_a_head_of_its_own(tmp_path, xtb_sets):
    from learn_helpers import REPO

    from mlff.learn.loop import _preflight
    from mlff.learn.retrain import replay_heads

    dft = str(REPO / "data" / "fdh-cluster" / "fdh_small.h5")
    sets = {**SETS, "seed": xtb_sets["seed"]}  # _preflight checks the initial training's datasets too
    config = learn_config(learn_dict(tmp_path, sets, retrain={"train": {}, "replay": dft}, test={"path": None}))
    _preflight(config)  # the xTB oracle with DFT replay data: fine, in two heads
    assert replay_heads(config) == ["gfn2-xtb", "dft"]  # the committee's own head first (data.heads)
    same = learn_config(learn_dict(tmp_path, SETS, retrain={"train": {}, "replay": dft}, test={"path": None},
                                   label={"oracle": {"backend": "pyscf"}}))
    assert replay_heads(same) is None  # the oracle's own level: one head
    scratch = learn_config(learn_dict(tmp_path, sets, retrain={"train": {"model": {"species": ["H", "C", "N", "O"]}},
                                                             "replay": dft, "from_scratch": True},
                                      test={"path": None}))
    with pytest.raises(MLFFError, match="head of its own.*from_scratch"):
        _preflight(scratch)
    with pytest.raises(MLFFError, match="test.path: no dataset at"):
        _preflight(learn_config(learn_dict(tmp_path, SETS)))
