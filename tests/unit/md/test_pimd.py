"""Path-integral MD step functions against exact answers: the normal-mode transform, the free ring polymer,
P = 1 as classical BAOAB, and a harmonic oscillator whose bead distribution is known exactly at every P and
converges to the quantum result as P grows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms

from mlff.md.integrators import compute_forces, langevin_step
from mlff.md.pimd import (
    HBAR_EV_FS,
    from_normal_modes,
    harmonic_bead_variance,
    normal_modes,
    pimd_step,
    ring_polymer,
    ring_polymer_observables,
)
from mlff.md.state import KB_EV_PER_K, KINETIC, state_from_atoms

H_MASS = 1.008


class Harmonic:
    """V = m omega^2 |x|^2 / 2 per atom (an isotropic well at the origin), omega in 1/fs."""

    def __init__(self, omega_per_fs: float):
        self.omega = omega_per_fs

    def __call__(self, state):
        k = (state.masses * self.omega ** 2 * KINETIC).unsqueeze(-1)  # eV/Å^2
        per_atom = 0.5 * (k * state.positions ** 2).sum(-1)
        energy = torch.zeros(state.n_systems, dtype=state.dtype).index_add_(0, state.system_idx, per_atom)
        return {"energy": energy, "forces": -k * state.positions}


def _state(systems: int, atoms: int = 1, temperature_K: float = 300.0, seed: int = 0, spread: float = 0.0):
    rng = np.random.default_rng(seed)
    structures = [Atoms("H" * atoms, positions=rng.normal(0.0, spread, (atoms, 3)) if spread else np.zeros((atoms, 3)))
                  for _ in range(systems)]
    return state_from_atoms(structures, temperature_K=temperature_K, seed=seed)


@pytest.mark.parametrize("beads", [1, 2, 5, 8])
def test_the_normal_mode_transform_is_orthogonal_and_its_frequencies_are_the_ring_polymers(beads):
    rp = ring_polymer(beads, torch.full((3,), 300.0, dtype=torch.float64))
    c = rp.transform
    torch.testing.assert_close(c.T @ c, torch.eye(beads, dtype=torch.float64), atol=1e-12, rtol=0)
    # the spring matrix (2 on the diagonal, -1 to each neighbour on the ring) is diagonal in the modes
    ring = 2.0 * torch.eye(beads, dtype=torch.float64)
    for j in range(beads):
        ring[j, (j + 1) % beads] -= 1.0
        ring[j, (j - 1) % beads] -= 1.0
    if beads == 1:
        ring.zero_()
    omega_p = beads * KB_EV_PER_K * 300.0 / HBAR_EV_FS
    torch.testing.assert_close(c.T @ ring @ c * omega_p ** 2, torch.diag(rp.omega[0] ** 2), atol=1e-12, rtol=0)
    x = torch.randn(3 * beads * 4, 3, dtype=torch.float64)
    modes = normal_modes(x, rp)
    torch.testing.assert_close(modes[:, 0], x.view(3, beads, 4, 3).mean(1) * math.sqrt(beads))  # the centroid
    torch.testing.assert_close(from_normal_modes(modes, rp), x)


def test_one_bead_is_classical_baoab_langevin():
    model = Harmonic(0.1)
    a, b = _state(6, atoms=2, spread=0.1, seed=3), _state(6, atoms=2, spread=0.1, seed=3)
    for s in (a, b):
        s.velocities.normal_(0.0, 0.01, generator=torch.Generator().manual_seed(1))
        compute_forces(s, model)
    rp = ring_polymer(1, a.temperature_K)
    for _ in range(50):
        langevin_step(a, model, dt_fs=0.5, friction_per_fs=0.02)
        pimd_step(b, model, dt_fs=0.5, rp=rp, friction_per_fs=0.02)
    torch.testing.assert_close(b.positions, a.positions, atol=1e-10, rtol=0)
    torch.testing.assert_close(b.velocities, a.velocities, atol=1e-10, rtol=0)


@pytest.mark.parametrize("cayley", [False, True])
def test_the_free_ring_polymer_conserves_its_energy(cayley):
    """No thermostat (lambda = 0, no centroid friction) and no external potential: kinetic + spring energy is
    conserved by the exact rotation to rounding, and by the Cayley step to second order in dt."""

    class Free:
        def __call__(self, state):
            return {"energy": torch.zeros(state.n_systems, dtype=state.dtype),
                    "forces": torch.zeros_like(state.positions)}

    beads = 16
    state = _state(2 * beads, atoms=3, spread=0.05, seed=4)
    state.velocities.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(2))
    rp = ring_polymer(beads, torch.full((2,), 300.0, dtype=torch.float64))

    def energy():
        kinetic = 0.5 * KINETIC * (state.masses * (state.velocities ** 2).sum(-1)).sum()
        return float(kinetic + ring_polymer_observables(state, rp)["spring"].sum())

    start = energy()
    drift = []
    for _ in range(200):
        pimd_step(state, Free(), dt_fs=1.0, rp=rp, friction_per_fs=0.0, pile_lambda=0.0, cayley=cayley)
        drift.append(abs(energy() - start) / start)
    assert max(drift) < (1e-10 if not cayley else 0.05)


def test_fixed_atoms_keep_every_bead_in_place():
    beads = 4
    state = _state(2 * beads, atoms=3, spread=0.1, seed=5)
    state.fixed[1::3] = True  # atom 1 of every bead of every system
    rp = ring_polymer(beads, torch.full((2,), 300.0, dtype=torch.float64))
    model = Harmonic(0.1)
    compute_forces(state, model)
    start = state.positions.clone()
    for _ in range(20):
        pimd_step(state, model, dt_fs=0.5, rp=rp, friction_per_fs=0.05)
    torch.testing.assert_close(state.positions[state.fixed], start[state.fixed], atol=0, rtol=0)
    assert float(state.velocities[state.fixed].abs().max()) == 0.0
    assert float((state.positions - start)[~state.fixed].abs().min()) > 0.0


def test_the_exact_bead_variance_goes_from_classical_to_quantum():
    omega, T = 0.1 / HBAR_EV_FS, 300.0  # hbar omega = 0.1 eV, beta hbar omega = 3.9: far from classical
    kT = KB_EV_PER_K * T
    classical = kT / (H_MASS * omega ** 2 * KINETIC)
    quantum = HBAR_EV_FS / (2.0 * H_MASS * omega * KINETIC) / math.tanh(0.1 / (2.0 * kT))
    assert harmonic_bead_variance(1, omega, H_MASS, T) == pytest.approx(classical, rel=1e-12)
    errors = [abs(harmonic_bead_variance(p, omega, H_MASS, T) / quantum - 1.0) for p in (8, 16, 32)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 2e-3
    assert errors[0] / errors[1] == pytest.approx(4.0, rel=0.1) and errors[1] / errors[2] == pytest.approx(4.0, rel=0.1)


@pytest.mark.parametrize("beads", [1, 8])
def test_pile_l_samples_the_exact_ring_polymer_distribution_of_a_harmonic_well(beads):
    """128 physical systems of one H atom in a well of hbar omega = 0.1 eV at 300 K: the sampled bead <x^2>
    matches the exact finite-P value (classical at P = 1; 2.7x larger at P = 8), the centroid-virial and the
    primitive kinetic energies agree, and the total energy approaches hbar omega coth(beta hbar omega / 2)
    per dimension / 2."""
    omega, T, systems = 0.1 / HBAR_EV_FS, 300.0, 128
    model = Harmonic(omega)
    state = _state(systems * beads, temperature_K=T, seed=11)
    rp = ring_polymer(beads, torch.full((systems,), T, dtype=torch.float64))
    compute_forces(state, model)
    x2, k_cv, k_prim, pot = [], [], [], []
    for step in range(1600):
        pimd_step(state, model, dt_fs=0.5, rp=rp, friction_per_fs=0.05)
        if step >= 400 and step % 10 == 0:
            obs = ring_polymer_observables(state, rp)
            x2.append(float((state.positions ** 2).mean()))
            k_cv.append(float(obs["kinetic_virial"].mean()))
            k_prim.append(float(obs["kinetic_primitive"].mean()))
            pot.append(float(obs["potential"].mean()))
    exact = harmonic_bead_variance(beads, omega, H_MASS, T)
    assert np.mean(x2) == pytest.approx(exact, rel=0.04)
    assert np.mean(k_cv) == pytest.approx(np.mean(k_prim), rel=0.05)
    # in a harmonic well the virial theorem holds for the estimators: <K_cv> = <V>
    assert np.mean(k_cv) == pytest.approx(np.mean(pot), rel=0.05)
    if beads == 8:
        kT = KB_EV_PER_K * T
        quantum = 3 * 0.5 * 0.1 / math.tanh(0.1 / (2.0 * kT))  # 3 dimensions, eV
        finite_p = 3 * H_MASS * omega ** 2 * KINETIC * exact  # <K> + <V> = 2 <V> at this P
        assert np.mean(k_cv) + np.mean(pot) == pytest.approx(finite_p, rel=0.05)
        assert finite_p == pytest.approx(quantum, rel=0.1)


# -- the batched engine with beads ----------------------------------------------------------------------------
def _md(**kw):
    from mlff.md import load_md_config

    return load_md_config({"structure": "unused", "dtype": "float64", "device": "cpu", "temperature_K": 300.0,
                           "integrator": "langevin", "friction_per_fs": 0.05, **kw})


def test_the_engine_runs_beads_of_every_replica_as_systems_of_one_batch(pair, small_potential):
    from mlff.md.engines import BatchEngine

    pair.info["fixed"] = [1]
    engine = BatchEngine(_md(beads=4, replicas=2, masses={"H": 2.014, 0: 12.5}), pair, small_potential)
    state = engine.state
    assert state.n_systems == 8 and engine.ring.beads == 4 and engine.ring.n_physical == 2
    masses = state.masses.view(8, len(pair))
    assert float(masses[:, 0].min()) == 12.5  # by index, over the symbol
    hydrogens = [k for k, s in enumerate(pair.get_chemical_symbols()) if s == "H"]
    assert float((masses[:, hydrogens] - 2.014).abs().max()) == 0.0
    start = state.positions.clone()
    engine.start()
    for _ in range(10):
        engine.step()
    q = state.positions.view(2, 4, len(pair), 3)
    assert float((q[:, 1:] - q[:, :1]).abs().max()) > 0.0  # the beads spread out
    torch.testing.assert_close(state.positions.view(8, -1, 3)[:, 1], start.view(8, -1, 3)[:, 1], atol=0, rtol=0)
    # the beads sample at P T: their kinetic temperature is ~4 x 300 K
    assert 400.0 < float(state.temperature().mean()) < 3000.0


@pytest.mark.parametrize("changes, words", [
    ({"beads": 4, "integrator": "nve"}, ["beads: 4", "integrator: langevin"]),
    ({"beads": 4, "engine": "ase"}, ["beads: 4", "engine: gpu"]),
    ({"beads": 2, "temperature_K": 0.0}, ["temperature_K > 0"]),
    ({"masses": {22: -1.0}}, ["masses", "22"]),
])
def test_path_integral_settings_that_cannot_run_are_named(changes, words):
    from mlff.errors import MLFFError

    with pytest.raises(MLFFError) as err:
        _md(**changes)
    for word in words:
        assert word in str(err.value)


def test_isotope_masses_name_atoms_that_exist(pair):
    from mlff.errors import MLFFError
    from mlff.md.config import apply_masses

    with pytest.raises(MLFFError, match="atom 40 is out of range"):
        apply_masses(pair.copy(), {40: 2.014})
    with pytest.raises(MLFFError, match="no 'Cl' atom"):
        apply_masses(pair.copy(), {"Cl": 37.0})


def test_mlff_md_with_beads_records_the_centroids_and_restarts_bit_for_bit(tmp_path, small_potential):
    """Two replicas of 3 beads: the trajectory and log hold the 2 physical systems (the centroids, their xi and
    the quantum kinetic-energy estimators); a run stopped at step 6 and resumed ends where the straight one ends."""
    import h5py
    from md_helpers import acid_water_file

    from mlff.md import load_md_config, run_md
    from mlff.md.checkpoint import load_checkpoint
    from mlff.md.h5md import read_h5md
    from mlff.md.runlog import read_log

    structure = acid_water_file(tmp_path)

    def config(out, steps):
        return load_md_config({"structure": structure, "integrator": "langevin", "steps": steps, "timestep_fs": 0.5,
                               "temperature_K": 300.0, "friction_per_fs": 0.05, "dtype": "float64", "device": "cpu",
                               "trajectory_every": 2, "checkpoint_every": 0, "monitor_every": 2, "out": str(out),
                               "seed": 5, "beads": 3, "replicas": 2, "masses": {"H": 2.014}, "trajectory_beads": True})

    ref = run_md(config(tmp_path / "ref", 12), potential=small_potential)
    assert ref["status"] == "finished"
    with h5py.File(tmp_path / "ref" / "trajectory.h5", "r") as f:
        assert sorted(f["particles"]) == ["system_0000", "system_0001"]
    end = load_checkpoint(tmp_path / "ref" / "checkpoint.pt")
    beads = end["positions"].view(2, 3, -1, 3)
    last = read_h5md(tmp_path / "ref" / "trajectory.h5", ":", group="system_0001")[-1]
    np.testing.assert_allclose(last.positions, beads[1].mean(0).numpy(), atol=1e-12)
    bead_frames = read_h5md(tmp_path / "ref" / "beads.h5", ":", group="system_0001_bead_02")
    assert len(bead_frames) == 7
    np.testing.assert_allclose(bead_frames[-1].positions, beads[1, 2].numpy(), atol=1e-12)
    rows = read_log(tmp_path / "ref" / "log.csv")
    assert len(rows) == 2 * 7 and {row["system"] for row in rows} == {0, 1}
    final = [row for row in rows if row["step"] == 12]
    centroid = beads[1].mean(0).numpy()
    xi_atoms = [int(k) for k in __import__("ase.io").io.read(structure).info["xi_atoms"]]
    c, h, c4 = (centroid[k] for k in xi_atoms)
    assert final[1]["xi"] == pytest.approx(np.linalg.norm(c - h) - np.linalg.norm(h - c4), abs=1e-9)
    assert all(np.isfinite(row["kinetic_energy_virial"]) and row["spring_energy"] > 0 for row in rows[2:])

    out = tmp_path / "split"
    run_md(config(out, 6), potential=small_potential)
    again = run_md(config(out, 12), potential=small_potential, resume=True)
    assert again["status"] == "finished" and again["resumed"]
    resumed = load_checkpoint(out / "checkpoint.pt")
    for name in ("positions", "velocities", "forces", "energy", "generator_state"):
        assert torch.equal(resumed[name], end[name]), name
    with h5py.File(out / "beads.h5", "r") as f, h5py.File(tmp_path / "ref" / "beads.h5", "r") as g:
        np.testing.assert_array_equal(f["particles/system_0000_bead_01/position/value"][()],
                                      g["particles/system_0000_bead_01/position/value"][()])


def test_a_bias_on_the_centroid_of_free_particles_samples_the_classical_boltzmann_distribution():
    """Two free atoms (no physical force) restrained by a spring on the centroids' distance: the centroid of a
    free particle is classical, so the centroid distance is Gaussian around the centre with variance kT/k at
    every P, while the beads spread far wider than classically (every bead feels the full centroid force)."""
    from mlff.bias.cv import cv_from_spec
    from mlff.bias.engine import BiasedEngine
    from mlff.bias.model import Biases
    from mlff.bias.restraint import HarmonicRestraint
    from mlff.md import load_md_config
    from mlff.md.engines import BatchEngine

    class Free:
        def __call__(self, state):
            return {"energy": torch.zeros(state.n_systems, dtype=state.dtype),
                    "forces": torch.zeros_like(state.positions)}

        def state_dict(self):
            return {}

    systems, beads, kappa, centre, T = 64, 8, 10.0, 2.0, 300.0
    atoms = Atoms("H2", positions=[[0.0, 0.0, 0.0], [centre, 0.0, 0.0]])
    config = load_md_config({"structure": "unused", "dtype": "float64", "device": "cpu", "temperature_K": T,
                             "integrator": "langevin", "friction_per_fs": 0.05, "beads": beads,
                             "replicas": systems, "trajectory_every": 0})
    engine = BatchEngine(config, atoms, None, model=Free())
    restraint = HarmonicRestraint([centre], [kappa], window=np.zeros(systems, dtype=np.int64))
    cv = cv_from_spec({"kind": "distance", "atoms": [0, 1]}, [{}] * systems)
    biased = BiasedEngine(engine, Biases(cv, [restraint]))
    biased.start()
    samples, spread = [], []
    for step in range(1200):
        biased.step()
        if step >= 200 and step % 10 == 0:
            view = biased.output_state()
            d = (view.positions.view(systems, 2, 3)[:, 1] - view.positions.view(systems, 2, 3)[:, 0]).norm(dim=-1)
            samples.append(d.numpy().copy())
            beads_d = engine.state.positions.view(systems, beads, 2, 3)
            spread.append(float((beads_d - beads_d.mean(1, keepdim=True)).pow(2).sum(-1).mean()))
    d = np.concatenate(samples)
    kT = KB_EV_PER_K * T
    assert d.mean() == pytest.approx(centre, abs=0.01)
    assert d.var() == pytest.approx(kT / kappa, rel=0.08)
    # the free ring polymer's spread about its centroid, untouched by the centroid's bias:
    # <|q_j - centroid|^2> = 3 hbar^2 (P^2 - 1) / (12 m P^2 kT), 0.039 Å^2 for H at 300 K and P = 8
    exact = 3 * HBAR_EV_FS ** 2 * (beads ** 2 - 1) / (12 * H_MASS * beads ** 2 * kT) / KINETIC
    assert np.mean(spread) == pytest.approx(exact, rel=0.08)
