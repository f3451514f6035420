"""Bad values at the command line: `mlff md`, `mlff train`, `mlff data` give exit status 2 and one line of
stderr, never a traceback: typed config values, broken start structures, a missing potential, extxyz info
that is not a number, a bad --split."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.build import molecule
from ase.io import write

from mlff.cli import main


def _one_line_error(argv, capsys) -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlff: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.fixture()
def md_setup(tmp_path, small_config):
    atoms = molecule("HCOOH")
    write(tmp_path / "start.xyz", atoms)
    config = {"structure": str(tmp_path / "start.xyz"), "potential": small_config, "steps": 2, "device": "cpu",
              "dtype": "float64", "out": str(tmp_path / "run")}
    return tmp_path, atoms, config


@pytest.mark.parametrize("change, message", [
    ({"steps": "abc"}, "steps = 'abc' is not an int"),
    ({"steps": 5.5}, "steps = 5.5 is not an int"),
    ({"device": "gpu"}, "device = 'gpu' is not one of auto, cpu, cuda or cuda:N"),
    ({"temperature_K": float("nan")}, "temperature_K = nan is not a finite number"),
    ({"timestep_fs": -0.5}, "timestep_fs = -0.5 must be > 0"),
    ({"potential": "no-such-potential"}, "potential 'no-such-potential' not found"),
])
def test_mlff_md_bad_config_values(md_setup, capsys, change, message):
    tmp_path, _, config = md_setup
    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump({**config, **change}))
    err = _one_line_error(["md", path], capsys)
    assert message in err
    assert str(path) in err or "potential" in change  # a missing potential is named, not the config file


@pytest.mark.parametrize("kind, message", [("overlap", "atoms 0 and 1 overlap"), ("nan", "positions contain NaN"),
                                           ("zero cell", "the periodic cell has no volume")])
def test_mlff_md_refuses_a_broken_start_structure_before_the_first_step(md_setup, capsys, kind, message):
    tmp_path, atoms, config = md_setup
    if kind == "overlap":
        atoms.positions[1] = atoms.positions[0] + [0.1, 0.0, 0.0]
    elif kind == "nan":
        atoms.positions[2, 0] = np.nan
    else:
        atoms = Atoms(atoms.numbers, atoms.positions, cell=np.zeros((3, 3)), pbc=True)
    write(tmp_path / "start.xyz", atoms, format="extxyz")
    (tmp_path / "md.yaml").write_text(yaml.safe_dump(config))
    err = _one_line_error(["md", tmp_path / "md.yaml"], capsys)
    assert f"structure {tmp_path / 'start.xyz'}: {message}" in err
    assert not (tmp_path / "run" / "trajectory.h5").exists()


def test_mlff_md_as_a_subprocess_prints_one_line(md_setup):
    tmp_path, _, config = md_setup
    (tmp_path / "md.yaml").write_text("\n".join(f"{k}: {v}" for k, v in config.items() if k != "potential")
                                      + "\nsteps: abc\n")
    done = subprocess.run([sys.executable, "-m", "mlff.cli", "md", str(tmp_path / "md.yaml")], capture_output=True,
                          text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"mlff: error: {tmp_path / 'md.yaml'}: steps = 'abc' is not an int"]


def test_mlff_train_nested_bad_value(tmp_path, small_config, capsys):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"data": {"paths": ["d.h5"]}, "model": small_config, "optim": {"lr": "abc"}}))
    assert f"{path}: optim.lr = 'abc' is not a float" in _one_line_error(["train", path], capsys)


@pytest.mark.parametrize("info, message", [
    ("charge=abc", "charge = 'abc' is not a number"),
    ("charge=1.5", "charge = 1.5 is not a whole number"),
    ("multiplicity=two", "multiplicity = 'two' is not a number"),
    ("multiplicity=0", "multiplicity = 0 must be at least 1"),
    ("REF_energy=abc", "REF_energy = 'abc' is not a number"),
])
def test_extxyz_info_that_is_not_a_number(tmp_path, capsys, info, message):
    good = 'Properties=species:S:1:pos:R:3 charge=0\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n'
    bad = f'Properties=species:S:1:pos:R:3 {info}\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n'
    path = tmp_path / "pool.xyz"
    path.write_text(f"3\n{good}3\n{bad}")
    assert f"{path} record 1: {message}" in _one_line_error(["data", "validate", path, "--unlabelled"], capsys)


@pytest.mark.parametrize("split", ["train:abc", "training", "valid:-1", "", "test:1:2"])
def test_export_split_is_checked(tmp_path, capsys, split):
    from mlff.data import Dataset, make_record

    atoms = molecule("H2O")
    Dataset.create(tmp_path / "d.h5").append([make_record(atoms, energy=-1.0, forces=np.zeros((3, 3)))])
    err = _one_line_error(["data", "export", tmp_path / "d.h5", tmp_path / "out.xyz", "--split", split], capsys)
    assert f"--split {split!r}: expected train, valid or test" in err
    assert not (tmp_path / "out.xyz").exists()
