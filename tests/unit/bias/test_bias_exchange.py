"""Replica exchange follows the two-umbrella acceptance rule and mixes labels uniformly; HILLS round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units

from mlff.bias.exchange import ReplicaExchange
from mlff.bias.io import read_hills, write_hills
from mlff.bias.metad import MetaD
from mlff.bias.restraint import HarmonicRestraint

T = 300.0
BETA = 1.0 / (units.kB * T)


def _analytic(restraint, s, i, j, wi, wj):
    u = lambda x, w: 0.5 * restraint.kappas[w].item() * (x - restraint.centers[w].item()) ** 2  # noqa: E731
    return min(1.0, np.exp(-BETA * (u(s[j], wi) + u(s[i], wj) - u(s[i], wi) - u(s[j], wj))))


def test_exchange_acceptance_equals_the_two_umbrella_rule():
    centers, kappas = [0.0, 0.25, 0.5, 0.8, 1.0], [0.3, 0.4, 0.2, 0.5, 0.3]
    restraint = HarmonicRestraint(centers, kappas)
    exchange = ReplicaExchange(restraint, every=1, temperature_K=T, seed=3)
    start = torch.tensor([2, 0, 1, 4, 3])  # system s carries window start[s]
    s = torch.tensor([0.31, 0.12, 0.05, 0.93, 0.70], dtype=torch.float64)
    holder = {int(w): k for k, w in enumerate(start)}
    expected = {pair: _analytic(restraint, s.tolist(), holder[pair], holder[pair + 1], pair, pair + 1)
                for pair in range(4)}
    assert 0.05 < min(expected.values()) < 0.9 and max(expected.values()) == 1.0  # rejections and sure swaps
    rounds, accepted = 4000, np.zeros(4)
    for k in range(rounds):
        restraint.window.copy_(start)
        exchange.rounds = k % 2  # even pairs (0-1, 2-3), then odd pairs (1-2, 3-4)
        mask = exchange.attempt(s).numpy()
        accepted[np.arange(k % 2, 4, 2)] += mask
        # an accepted pair swapped exactly its two labels, nothing else moved
        for lower, ok in zip(range(k % 2, 4, 2), mask):
            i, j = holder[lower], holder[lower + 1]
            assert (int(restraint.window[i]), int(restraint.window[j])) == ((lower + 1, lower) if ok else (lower, lower + 1))
    for pair, p in expected.items():
        freq = accepted[pair] / (rounds / 2)
        assert abs(freq - p) < 4 * np.sqrt(p * (1 - p) / (rounds / 2)) + 1e-9, (pair, freq, p)
    assert exchange.attempts.tolist() == [2000] * 4
    assert np.allclose(exchange.acceptance(), accepted / 2000)


def test_exchange_random_stream_is_deterministic():
    def run(seed):
        restraint = HarmonicRestraint(np.linspace(0, 1, 6), 4.0)
        exchange = ReplicaExchange(restraint, every=1, temperature_K=T, seed=seed)
        s = torch.linspace(0.1, 0.9, 6, dtype=torch.float64).flip(0)
        for _ in range(50):
            exchange.attempt(s)
        return restraint.window.tolist(), exchange.accepted.tolist()

    assert run(1) == run(1)
    assert run(1) != run(2)


@pytest.mark.slow
def test_label_occupancy_is_uniform_under_md():
    """Four windows on a flat CV (harmonic across it), Langevin MD with exchanges every 5 steps: each system
    spends about a quarter of the time in each window."""
    from mlff.bias.cv import Coordinate
    from mlff.bias.engine import BiasedEngine
    from mlff.bias.model import Biases
    from mlff.md import load_md_config
    from mlff.md.engines import BatchEngine
    from mlff.md.toy import DoubleWell, toy_particles

    centers = [-0.3, -0.1, 0.1, 0.3]
    config = load_md_config({"structure": "-", "device": "cpu", "dtype": "float64", "timestep_fs": 1.0,
                             "friction_per_fs": 0.05, "temperature_K": T, "replicas": 4, "seed": 5,
                             "init_velocities": False})
    starts = toy_particles(centers)
    engine = BatchEngine(config, starts[0], None, model=DoubleWell(barrier_eV=0.0), structures=starts)
    restraint = HarmonicRestraint(centers, 1.0)
    exchange = ReplicaExchange(restraint, every=5, temperature_K=T, seed=7)
    biased = BiasedEngine(engine, Biases(Coordinate(0), [restraint], exchange))
    biased.start()
    occupancy = np.zeros((4, 4))
    for step in range(1, 3001):
        biased.step()
        if step % 5 == 0:
            occupancy[np.arange(4), restraint.window.numpy()] += 1
    occupancy /= occupancy.sum(1, keepdims=True)
    assert np.abs(occupancy - 0.25).max() < 0.13, occupancy
    rates = exchange.acceptance()
    assert all(0.2 < r < 1.0 for r in rates), rates
    assert sorted(restraint.window.tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize("shared", [False, True])
def test_hills_written_then_read_give_the_same_bias(tmp_path, shared):
    n = 3
    metad = MetaD(sigma=0.2, height_eV=0.04, pace=1, biasfactor=8.0, temperature_K=T, n_systems=n, shared=shared,
                  capacity=60)
    rng = np.random.default_rng(0)
    for step in range(1, 16):
        metad.after_step(step, torch.as_tensor(rng.normal(size=n)), 10.0 * step)
    hills = metad.hills()
    write_hills(tmp_path / "HILLS", hills, "xi")
    back = read_hills(tmp_path / "HILLS")
    for key in ("time_fs", "center", "sigma", "height_eV"):
        assert np.allclose(back[key], hills[key], rtol=1e-10, atol=1e-12), key
    assert back["biasfactor"] == 8.0
    # PLUMED's convention: the stored height column is the added height x biasf / (biasf - 1), in kJ/mol
    stored = np.loadtxt(tmp_path / "HILLS", comments="#")[:, 3]
    assert np.allclose(stored, hills["height_eV"] * 8.0 / 7.0 * units.mol / units.kJ, rtol=1e-10)
    # the bias rebuilt from the file equals the running one on a grid
    grid = torch.linspace(-2, 2, 41, dtype=torch.float64)
    for system in range(n):
        mine = hills["system"] == (-1 if shared else system)  # one file holds every system's hills here
        c, h = (torch.as_tensor(back[k][mine]) for k in ("center", "height_eV"))
        rebuilt = (h * torch.exp(-0.5 * ((grid[:, None] - c) / 0.2) ** 2)).sum(-1)
        running = torch.stack([metad.energy(torch.full((n,), float(g), dtype=torch.float64))[system] for g in grid])
        assert torch.allclose(rebuilt, running, rtol=1e-9, atol=1e-12)
    # well-tempered heights shrink where the bias is already high
    assert hills["height_eV"].max() <= 0.04 + 1e-15 and hills["height_eV"].min() < 0.04
