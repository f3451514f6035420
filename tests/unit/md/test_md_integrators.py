"""The torch integrators: agreement with ASE, conservation, sampling, fixed atoms, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units
from ase.build import molecule
from ase.constraints import FixAtoms
from ase.md.verlet import VelocityVerlet
from md_helpers import harmonic_systems, one_thread

from mlff import MLFFCalculator
from mlff.md import (PotentialModel, compute_forces, langevin_step, nhc_init, nhc_step, nve_step, state_from_atoms,
                     state_to_atoms)
from mlff.md.engines import initial_velocities
from mlff.md.integrators import nhc_energy
from mlff.md.state import KB_EV_PER_K


single_thread = pytest.fixture(autouse=True)(one_thread)


def _hot(atoms, seed=0, temperature_K=600.0):
    atoms = atoms.copy()
    initial_velocities(atoms, temperature_K, seed)
    return atoms


def test_nve_matches_ase_velocity_verlet(pair, small_potential):
    start = _hot(pair)
    ase_atoms = start.copy()
    ase_atoms.calc = MLFFCalculator(small_potential, device="cpu", skin=0.5)
    dyn = VelocityVerlet(ase_atoms, timestep=0.5 * units.fs)
    state = state_from_atoms([start])
    model = PotentialModel(small_potential, skin=0.5)
    compute_forces(state, model)
    for _ in range(50):
        dyn.run(1)
        nve_step(state, model, dt_fs=0.5)
    moved = np.abs(ase_atoms.positions - start.positions).max()
    assert moved > 0.05  # the trajectory went somewhere
    np.testing.assert_allclose(state.positions.numpy(), ase_atoms.positions, atol=1e-9, rtol=0)
    np.testing.assert_allclose(state.velocities.numpy() / units.fs, ase_atoms.get_velocities(), atol=1e-9, rtol=0)
    assert float(state.energy[0]) == pytest.approx(ase_atoms.get_potential_energy(), abs=1e-9)
    assert float(state.kinetic_energy()[0]) == pytest.approx(ase_atoms.get_kinetic_energy(), rel=1e-10)


def test_nve_conserves_energy_mace_and_harmonic(pair, small_potential):
    state = state_from_atoms([_hot(pair, temperature_K=900.0)])
    model = PotentialModel(small_potential)
    compute_forces(state, model)
    total, potential = [], []
    for _ in range(40):
        nve_step(state, model, dt_fs=0.25)
        total.append(float(state.energy[0] + state.kinetic_energy()[0]))
        potential.append(float(state.energy[0]))
    assert np.std(total) < 0.02 * np.std(potential)
    # harmonic: the velocity-Verlet shadow energy keeps the error O(dt^2) and bounded over many periods
    hstate, harmonic = harmonic_systems(2, 16, seed=3)
    hstate.velocities.normal_(generator=hstate.generator).mul_(0.05)
    compute_forces(hstate, harmonic)
    e0 = hstate.energy + hstate.kinetic_energy()
    errors = []
    for _ in range(2000):
        nve_step(hstate, harmonic, dt_fs=0.5)
        errors.append(((hstate.energy + hstate.kinetic_energy() - e0).abs() / e0).max().item())
    assert max(errors) < 1e-3
    assert abs(np.mean(errors[:1000]) - np.mean(errors[1000:])) < 2e-4  # no drift


def _equilibrium_sample(state, model, step, n_steps, burn_in, **kwargs):
    compute_forces(state, model)
    kinetic_T, potential = [], []
    for k in range(n_steps):
        step(state, model, **kwargs)
        if k >= burn_in:
            kinetic_T.append(state.temperature())
            potential.append(state.energy.clone())
    return torch.stack(kinetic_T).mean(0), torch.stack(potential).mean(0)


def test_langevin_baoab_samples_the_target_temperature():
    state, harmonic = harmonic_systems(3, 64, seed=1)
    state.temperature_K.copy_(torch.tensor([150.0, 300.0, 600.0], dtype=torch.float64))
    kinetic_T, potential = _equilibrium_sample(state, harmonic, langevin_step, 4000, 500, dt_fs=1.0,
                                               friction_per_fs=0.1)
    target = state.temperature_K
    np.testing.assert_allclose(kinetic_T.numpy(), target.numpy(), rtol=0.03)
    # configurational temperature: <E_pot> = 3/2 N kT for harmonic oscillators (BAOAB: exact for any dt)
    np.testing.assert_allclose(potential.numpy(), (1.5 * 64 * KB_EV_PER_K * target).numpy(), rtol=0.05)


def test_nose_hoover_chain_samples_the_target_temperature_and_conserves_its_energy():
    state, harmonic = harmonic_systems(2, 64, seed=2, temperature_K=300.0)
    state.temperature_K.copy_(torch.tensor([200.0, 400.0], dtype=torch.float64))
    initial = state_to_atoms(state)
    for atoms, temperature in zip(initial, (200.0, 400.0)):
        initial_velocities(atoms, temperature, 5)
    state.velocities.copy_(torch.as_tensor(np.concatenate([a.get_velocities() for a in initial]) * units.fs))
    nhc_init(state, tau_fs=20.0, chain_length=3)
    compute_forces(state, harmonic)
    conserved0 = state.energy + state.kinetic_energy() + nhc_energy(state)
    kinetic_T, potential = _equilibrium_sample(state, harmonic, nhc_step, 4000, 500, dt_fs=1.0)
    conserved = state.energy + state.kinetic_energy() + nhc_energy(state)
    np.testing.assert_allclose(kinetic_T.numpy(), [200.0, 400.0], rtol=0.05)
    np.testing.assert_allclose(potential.numpy(), (1.5 * 64 * KB_EV_PER_K * state.temperature_K).numpy(), rtol=0.05)
    assert ((conserved - conserved0).abs() / (64 * KB_EV_PER_K * state.temperature_K)).max() < 5e-3


@pytest.mark.parametrize("integrator", ["nve", "langevin", "nhc"])
def test_fixed_atoms_never_move(pair, small_potential, integrator):
    atoms = _hot(pair)
    atoms.set_constraint(FixAtoms(indices=[0, 3]))
    atoms.info["fixed"] = [6, 7]
    state = state_from_atoms([atoms], temperature_K=600.0, seed=4)
    fixed = state.fixed.clone()
    assert fixed.nonzero().flatten().tolist() == [0, 3, 6, 7]
    assert float(state.degrees_of_freedom()[0]) == 3 * (len(atoms) - 4)
    start = state.positions.clone()
    model = PotentialModel(small_potential)
    compute_forces(state, model)
    step = {"nve": lambda: nve_step(state, model, dt_fs=1.0),
            "langevin": lambda: langevin_step(state, model, dt_fs=1.0, friction_per_fs=0.1),
            "nhc": lambda: nhc_step(state, model, dt_fs=1.0)}[integrator]
    if integrator == "nhc":
        nhc_init(state, tau_fs=10.0)
    for _ in range(8):
        step()
    assert torch.equal(state.positions[fixed], start[fixed])
    assert (state.positions[~fixed] != start[~fixed]).any(-1).all()
    back = state_to_atoms(state)[0]
    assert sorted(back.constraints[0].index.tolist()) == [0, 3, 6, 7]


def test_batched_replicas_equal_single_runs(pair, small_potential):
    water = molecule("H2O")
    water.rattle(0.05, seed=1)
    systems = [_hot(pair, seed=1), _hot(water, seed=2), _hot(pair, seed=3)]
    batch = state_from_atoms(systems)
    batch_model = PotentialModel(small_potential)
    compute_forces(batch, batch_model)
    singles = [state_from_atoms([a]) for a in systems]
    models = [PotentialModel(small_potential) for _ in systems]
    for s, m in zip(singles, models):
        compute_forces(s, m)
    for _ in range(10):
        nve_step(batch, batch_model, dt_fs=0.5)
        for s, m in zip(singles, models):
            nve_step(s, m, dt_fs=0.5)
    for k, (s, sl) in enumerate(zip(singles, batch.atoms_slices())):
        np.testing.assert_allclose(batch.positions[sl].numpy(), s.positions.numpy(), atol=1e-10, rtol=0)
        np.testing.assert_allclose(batch.velocities[sl].numpy(), s.velocities.numpy(), atol=1e-10, rtol=0)
        assert float(batch.energy[k]) == pytest.approx(float(s.energy[0]), abs=1e-9)


def test_state_round_trip_through_atoms(cluster):
    atoms = cluster.copy()
    atoms.set_constraint(FixAtoms(indices=[2]))
    atoms = _hot(atoms)
    atoms.info["xi_atoms"] = [0, 1, 2]
    state = state_from_atoms([atoms, atoms])
    assert state.xi_atoms.tolist() == [[0, 1, 2], [len(atoms), len(atoms) + 1, len(atoms) + 2]]
    d = atoms.get_distance(0, 1) - atoms.get_distance(1, 2)
    np.testing.assert_allclose(state.xi().numpy(), [d, d], rtol=1e-12)
    back = state_to_atoms(state)
    for a in back:
        np.testing.assert_array_equal(a.positions, atoms.positions)
        np.testing.assert_allclose(a.get_velocities(), atoms.get_velocities(), rtol=1e-12)
        assert a.get_temperature() == pytest.approx(float(state.temperature()[0]), rel=1e-10)
