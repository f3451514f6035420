"""Typed configs (mlff.config.from_dict): every value checked against its annotation and declared range,
across the MD, training, sampling and model configs; one line naming where, the key, the value and what
is expected. YAML 1.1's '5e-1'-is-a-string trap is read as the number it spells."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mlff.config import checked, device_setting, from_dict
from mlff.data.recipe import load_recipe
from mlff.errors import MLFFError
from mlff.md import load_md_config
from mlff.models.config import model_config
from mlff.train import load_train_config, train_config


def _md(**kw):
    return load_md_config({"structure": "unused.xyz", **kw})


def _train(**kw):
    return train_config({"data": {"paths": ["unused.h5"]}, "model": {"species": ["H"]}, **kw})


def _recipe(**kw):
    return load_recipe(kw)


def _model(**kw):
    return model_config({"species": ["H", "O"], **kw})


BAD = [  # (loader, keys, message)
    (_md, {"steps": "abc"}, "steps = 'abc' is not an int"),
    (_md, {"steps": 5.5}, "steps = 5.5 is not an int"),
    (_md, {"steps": True}, "steps = True is not an int"),
    (_md, {"steps": -1}, "steps = -1 must be >= 0"),
    (_md, {"replicas": 0}, "replicas = 0 must be >= 1"),
    (_md, {"device": "gpu"}, "device = 'gpu' is not one of auto, cpu, cuda or cuda:N"),
    (_md, {"device": "cuda:x"}, "device = 'cuda:x' is not one of"),
    (_md, {"temperature_K": math.nan}, "temperature_K = nan is not a finite number"),
    (_md, {"temperature_K": math.inf}, "temperature_K = inf is not a finite number"),
    (_md, {"temperature_K": "hot"}, "temperature_K = 'hot' is not a float"),
    (_md, {"timestep_fs": 0}, "timestep_fs = 0.0 must be > 0"),
    (_md, {"engine": "lammps"}, "engine = 'lammps' must be one of: gpu, ase"),
    (_md, {"dtype": "float16"}, "dtype = 'float16' must be one of: float32, float64"),
    (_md, {"init_velocities": "yes"}, "init_velocities = 'yes' is not a bool"),
    (_md, {"cueq": 1}, "cueq = 1 is not a bool"),
    (_md, {"max_force_eV_per_A": "abc"}, "max_force_eV_per_A = 'abc' is not a float or null"),
    (_md, {"max_temperature_K": -5}, "max_temperature_K = -5.0 must be > 0"),
    (_md, {"structure": 42}, "structure = 42 is not a string"),
    (_md, {"potential": 3}, "potential = 3 is not a string or a mapping or null"),
    (_train, {"optim": {"lr": "abc"}}, "optim.lr = 'abc' is not a float"),
    (_train, {"optim": {"lr": -0.1}}, "optim.lr = -0.1 must be > 0"),
    (_train, {"optim": {"lr": math.nan}}, "optim.lr = nan is not a finite number"),
    (_train, {"optim": {"name": "sgd"}}, "optim.name = 'sgd' must be one of: amsgrad, adamw"),
    (_train, {"optim": {"momentum": 0.9}}, "unknown key 'optim.momentum'"),
    (_train, {"optim": "fast"}, "optim = 'fast' is not a mapping"),
    (_train, {"loss": {"forces_weight": -1}}, "loss.forces_weight = -1.0 must be >= 0"),
    (_train, {"data": {"paths": ["a.h5"], "split": {"train": "most"}}}, "data.split.train = 'most' is not a float"),
    (_train, {"data": {"paths": [1]}}, "data.paths = [1] is not a string or a list of strings"),
    (_train, {"batch_size": 0}, "batch_size = 0 must be >= 1"),
    (_train, {"max_epochs": 2.5}, "max_epochs = 2.5 is not an int"),
    (_train, {"device": "gpu"}, "device = 'gpu' is not one of auto, cpu, cuda or cuda:N"),
    (_train, {"committee": "4"}, "committee = '4' is not an int"),
    (_train, {"stage_two": {"start_epoch": -1}}, "stage_two.start_epoch = -1 must be >= 0"),
    (_recipe, {"md_temperatures_K": [300, "hot"]}, "md_temperatures_K[1] = 'hot' is not a float"),
    (_recipe, {"md_temperatures_K": [300, -1]}, "md_temperatures_K[1] = -1.0 must be > 0"),
    (_recipe, {"size": "huge"}, "size = 'huge' must be one of: small, medium, large"),
    (_recipe, {"md_every": 0}, "md_every = 0 must be >= 1"),
    (_recipe, {"select": 10, "ts_min": 20}, "select (10) must be at least ts_min (20)"),
    (_model, {"r_max": 0}, "r_max = 0.0 must be > 0"),
    (_model, {"num_interactions": "two"}, "num_interactions = 'two' is not an int"),
    (_model, {"radial_MLP": [16, 16.5]}, "radial_MLP[1] = 16.5 is not an int"),
]


@pytest.mark.parametrize("loader, keys, message", BAD, ids=[f"{b[0].__name__[1:]}-{next(iter(b[1]))}-{i}"
                                                           for i, b in enumerate(BAD)])
def test_bad_values_are_one_line_naming_key_value_and_expectation(loader, keys, message):
    with pytest.raises(MLFFError) as caught:
        loader(**keys)
    text = str(caught.value)
    assert message in text and "\n" not in text
    assert text.split(": ", 1)[0] in ("md config", "train config", "sampling recipe", "model config")


def test_yaml_numbers_that_pyyaml_reads_as_strings(tmp_path):
    """PyYAML (YAML 1.1) needs a dot and a signed exponent for a float: 5e-1, 1e3 and 1.0e3 are strings."""
    path = tmp_path / "md.yaml"
    path.write_text("structure: x.xyz\ntimestep_fs: 5e-1\nsteps: 1e3\ntemperature_K: 300\nfriction_per_fs: 1.0e-2\n"
                    "nhc_chain: 4.0\nmax_force_eV_per_A: 2E+1\n")
    config = load_md_config(path)
    assert config.timestep_fs == 0.5 and isinstance(config.timestep_fs, float)
    assert config.steps == 1000 and type(config.steps) is int
    assert config.temperature_K == 300.0 and isinstance(config.temperature_K, float)
    assert config.friction_per_fs == 0.01 and config.max_force_eV_per_A == 20.0
    assert config.nhc_chain == 4 and type(config.nhc_chain) is int
    path.write_text("structure: x.xyz\nsteps: 5e-1\n")
    with pytest.raises(MLFFError, match=rf"^{path}: steps = '5e-1' is not an int$"):
        load_md_config(path)
    train = tmp_path / "train.yaml"
    train.write_text("data: {paths: [d.h5]}\nmodel: {species: [H]}\noptim: {lr: 1e-3, weight_decay: 5e-7}\n")
    assert load_train_config(train).optim.lr == 0.001 and load_train_config(train).optim.weight_decay == 5e-7
    train.write_text("data: {paths: [d.h5]}\nmodel: {species: [H]}\noptim: {lr: abc}\n")
    with pytest.raises(MLFFError, match=rf"^{train}: optim.lr = 'abc' is not a float$"):
        load_train_config(train)
    assert _recipe(md_temperatures_K=["3e2", 450]).md_temperatures_K == [300.0, 450.0]


def test_numbers_and_paths_are_normalised(tmp_path):
    config = _md(out=tmp_path / "run", steps=12.0, temperature_K=300, seed=3)
    assert config.out == str(tmp_path / "run") and type(config.steps) is int and config.temperature_K == 300.0
    train = _train(data={"paths": tmp_path / "one.h5"})
    assert train.data.paths == [str(tmp_path / "one.h5")]
    assert _md(device="cuda:1").device == "cuda:1" and _md(max_force_eV_per_A=None).max_force_eV_per_A is None


@dataclass
class _Inner:
    rate: float = checked(1.0, gt=0, le=10)


@dataclass
class _Outer:
    name: str
    anything: Any = None
    sizes: list[int] = field(default_factory=list)
    weights: dict[str, float] = checked(default_factory=dict, ge=0)
    either: int | list = 0
    wild: float = checked(0.0, nonfinite=True)
    device: str = device_setting()
    inner: _Inner = field(default_factory=_Inner)

    def __post_init__(self):
        if self.name == "bad":
            raise MLFFError("name 'bad' is taken")


@pytest.mark.parametrize("data, message", [
    ({}, "missing required key 'name'"),
    ({"name": "a", "nme": 1}, "unknown key 'nme'; expected one of: anything, device, either, inner, name"),
    ({"name": "a", "inner": {"rate": 11}}, "inner.rate = 11.0 must be <= 10"),
    ({"name": "a", "inner": {"rte": 1}}, "unknown key 'inner.rte'; expected one of: rate"),
    ({"name": "a", "sizes": [1, "2"]}, "sizes[1] = '2' is not an int"),
    ({"name": "a", "sizes": 3}, "sizes = 3 is not a list of ints"),
    ({"name": "a", "weights": {"x": -1}}, "weights.x = -1.0 must be >= 0"),
    ({"name": "a", "either": "x"}, "either = 'x' is not an int or a list"),
    ({"name": "bad"}, "where: name 'bad' is taken"),
])
def test_from_dict_names_the_full_key_path(data, message):
    with pytest.raises(MLFFError, match="^where: ") as caught:
        from_dict(_Outer, data, "where")
    assert message in str(caught.value)


def test_from_dict_accepts_what_the_annotations_allow():
    got = from_dict(_Outer, {"name": "a", "anything": object, "either": [1, "x"], "wild": math.inf,
                             "inner": {"rate": 10}, "weights": {"x": 2}}, "where")
    assert got.anything is object and got.either == [1, "x"] and got.wild == math.inf
    assert got.inner == _Inner(10.0) and got.weights == {"x": 2.0}
    with pytest.raises(MLFFError, match="where: config = 'text' is not a mapping"):
        from_dict(_Outer, "text", "where")


def test_shipped_configs_still_load():
    root = Path(__file__).resolve().parents[2]
    assert load_md_config(root / "workflows" / "fdh_md.yaml").steps > 0
    assert load_recipe(root / "workflows" / "fdh_dataset.yaml").select > 0
    for name in ("fdh_train.yaml", "fdh_train_medium.yaml"):
        assert load_train_config(root / "workflows" / name).optim.lr > 0
