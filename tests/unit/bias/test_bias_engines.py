"""Both engines get the biases: the batched engine through BiasedModel (also with any ASE calculator as its
force model), the ASE engine through BiasCalculator; the CUDA step equals the CPU one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.emt import EMT

from mlff.bias.cv import Distance
from mlff.bias.engine import BiasedEngine
from mlff.bias.metad import MetaD
from mlff.bias.model import Biases
from mlff.bias.restraint import HarmonicRestraint
from mlff.md import load_md_config
from mlff.md.ase_model import AseCalculatorModel
from mlff.md.engines import AseEngine, BatchEngine


def _cu_cluster(shift=0.0):
    atoms = Atoms("Cu5", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0], [0, 0, 2.5], [1.8 + shift, 1.8, 1.8]])
    atoms.rattle(0.05, seed=1)
    return atoms


def _config(**kw):
    return load_md_config({"structure": "-", "device": "cpu", "dtype": "float64", "timestep_fs": 2.0,
                           "temperature_K": 300.0, "seed": 4, **kw})


def test_ase_calculator_model_gives_each_system_its_calculators_numbers():
    from mlff.md.state import state_from_atoms

    systems = [_cu_cluster(0.0), _cu_cluster(0.3), _cu_cluster(-0.2)]
    state = state_from_atoms(systems)
    out = AseCalculatorModel(lambda atoms: EMT())(state)
    for s, atoms in enumerate(systems):
        atoms.calc = EMT()
        assert float(out["energy"][s]) == pytest.approx(atoms.get_potential_energy(), abs=1e-12)
        assert np.allclose(out["forces"][5 * s:5 * s + 5].numpy(), atoms.get_forces(), atol=1e-12)


def test_umbrella_windows_with_an_ase_calculator_in_the_batched_engine():
    starts = [_cu_cluster(d) for d in (-0.1, 0.0, 0.1)]
    engine = BatchEngine(_config(replicas=3), starts[0], None, model=AseCalculatorModel(lambda a: EMT()),
                         structures=starts)
    restraint = HarmonicRestraint([2.3, 2.6, 2.9], 5.0)
    biased = BiasedEngine(engine, Biases(Distance([0, 4]), [restraint]))
    biased.start()
    for _ in range(30):
        biased.step()
    s = engine.state
    obs = biased.observables()
    reference = AseCalculatorModel(lambda a: EMT())(s)
    assert torch.allclose(obs["physical_energy"], reference["energy"], atol=1e-10)
    d = (s.positions[[4, 9, 14]] - s.positions[[0, 5, 10]]).norm(dim=-1)
    assert torch.allclose(obs["cv"], d, atol=1e-12)
    assert torch.allclose(obs["bias_energy"], 2.5 * (d - restraint.centers) ** 2, atol=1e-12)


def test_ase_engine_gets_the_bias_through_its_calculator():
    atoms = _cu_cluster()
    engine = AseEngine(_config(engine="ase", integrator="langevin"), atoms, None, calculator=EMT())
    metad = MetaD(sigma=0.1, height_eV=0.02, pace=5, biasfactor=5.0, temperature_K=300.0, n_systems=1, capacity=50)
    biases = Biases(Distance([0, 4]), [HarmonicRestraint([2.8], [3.0]), metad])
    biased = BiasedEngine(engine, biases)
    biased.start()
    for _ in range(21):
        biased.step()
    assert metad.count == 5  # hills at steps 0, 5, 10, 15, 20 (the last acts at the start of step 21)
    calc = engine.atoms.calc
    e_total = engine.atoms.get_potential_energy()
    ref = engine.atoms.copy()
    ref.calc = EMT()
    _, bias = biases.observe(torch.as_tensor(engine.atoms.positions))
    assert e_total == pytest.approx(ref.get_potential_energy() + float(bias[0]), abs=1e-10)
    assert calc.results["bias_energy"] == pytest.approx(float(bias[0]), abs=1e-12)
    assert np.allclose(engine.atoms.get_forces(), ref.get_forces() + calc.results["bias_forces"], atol=1e-10)
    assert float(biased.state.energy[0]) == pytest.approx(e_total, abs=1e-12)


@pytest.mark.gpu
def test_biased_batched_step_on_cuda_equals_the_cpu_step():
    """Mueller-Brown windows with a restraint and per-system metaD, NVE (no random numbers): CUDA == CPU."""
    from mlff.bias.cv import Coordinate
    from mlff.md.toy import MuellerBrown, toy_particles

    def run(device):
        starts = toy_particles([-0.5, 0.0, 0.5], y_A=0.8)
        config = _config(device=device, replicas=3, init_velocities=False, timestep_fs=1.0, integrator="nve")
        engine = BatchEngine(config, starts[0], None, model=MuellerBrown(), structures=starts)
        metad = MetaD(sigma=0.1, height_eV=0.01, pace=5, biasfactor=6.0, temperature_K=300.0, n_systems=3, capacity=64)
        biased = BiasedEngine(engine, Biases(Coordinate(0), [HarmonicRestraint([-0.5, 0.0, 0.5], 2.0), metad]))
        biased.start()
        for _ in range(50):
            biased.step()
        return engine.state.positions.cpu(), engine.state.forces.cpu(), metad.heights.cpu()

    for a, b in zip(run("cpu"), run("cuda")):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", ["double well", "mueller-brown"])
def test_toy_potentials_forces_are_minus_the_gradient_and_match_numpy(name):
    from mlff.md.state import state_from_atoms
    from mlff.md.toy import DoubleWell, MuellerBrown, toy_particles

    model = DoubleWell(barrier_eV=0.13, tilt_eV=0.02) if name == "double well" else MuellerBrown()
    atoms = toy_particles(np.linspace(-1.2, 1.0, 7), y_A=0.6)
    for k, a in enumerate(atoms):
        a.positions[0, 1:] += (0.1 * k, -0.05 * k)
    state = state_from_atoms(atoms)
    out = model(state)
    x = state.positions.clone().requires_grad_(True)
    energy, _ = model._energy_forces(x)
    (grad,) = torch.autograd.grad(energy.sum(), x)
    assert torch.allclose(out["forces"], -grad, atol=1e-12)
    p = state.positions.numpy()
    if name == "double well":
        expected = model.profile_eV(p[:, 0]) + 0.5 * (p[:, 1] ** 2 + p[:, 2] ** 2)
        assert model.profile_eV(1.0) - model.profile_eV(0.0) == pytest.approx(-0.13 + 0.02)
    else:
        expected = model.energy_eV(p[:, 0], p[:, 1]) + 0.5 * p[:, 2] ** 2
    assert np.allclose(out["energy"].numpy(), expected, atol=1e-12)
