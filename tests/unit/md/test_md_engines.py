"""The ASE engine (ASE's integrators + MLFFCalculator) behind the runner's interface."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule
from md_helpers import one_thread

from mlff.md import load_md_config
from mlff.md.engines import AseEngine, BatchEngine

single_thread = pytest.fixture(autouse=True)(one_thread)


@pytest.fixture()
def pair():
    acid, water = molecule("HCOOH"), molecule("H2O")
    water.translate((0.3, 2.9, 0.2))
    atoms = acid + water
    atoms.rattle(0.05, seed=3)
    atoms.info["fixed"] = [1, 5]
    return atoms


def _config(**kw):
    return load_md_config({"structure": "unused", "dtype": "float64", "device": "cpu", "temperature_K": 500.0, **kw})


@pytest.mark.parametrize("integrator", ["nve", "langevin", "nhc"])
def test_ase_engine_never_moves_fixed_atoms(pair, small_potential, integrator):
    engine = AseEngine(_config(engine="ase", integrator=integrator), pair, small_potential)
    engine.start()
    start = engine.atoms.positions.copy()
    for _ in range(6):
        engine.step()
    moved = np.abs(engine.atoms.positions - start).max(1)
    assert moved[[1, 5]].tolist() == [0.0, 0.0]
    assert (np.delete(moved, [1, 5]) > 0).all()
    assert engine.state.step == 6 and engine.dyn.nsteps == 6
    np.testing.assert_array_equal(engine.state.positions.numpy(), engine.atoms.positions)
    assert float(engine.state.forces[[1, 5]].abs().max()) == 0.0
    if integrator == "nhc":  # ASE's own momenta array must not carry the fixed atoms' forces either
        assert np.abs(engine.dyn._p[[1, 5]]).max() == 0.0
        assert engine.dyn._thermostat._num_atoms_global == len(pair) - 2


def test_engines_agree_on_nve_from_the_same_start(pair, small_potential):
    config = _config(integrator="nve", timestep_fs=0.5)
    batch = BatchEngine(config, pair, small_potential)
    ase = AseEngine(_config(engine="ase", integrator="nve", timestep_fs=0.5), pair, small_potential)
    np.testing.assert_allclose(batch.state.velocities.numpy(), ase.state.velocities.numpy(), rtol=1e-12, atol=1e-15)
    batch.start()
    ase.start()
    for _ in range(20):
        batch.step()
        ase.step()
    np.testing.assert_allclose(batch.state.positions.numpy(), ase.state.positions.numpy(), atol=1e-9, rtol=0)
    e_batch = float(batch.conserved_energy()[0])
    assert e_batch == pytest.approx(float(ase.conserved_energy()[0]), abs=1e-8)


def test_ase_npt_changes_the_volume_of_a_periodic_cell(periodic_box, small_potential):
    engine = AseEngine(_config(engine="ase", integrator="npt", pressure_bar=1e5, barostat_tau_fs=20.0,
                               nhc_tau_fs=10.0, timestep_fs=0.5), periodic_box, small_potential)
    engine.start()
    volume = periodic_box.get_volume()
    for _ in range(4):
        engine.step()
    assert abs(engine.atoms.get_volume() - volume) > 1e-6 * volume
    np.testing.assert_allclose(engine.state.cell[0].numpy(), engine.atoms.cell.array, rtol=0, atol=0)
