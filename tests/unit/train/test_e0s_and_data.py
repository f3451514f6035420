"""E0 least squares, scale/shift statistics, and device-side batching of precomputed graphs."""

import warnings

import numpy as np
import pytest
import torch
from ase import Atoms
from helpers import emt_records

from mlff.models.graph import batch_atoms
from mlff.train.data import build_graphs
from mlff.train.e0s import average_neighbors, fit_e0s, scale_shift

ZS = [1, 6, 7, 8]


def _random_molecules(n, rng):
    out = []
    for _ in range(n):
        numbers = rng.choice(ZS, size=rng.integers(2, 9))
        out.append(Atoms(numbers=numbers, positions=rng.normal(0, 2.0, (len(numbers), 3))))
    return out


def test_e0_fit_recovers_known_energies_exactly():
    rng = np.random.default_rng(4)
    atoms = _random_molecules(40, rng)
    true = {"H": -13.61, "C": -1029.3, "N": -1484.7, "O": -2041.9}
    energies = [sum(true[s] for s in a.get_chemical_symbols()) for a in atoms]
    fitted = fit_e0s(atoms, energies, ZS)
    assert fitted.keys() == true.keys()
    for s in true:
        assert abs(fitted[s] - true[s]) < 1e-9


def test_e0_fit_with_noise_is_least_squares_and_absent_elements_get_zero():
    rng = np.random.default_rng(5)
    atoms = [a for a in _random_molecules(60, rng) if 7 not in a.numbers]
    true = {"H": -1.0, "C": -5.0, "O": -7.0}
    energies = np.array([sum(true.get(s, 0.0) for s in a.get_chemical_symbols()) for a in atoms])
    energies += rng.normal(0, 0.01, len(energies))
    fitted = fit_e0s(atoms, energies, ZS)
    assert fitted["N"] == 0.0
    counts = np.array([[np.sum(a.numbers == z) for z in (1, 6, 8)] for a in atoms])
    e0 = np.array([fitted["H"], fitted["C"], fitted["O"]])
    residual = energies - counts @ e0
    np.testing.assert_allclose(counts.T @ residual, 0.0, atol=1e-8)  # normal equations hold


def test_e0_fit_warns_when_every_record_has_one_formula():
    rng = np.random.default_rng(7)
    atoms = [Atoms("CH4O", positions=rng.normal(0, 2.0, (6, 3))) for _ in range(5)]  # a cluster dataset's case
    with pytest.warns(UserWarning, match="E0 fit underdetermined: the training compositions span 1 of 3"):
        fitted = fit_e0s(atoms, rng.normal(-1000.0, 1.0, 5), ZS)
    assert fitted["N"] == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit_e0s(_random_molecules(30, rng), rng.normal(size=30), ZS)  # full rank: silent


def test_scale_shift_from_interaction_energies_and_force_rms():
    rng = np.random.default_rng(6)
    atoms = _random_molecules(10, rng)
    e0s = {"H": -1.0, "C": -2.0, "N": -3.0, "O": -4.0}
    per_atom = 0.25
    energies = [sum(e0s[s] for s in a.get_chemical_symbols()) + per_atom * len(a) for a in atoms]
    forces = rng.normal(0, 0.7, (sum(len(a) for a in atoms), 3))
    shift, scale = scale_shift(atoms, energies, forces, e0s, ZS)
    assert abs(shift - per_atom) < 1e-12
    assert abs(scale - np.sqrt(np.mean(forces**2))) < 1e-12


def test_batches_gathered_on_device_match_fresh_graphs():
    records = emt_records(10, seed=2)
    graphs = build_graphs(records, 4.0)
    assert abs(average_neighbors(graphs) - graphs.graph.edge_index.shape[1] / len(graphs.graph.positions)) < 1e-12
    index = [7, 2, 2, 9]  # repeats allowed (bootstrap)
    graph, labels = graphs.batch(index)
    fresh = batch_atoms([records[k] for k in index], 4.0)
    assert torch.equal(graph.positions, fresh.positions)
    assert torch.equal(graph.system_idx, fresh.system_idx)

    def pairs(g):
        vec = g.positions[g.edge_index[1]] - g.positions[g.edge_index[0]]
        return sorted((int(i), int(j), *np.round(v.tolist(), 9)) for i, j, v in zip(*g.edge_index, vec))

    assert pairs(graph) == pairs(fresh)
    np.testing.assert_array_equal(labels["energy"].numpy(), [records[k].calc.results["energy"] for k in index])
    np.testing.assert_array_equal(labels["forces"].numpy(), np.concatenate([records[k].calc.results["forces"] for k in index]))
    assert labels["n_atoms"].tolist() == [len(records[k]) for k in index]


def test_e0s_from_a_dataset_of_isolated_atoms(tmp_path):
    from mlff.data import Dataset, make_record
    from mlff.train.e0s import isolated_atom_e0s

    energies = {"H": -13.6, "C": -1029.0, "N": -1484.2, "O": -2041.1}
    records = [make_record(Atoms(s, cell=[10, 10, 10]), energy=e, forces=np.zeros((1, 3))) for s, e in energies.items()]
    Dataset.create(tmp_path / "atoms.h5").append(records)
    assert isolated_atom_e0s(tmp_path / "atoms.h5") == energies
