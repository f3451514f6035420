"""The ASE engine (ASE's integrators + MLFFCalculator) behind the runner's interface."""

from __future__ import annotations

import numpy as np
import pytest
from md_helpers import one_thread

from mlff.md import load_md_config
from mlff.md.engines import AseEngine, BatchEngine

single_thread = pytest.fixture(autouse=True)(one_thread)


@pytest.fixture()
def pinned(pair):
    """The formic acid-water pair with atoms 1 and 5 fixed."""
    pair.info["fixed"] = [1, 5]
    return pair


def _config(**kw):
    return load_md_config({"structure": "unused", "dtype": "float64", "device": "cpu", "temperature_K": 500.0, **kw})


@pytest.mark.parametrize("integrator", ["nve", "langevin", "nhc"])
def test_ase_engine_never_moves_fixed_atoms(pinned, small_potential, integrator):
    engine = AseEngine(_config(engine="ase", integrator=integrator), pinned, small_potential)
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
        assert engine.dyn._thermostat._num_atoms_global == len(pinned) - 2


def test_engines_agree_on_nve_from_the_same_start(pinned, small_potential):
    config = _config(integrator="nve", timestep_fs=0.5)
    batch = BatchEngine(config, pinned, small_potential)
    ase = AseEngine(_config(engine="ase", integrator="nve", timestep_fs=0.5), pinned, small_potential)
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


def test_all_pairs_model_equals_the_cutoff_graph(cluster, committee_potential):
    """Pairs beyond r_max add exact zeros through MACE's cutoff envelope: same energies, forces, spreads."""
    from mlff.md import AllPairsModel, PotentialModel, state_from_atoms

    far = cluster.copy()
    far.positions *= 1.3  # some pairs well beyond the 4 Å cutoff
    state = state_from_atoms([cluster, far])
    dense, verlet = AllPairsModel(committee_potential, state)(state), PotentialModel(committee_potential)(state)
    n = len(cluster)
    assert dense is not None and AllPairsModel(committee_potential, state).edge_index.shape[1] == 2 * n * (n - 1)
    for key in ("energy", "forces", "energy_std", "forces_std"):
        np.testing.assert_allclose(dense[key].numpy(), verlet[key].numpy(), rtol=1e-10, atol=1e-10, err_msg=key)


def test_all_pairs_refuses_periodic_cells(periodic_box, small_potential):
    from mlff.errors import MLFFError
    from mlff.md import AllPairsModel, state_from_atoms

    with pytest.raises(MLFFError, match="all_pairs is for molecular clusters"):
        AllPairsModel(small_potential, state_from_atoms([periodic_box]))
    with pytest.raises(MLFFError, match="cuda_graph: true needs engine: gpu and neighbors: all_pairs"):
        _config(cuda_graph=True)


@pytest.mark.gpu
@pytest.mark.parametrize("integrator", ["nve", "langevin"])
def test_cuda_graph_steps_match_eager_steps(cluster, small_potential, integrator):
    import torch

    cluster.info["fixed"] = [0]
    common = dict(device="cuda", integrator=integrator, neighbors="all_pairs", replicas=3, timestep_fs=0.5)
    eager = BatchEngine(_config(**common), cluster, small_potential)
    graphed = BatchEngine(_config(**common, cuda_graph=True), cluster, small_potential)
    for engine in (eager, graphed):
        engine.start()
        for _ in range(12):
            engine.step()
    assert graphed._graphed.failed is None and graphed._graphed.graph is not None
    assert graphed.state.step == eager.state.step == 12
    if integrator == "nve":  # deterministic: the replayed graph reproduces the eager trajectory
        torch.testing.assert_close(graphed.state.positions, eager.state.positions, rtol=0, atol=1e-9)
    else:  # noise differs once the graph owns the generator; fixed atoms still never move
        assert torch.equal(graphed.state.positions[0], torch.as_tensor(cluster.positions[0], device="cuda"))
    assert torch.isfinite(graphed.state.forces).all()


@pytest.mark.gpu
@pytest.mark.parametrize("neighbors", ["verlet", "all_pairs"])
def test_gpu_engine_matches_the_cpu_reference(cluster, small_potential, neighbors):
    common = dict(integrator="nve", neighbors=neighbors, replicas=2, timestep_fs=0.5)
    cpu = BatchEngine(_config(**common), cluster, small_potential)
    gpu = BatchEngine(_config(**common, device="cuda"), cluster, small_potential)
    for engine in (cpu, gpu):
        engine.start()
        for _ in range(10):
            engine.step()
    np.testing.assert_allclose(gpu.state.positions.cpu().numpy(), cpu.state.positions.numpy(), atol=1e-9, rtol=0)
    np.testing.assert_allclose(gpu.state.energy.cpu().numpy(), cpu.state.energy.numpy(), atol=1e-8, rtol=0)


@pytest.mark.parametrize("engine_cls", [BatchEngine, AseEngine], ids=["batched-engine", "ase-engine"])
def test_engines_run_in_float32_without_touching_the_callers_potential(pinned, small_potential, engine_cls):
    import torch

    engine = engine_cls(_config(dtype="float32", engine="gpu" if engine_cls is BatchEngine else "ase"), pinned,
                        small_potential)
    engine.start()
    engine.step()
    assert small_potential.dtype == torch.float64  # converted a copy, not the caller's
    assert torch.isfinite(engine.state.forces).all() and engine.state.step == 1


@pytest.mark.parametrize("engine_cls", [BatchEngine, AseEngine])
def test_a_lone_atom_starts_at_rest_and_every_other_start_at_exactly_the_temperature(pair, small_potential, engine_cls):
    """Removing the total momentum leaves a lone free atom no degree of freedom: it starts at rest (scaling its
    velocity to a temperature used to divide by zero and stop the run on NaN positions); two atoms and more
    start at the temperature exactly (ASE's count, 3N) with no total momentum."""
    from mlff.md.engines import initial_velocities

    lone = pair[[0]]
    extra = {"engine": "ase"} if engine_cls is AseEngine else {}
    engine = engine_cls(_config(integrator="langevin", **extra), lone, small_potential)
    engine.start()
    for _ in range(3):
        engine.step()
    assert np.isfinite(engine.state.positions.numpy()).all() and np.isfinite(engine.state.velocities.numpy()).all()
    at_rest = lone.copy()
    initial_velocities(at_rest, 300.0, [0, 0])
    assert np.abs(at_rest.get_velocities()).max() == 0.0
    two = pair[[0, 1]]
    initial_velocities(two, 300.0, [0, 0])
    assert two.get_temperature() == pytest.approx(300.0, rel=1e-9)
    assert np.abs(two.get_momenta().sum(0)).max() < 1e-12
