"""``mlff data`` as a user runs it: import, info, export, validate, label, and one-line errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.io import read, write


def mlff(*args):
    return subprocess.run([sys.executable, "-m", "mlff.cli", "data", *map(str, args)], capture_output=True, text=True)


def _labelled_xyz(path, n=5, bad=None):
    frames = []
    for k in range(n):
        atoms = molecule("CH3OH")
        atoms.rattle(0.05, seed=k)
        emt = atoms.copy()
        emt.calc = EMT()
        atoms.info["REF_energy"] = emt.get_potential_energy()
        atoms.arrays["REF_forces"] = emt.get_forces()
        if k == bad:
            atoms.arrays["REF_forces"][2, 1] = np.nan
        frames.append(atoms)
    write(path, frames, format="extxyz")
    return frames


def test_import_info_export_round_trip(tmp_path):
    _labelled_xyz(tmp_path / "in.xyz")
    frames = read(tmp_path / "in.xyz", ":")  # as written: extxyz keeps 8 decimals
    done = mlff("import", tmp_path / "in.xyz", tmp_path / "d.h5")
    assert done.returncode == 0 and "5 records" in done.stdout, done.stderr
    info = mlff("info", tmp_path / "d.h5")
    assert info.returncode == 0 and "5 records, 0 failures" in info.stdout and "elements H, C, O" in info.stdout
    assert mlff("validate", tmp_path / "d.h5").returncode == 0
    done = mlff("export", tmp_path / "d.h5", tmp_path / "out.xyz")
    assert done.returncode == 0, done.stderr
    back = read(tmp_path / "out.xyz", ":")
    for a, b in zip(frames, back):
        np.testing.assert_array_equal(a.positions, b.positions)
        assert a.info["REF_energy"] == b.info["REF_energy"]
        np.testing.assert_array_equal(a.arrays["REF_forces"], b.arrays["REF_forces"])


def test_a_bad_record_is_one_line_naming_file_and_record(tmp_path):
    _labelled_xyz(tmp_path / "bad.xyz", bad=3)
    for command in ("validate", "import"):
        args = [tmp_path / "bad.xyz"] + ([tmp_path / "d.h5"] if command == "import" else [])
        done = mlff(command, *args)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        assert "bad.xyz" in done.stderr and "record 3" in done.stderr and "NaN" in done.stderr
    assert not (tmp_path / "d.h5").exists()  # nothing half-written


def test_label_runs_and_resumes_from_the_cli(tmp_path):
    pytest.importorskip("pyscf")
    frames = [molecule("H2O") for _ in range(2)]
    for k, atoms in enumerate(frames):
        atoms.rattle(0.02, seed=k)
        atoms.info.update(charge=0, multiplicity=1)
    write(tmp_path / "pool.xyz", frames, format="extxyz")
    args = ["label", tmp_path / "pool.xyz", tmp_path / "l.h5", "--functional", "hf", "--basis", "sto-3g", "--gas"]
    first = mlff(*args, "--limit", "1")
    assert first.returncode == 0 and "1 labelled" in first.stdout, first.stderr
    second = mlff(*args)
    assert second.returncode == 0 and "1 labelled" in second.stdout and "1 already done" in second.stdout
    info = mlff("info", tmp_path / "l.h5", "--json")
    assert '"records": 2' in info.stdout
