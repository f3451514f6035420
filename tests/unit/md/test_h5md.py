"""H5MD trajectories: exact round trips, groups, restart truncation, killed writers, MDAnalysis and ase.io."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import warnings

import h5py
import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

import ase.io
from mlff.errors import MLFFError
from mlff.md.h5md import EV_TO_KJ_PER_MOL, H5MDWriter, read_h5md

TRICLINIC = np.array([[7.0, 0.0, 0.0], [1.8, 6.5, 0.0], [-1.2, 0.9, 6.8]])
OBS = ("potential_energy", "kinetic_energy", "temperature", "xi")


def _frames(n_atoms: int, n_frames: int, n_groups: int = 1, seed: int = 0) -> list[dict]:
    """Deterministic MD-like frames: positions Å, velocities Å/fs, forces eV/Å, a cell per group, observables."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_frames):
        out.append({"step": 10 * k, "time_fs": 5.0 * k + 0.25,
                    "positions": rng.normal(scale=3.0, size=(n_atoms, 3)),
                    "velocities": rng.normal(scale=0.01, size=(n_atoms, 3)),
                    "forces": rng.normal(size=(n_atoms, 3)),
                    "cell": TRICLINIC * (1 + 0.01 * rng.random((n_groups, 1, 1))),
                    "observables": {name: rng.normal(size=n_groups) for name in OBS}})
    return out


def _write(path, frames, numbers, masses, pbc, **kwargs) -> None:
    with H5MDWriter(path, numbers, masses, pbc, observables=OBS, provenance={"test": True}, **kwargs) as writer:
        for fr in frames:
            writer.write(fr["step"], fr["time_fs"], fr["positions"], fr["cell"], velocities=fr["velocities"],
                         forces=fr["forces"], observables=fr["observables"])


def _system(n_atoms=7, seed=1):
    rng = np.random.default_rng(seed)
    numbers = rng.choice([1, 6, 7, 8], size=n_atoms)
    masses = rng.uniform(1.0, 16.0, size=n_atoms)  # not ASE's defaults: masses must come from the file
    return numbers, masses


def _all_datasets(path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


@pytest.mark.parametrize("pbc", [True, False, [True, True, False]])
def test_round_trip_every_field(tmp_path, pbc):
    numbers, masses = _system()
    frames = _frames(len(numbers), 5)
    path = tmp_path / "t.h5md"
    _write(path, frames, numbers, masses, pbc)
    periodic = np.broadcast_to(np.asarray(pbc), (3,))
    with h5py.File(path, "r") as f:  # stored values: exact float64, documented units
        group = f["particles/all"]
        for k, fr in enumerate(frames):
            assert np.array_equal(group["position/value"][k], fr["positions"])
            assert np.array_equal(group["velocity/value"][k], fr["velocities"])
            assert np.array_equal(group["force/value"][k], fr["forces"] * EV_TO_KJ_PER_MOL)
            for name in OBS:
                assert f[f"observables/all/{name}/value"][k] == fr["observables"][name][0]
        assert group["position/step"][()].tolist() == [fr["step"] for fr in frames]
        assert group["position/time"][()].tolist() == [fr["time_fs"] for fr in frames]
        assert list(group["box"].attrs["boundary"]) == ["periodic" if p else "none" for p in periodic]
        assert ("edges" in group["box"]) == periodic.any()
    images = read_h5md(path)
    assert len(images) == len(frames)
    for atoms, fr in zip(images, frames):
        assert np.array_equal(atoms.numbers, numbers) and np.array_equal(atoms.get_masses(), masses)
        assert np.array_equal(atoms.positions, fr["positions"])
        assert np.array_equal(atoms.pbc, periodic)
        assert np.array_equal(atoms.cell.array, fr["cell"][0] if periodic.any() else np.zeros((3, 3)))
        np.testing.assert_allclose(atoms.get_velocities() * units.fs, fr["velocities"], rtol=1e-14, atol=0)
        np.testing.assert_allclose(atoms.get_forces(), fr["forces"], rtol=1e-14, atol=0)
        assert atoms.get_potential_energy() == fr["observables"]["potential_energy"][0]
        assert atoms.info["step"] == fr["step"] and atoms.info["time_fs"] == fr["time_fs"]
        assert all(atoms.info[name] == fr["observables"][name][0] for name in OBS)


def test_torch_inputs_and_index_selection(tmp_path):
    numbers, masses = _system()
    frames = _frames(len(numbers), 6)
    path = tmp_path / "t.h5md"
    with H5MDWriter(path, numbers, torch.tensor(masses), True, fields=("position", "force"),
                    provenance={}) as writer:
        for fr in frames:
            pos32 = torch.tensor(fr["positions"], dtype=torch.float32)
            writer.write(torch.tensor(fr["step"]), fr["time_fs"], pos32, torch.tensor(fr["cell"][0]),
                         forces=torch.tensor(fr["forces"]))
            fr["positions"] = pos32.double().numpy()  # float32 values are stored exactly as float64
    images = read_h5md(path)
    assert all(np.array_equal(a.positions, fr["positions"]) for a, fr in zip(images, frames))
    assert not images[0].has("momenta")  # no velocities stored
    for index, expected in [(-1, [50]), ("::2", [0, 20, 40]), (slice(4, 0, -2), [40, 20]), ([5, 0, 5], [50, 0, 50])]:
        assert [a.info["step"] for a in read_h5md(path, index)] == expected


def test_every_keeps_multiples_only(tmp_path):
    numbers, masses = _system()
    path = tmp_path / "t.h5md"
    rng = np.random.default_rng(0)
    with H5MDWriter(path, numbers, masses, False, fields=("position",), every=3, provenance={}) as writer:
        kept = [writer.write(step, 0.5 * step, rng.normal(size=(len(numbers), 3))) for step in range(10)]
    assert kept == [step % 3 == 0 for step in range(10)]
    assert [a.info["step"] for a in read_h5md(path)] == [0, 3, 6, 9]


def test_groups_one_per_system(tmp_path):
    numbers, masses = _system(9)
    groups = {"system_0000": slice(0, 4), "system_0001": np.array([4, 6, 8]), "system_0002": [5, 7]}
    pbc = np.array([[True, True, True], [False, False, False], [True, True, False]])
    frames = _frames(len(numbers), 4, n_groups=3)
    path = tmp_path / "t.h5md"
    _write(path, frames, numbers, masses, pbc, groups=groups)
    for g, (name, index) in enumerate(groups.items()):
        ids = np.arange(len(numbers))[index]
        images = read_h5md(path, ":", group=name)
        for atoms, fr in zip(images, frames):
            assert np.array_equal(atoms.numbers, numbers[ids])
            assert np.array_equal(atoms.positions, fr["positions"][ids])
            assert np.array_equal(atoms.pbc, pbc[g])
            assert np.array_equal(atoms.cell.array, fr["cell"][g] if pbc[g].any() else np.zeros((3, 3)))
            assert atoms.info["xi"] == fr["observables"]["xi"][g]
            np.testing.assert_allclose(atoms.get_forces(), fr["forces"][ids], rtol=1e-14)
    picked = ase.io.read(path, ":", format="h5md", group="system_0002")  # through ASE, one system
    assert [a.info["step"] for a in picked] == [fr["step"] for fr in frames] and len(picked[0]) == 2
    with pytest.raises(MLFFError, match=r"3 particle groups .*system_0001.*group="):
        read_h5md(path)
    with pytest.raises(MLFFError, match="no particle group 'nope'"):
        read_h5md(path, group="nope")


def test_h5md_layout_units_chunks_compression(tmp_path):
    numbers, masses = _system()
    path = tmp_path / "t.h5md"
    _write(path, _frames(len(numbers), 3), numbers, masses, True)
    with h5py.File(path, "r") as f:
        assert f["h5md"].attrs["version"].tolist() == [1, 1]
        assert f["h5md/author"].attrs["name"] and f["h5md/creator"].attrs["name"] == "mlff"
        assert '"test": true' in f["parameters/mlff"].attrs["provenance"]
        group = f["particles/all"]
        assert group["box"].attrs["dimension"] == 3
        units_found = {name: group[f"{name}/value"].attrs["unit"] for name in ("position", "velocity", "force")}
        assert units_found == {"position": "Angstrom", "velocity": "Angstrom fs-1", "force": "kJ mol-1 Angstrom-1"}
        assert group["box/edges/value"].attrs["unit"] == "Angstrom" and group["position/time"].attrs["unit"] == "fs"
        assert f["observables/all/temperature/value"].attrs["unit"] == "K"
        assert f["observables/all/potential_energy/value"].attrs["unit"] == "eV"
        for name in ("position/value", "velocity/value", "force/value"):  # per atom: one gzip chunk per frame
            dataset = group[name]
            assert dataset.chunks == (1, len(numbers), 3) and dataset.maxshape == (None, len(numbers), 3)
            assert dataset.compression == "gzip" and dataset.compression_opts == 4 and dataset.shuffle
        for dataset in (group["box/edges/value"], group["position/step"], f["observables/all/xi/value"]):
            assert dataset.chunks[0] > 1 and dataset.maxshape[0] is None and dataset.compression is None
        assert f["parameters/mlff/frames"].attrs["all"] == 3  # frames a completed flush vouches for
        assert group["velocity/step"] == group["position/step"]  # hard links: one clock per group
        assert f["observables/all/xi/time"] == group["position/time"]


def test_restart_truncates_and_appends_like_an_uninterrupted_run(tmp_path):
    numbers, masses = _system()
    frames = _frames(len(numbers), 12)
    full, restarted = tmp_path / "full.h5md", tmp_path / "restarted.h5md"
    _write(full, frames, numbers, masses, True, every=10)

    def write(writer, frs):
        for fr in frs:
            writer.write(fr["step"], fr["time_fs"], fr["positions"], fr["cell"], velocities=fr["velocities"],
                         forces=fr["forces"], observables=fr["observables"])

    first = H5MDWriter(restarted, numbers, masses, True, observables=OBS, every=10, provenance={"test": True})
    write(first, frames[:5])
    first.flush()  # the checkpoint at step 40 is written with the trajectory flushed
    write(first, frames[5:8])
    first.flush()  # frames after the checkpoint reach the disk, then the run dies (no close)
    write(first, frames[8:9])
    del first
    with H5MDWriter(restarted, numbers, masses, True, observables=OBS, every=10, provenance={"test": True},
                    restart_step=40) as writer:
        write(writer, frames[4:])  # the restarted run re-sends its checkpoint frame (step 40): kept once
    a, b = _all_datasets(full), _all_datasets(restarted)
    assert sorted(a) == sorted(b)
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    with h5py.File(restarted, "r") as f:
        assert '"restart_step": 40' in f["parameters/mlff"].attrs["restarts"]


def test_restart_refuses_lost_frames_and_other_systems(tmp_path):
    numbers, masses = _system()
    path = tmp_path / "t.h5md"
    _write(path, _frames(len(numbers), 4), numbers, masses, True)  # steps 0..30
    with pytest.raises(MLFFError, match="ends at step 30, before checkpoint step 60"):
        H5MDWriter(path, numbers, masses, True, observables=OBS, restart_step=60)
    with pytest.raises(MLFFError, match="different atoms"):
        H5MDWriter(path, numbers[::-1], masses, True, observables=OBS, restart_step=20)
    with pytest.raises(MLFFError, match="observables"):
        H5MDWriter(path, numbers, masses, True, observables=("temperature",), restart_step=20)
    with pytest.raises(MLFFError, match="does not exist"):
        H5MDWriter(tmp_path / "none.h5md", numbers, masses, True, restart_step=20)


KILLED = """
import os, signal, numpy as np
from mlff.md.h5md import H5MDWriter
rng = np.random.default_rng(5)
writer = H5MDWriter({path!r}, [8, 1, 1], [16.0, 1.0, 1.0], True, fields=("position", "velocity"),
                    observables=("temperature",), provenance={{}})
for step in range(8):
    if step == 5:
        writer.flush()
    writer.write(step, 0.5 * step, rng.normal(size=(3, 3)), np.eye(3) * 9.0, velocities=rng.normal(size=(3, 3)),
                 observables={{"temperature": 300.0 + step}})
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_killed_writer_keeps_flushed_frames(tmp_path):
    path = tmp_path / "killed.h5md"
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED.format(path=str(path)))], timeout=120)
    assert done.returncode == -9
    rng = np.random.default_rng(5)
    expected = [(rng.normal(size=(3, 3)), rng.normal(size=(3, 3))) for _ in range(5)]
    images = read_h5md(path)
    assert [a.info["step"] for a in images] == [0, 1, 2, 3, 4]
    for atoms, (positions, velocities) in zip(images, expected):
        assert np.array_equal(atoms.positions, positions)
        np.testing.assert_allclose(atoms.get_velocities() * units.fs, velocities, rtol=1e-14)
    with H5MDWriter(path, [8, 1, 1], [16.0, 1.0, 1.0], True, fields=("position", "velocity"),
                    observables=("temperature",), provenance={}, restart_step=4) as writer:
        writer.write(5, 2.5, np.zeros((3, 3)), np.eye(3) * 9.0, velocities=np.zeros((3, 3)),
                     observables={"temperature": 1.0})
    assert [a.info["temperature"] for a in read_h5md(path)] == [300.0, 301.0, 302.0, 303.0, 304.0, 1.0]


def test_frames_past_the_last_completed_flush_are_ignored(tmp_path):
    """A crash inside a flush can leave longer datasets than the flush's commit mark: readers stop at the mark."""
    numbers, masses = _system()
    frames = _frames(len(numbers), 4)
    path = tmp_path / "t.h5md"
    _write(path, frames[:3], numbers, masses, True)
    with h5py.File(path, "r+") as f:  # what a writer killed mid-flush may leave: grown datasets, part written
        group = f["particles/all"]
        datasets = [group[n] for n in ("position/value", "velocity/value", "force/value", "box/edges/value",
                                       "position/step", "position/time")]
        datasets += [f[f"observables/all/{name}/value"] for name in OBS]
        for dataset in datasets:
            dataset.resize(5, axis=0)
        group["position/step"][3] = 30
        group["position/value"][3] = frames[3]["positions"]
        assert group["position/step"][4] == -1 and np.isnan(group["force/value"][4]).all()  # fill values
    assert [a.info["step"] for a in read_h5md(path)] == [0, 10, 20]
    with h5py.File(path, "r+") as f:
        f["parameters/mlff/frames"].attrs["all"] = 5
    with pytest.raises(MLFFError, match=r"frames \[4\] are lost"):
        read_h5md(path)
    with pytest.raises(MLFFError, match="are lost"):
        H5MDWriter(path, numbers, masses, True, observables=OBS, provenance={}, restart_step=20)
    with h5py.File(path, "r+") as f:
        f["parameters/mlff/frames"].attrs["all"] = 3
    with H5MDWriter(path, numbers, masses, True, observables=OBS, provenance={}, restart_step=20) as writer:
        fr = frames[3]
        writer.write(fr["step"], fr["time_fs"], fr["positions"], fr["cell"], velocities=fr["velocities"],
                     forces=fr["forces"], observables=fr["observables"])
    images = read_h5md(path)
    assert [a.info["step"] for a in images] == [0, 10, 20, 30]
    np.testing.assert_allclose(images[3].get_forces(), frames[3]["forces"], rtol=1e-14)


@pytest.mark.parametrize("pbc", [True, False])
def test_mdanalysis_reads_converted_units(tmp_path, pbc):
    mda = pytest.importorskip("MDAnalysis")
    numbers, masses = _system()
    frames = _frames(len(numbers), 4)
    path = tmp_path / "t.h5md"
    _write(path, frames, numbers, masses, pbc)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        universe = mda.Universe.empty(len(numbers), trajectory=False)
        universe.load_new(str(path), format="H5MD")
        assert len(universe.trajectory) == len(frames)
        for ts, fr in zip(universe.trajectory, frames):
            np.testing.assert_allclose(ts.positions, fr["positions"], rtol=1e-6, atol=1e-6)  # Å (float32)
            np.testing.assert_allclose(ts.velocities, fr["velocities"] * 1000.0, rtol=1e-6)  # Å/ps
            np.testing.assert_allclose(ts.forces, fr["forces"] * 96.4853321233, rtol=1e-6)  # kJ/(mol Å)
            assert ts.time == pytest.approx(fr["time_fs"] / 1000.0, rel=1e-12)  # ps
            assert ts.data["step"] == fr["step"]
            assert ts.data["all/temperature"] == fr["observables"]["temperature"][0]
            if pbc:
                cellpar = Atoms(cell=fr["cell"][0]).cell.cellpar()
                np.testing.assert_allclose(ts.dimensions, cellpar, rtol=1e-6)
            else:
                assert ts.dimensions is None


def test_ase_io_plugin_reads_and_writes(tmp_path):
    numbers, masses = _system()
    frames = _frames(len(numbers), 3)
    path = tmp_path / "t.h5md"
    _write(path, frames, numbers, masses, True)
    images = ase.io.read(path, ":", format="h5md")
    assert [a.info["step"] for a in images] == [0, 10, 20]
    assert np.array_equal(ase.io.read(path).positions, frames[-1]["positions"])  # by extension, last frame
    assert ase.io.read(path, 1, format="h5md").info["step"] == 10
    for atoms in images:
        atoms.calc = SinglePointCalculator(atoms, energy=atoms.calc.results["energy"],
                                           forces=atoms.calc.results["forces"])
    copy = tmp_path / "copy.h5md"
    ase.io.write(copy, images, format="h5md")
    for a, b in zip(images, ase.io.read(copy, ":")):
        assert np.array_equal(a.positions, b.positions) and np.array_equal(a.cell.array, b.cell.array)
        np.testing.assert_allclose(b.get_forces(), a.get_forces(), rtol=1e-14)
        np.testing.assert_allclose(b.get_velocities(), a.get_velocities(), rtol=1e-14)
        assert b.get_potential_energy() == a.get_potential_energy() and b.info["step"] == a.info["step"]


@pytest.mark.parametrize("first", ["ase.io", "ase._4.plugins"])
def test_ase_registrations_survive_any_import_order(first):
    """The h5md format and mlff's calculator plugin both register, whichever ASE module is imported first."""
    code = (f"import warnings; warnings.simplefilter('error'); import {first}; import ase.io, ase._4.plugins\n"
            "from ase.io.formats import ioformats\n"
            "names = {p.name for p in ase._4.plugins.plugins}\n"
            "assert 'h5md' in ioformats and 'mlff' in names and 'h5md' in names, names\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_user_errors(tmp_path):
    numbers, masses = _system()
    n = len(numbers)
    path = tmp_path / "t.h5md"
    writer = H5MDWriter(path, numbers, masses, True, observables=("temperature",), provenance={})
    with pytest.raises(MLFFError, match="already exists"):
        H5MDWriter(path, numbers, masses, True, provenance={})
    good = {"cell": np.eye(3) * 9, "velocities": np.zeros((n, 3)), "forces": np.zeros((n, 3)),
            "observables": {"temperature": 300.0}}
    with pytest.raises(MLFFError, match=rf"positions has shape \({n + 1}, 3\), expected \({n}, 3\)"):
        writer.write(0, 0.0, np.zeros((n + 1, 3)), **good)
    with pytest.raises(MLFFError, match=r"cell has shape \(2, 3\)"):
        writer.write(0, 0.0, np.zeros((n, 3)), **{**good, "cell": np.eye(3)[:2]})
    with pytest.raises(MLFFError, match="velocities missing"):
        writer.write(0, 0.0, np.zeros((n, 3)), **{**good, "velocities": None})
    with pytest.raises(MLFFError, match=r"unknown \['pressure'\]"):
        writer.write(0, 0.0, np.zeros((n, 3)), **{**good, "observables": {"temperature": 1.0, "pressure": 1.0}})
    assert writer.write(0, 0.0, np.zeros((n, 3)), **good)
    with pytest.raises(MLFFError, match="step 0 is not after the last written step 0"):
        writer.write(0, 0.0, np.zeros((n, 3)), **good)
    writer.close()
    with pytest.raises(MLFFError, match=r"pbc has shape \(2, 3\)"):
        H5MDWriter(tmp_path / "b.h5md", numbers, masses, np.ones((2, 3), bool))
    with pytest.raises(MLFFError, match="must include 'position'"):
        H5MDWriter(tmp_path / "b.h5md", numbers, masses, True, fields=("velocity",))
    with pytest.raises(MLFFError, match="group 'g' has atom indices outside"):
        H5MDWriter(tmp_path / "b.h5md", numbers, masses, True, groups={"g": [0, n]})
    (tmp_path / "plain.h5").write_bytes(b"not hdf5")
    with pytest.raises(MLFFError, match="not a readable HDF5 file"):
        read_h5md(tmp_path / "plain.h5")


FLUSHING = """
import sys, numpy as np
from mlff.md.h5md import H5MDWriter
rng = np.random.default_rng(3)
writer = H5MDWriter(sys.argv[1], [8] * 8, [16.0] * 8, True, groups={"a": slice(0, 4), "b": slice(4, 8)},
                    observables=("temperature",), provenance={})
print("ready", flush=True)
for step in range(1000000):
    writer.write(step, 0.5 * step, rng.normal(size=(8, 3)), np.eye(3) * 9.0, velocities=rng.normal(size=(8, 3)),
                 forces=rng.normal(size=(8, 3)), observables={"temperature": rng.normal(size=2)})
    writer.flush()
"""


@pytest.mark.slow
def test_writer_killed_inside_flushes_keeps_every_committed_frame(tmp_path):
    """SIGKILL a writer that flushes every frame (so most kills land inside a flush): committed frames survive."""
    rng = np.random.default_rng(3)
    expected = []
    for _ in range(3000):
        positions = rng.normal(size=(8, 3))
        rng.normal(size=(8, 3)), rng.normal(size=(8, 3)), rng.normal(size=2)
        expected.append(positions)
    for trial, delay_s in enumerate((0.2, 0.45, 0.7, 0.95)):
        path = tmp_path / f"k{trial}.h5md"
        proc = subprocess.Popen([sys.executable, "-c", FLUSHING, str(path)], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay_s)
        proc.kill()
        proc.wait(timeout=60)
        counts = []
        for group, atoms_slice in (("a", slice(0, 4)), ("b", slice(4, 8))):
            images = read_h5md(path, group=group)
            assert [a.info["step"] for a in images] == list(range(len(images)))
            for atoms in images:
                assert np.array_equal(atoms.positions, expected[atoms.info["step"]][atoms_slice])
            counts.append(len(images))
        assert min(counts) > 0 and max(counts) - min(counts) <= 1
        last = min(counts) - 1
        with H5MDWriter(path, [8] * 8, [16.0] * 8, True, groups={"a": slice(0, 4), "b": slice(4, 8)},
                        observables=("temperature",), provenance={}, restart_step=last):
            pass
        assert len(read_h5md(path, group="a")) == len(read_h5md(path, group="b")) == last + 1
