"""A residual (delta) model: members add to the committee mean of a frozen base potential. Energies are the sum,
forces its exact negative gradient, the base never trains, and a saved model pins its base's weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mlff.errors import MLFFError
from mlff.models.graph import batch_atoms
from mlff.models.potential import Potential
from mlff.models.store import load_potential, save_potential

DELTA = {"species": ["H", "C", "N", "O"], "r_max": 3.5, "hidden_irreps": "4x0e+4x1o", "max_ell": 1, "correlation": 1,
         "MLP_irreps": "4x0e", "radial_MLP": [8], "avg_num_neighbors": 8.0, "E0s": {"H": 0.0, "C": 0.0, "N": 0.0, "O": 0.0}}


@pytest.fixture()
def pair(tmp_path, committee_potential):
    save_potential(committee_potential, tmp_path / "base")
    base = load_potential(tmp_path / "base")
    delta = Potential.build(DELTA, committee=2, seed=3)
    return Potential(delta.config, list(delta.members), base=base, base_source=str(tmp_path / "base")), base, delta


def test_energies_add_and_forces_are_the_gradient_of_the_sum(pair, cluster):
    model, base, delta = pair
    assert model.cutoff == max(base.cutoff, 3.5)
    graph = batch_atoms([cluster], model.cutoff)
    out, b, d = (p.evaluate(graph) for p in (model, base, delta))
    assert torch.allclose(out["energy_members"], d["energy_members"] + b["energy"], atol=1e-9)
    assert torch.allclose(out["forces"], d["forces"] + b["forces"], atol=1e-8)
    assert torch.allclose(out["forces_std"], d["forces_std"], atol=1e-8)  # the spread is the members'
    h, k = 1e-4, 7  # central finite difference of the total energy
    for axis in range(3):
        moved = []
        for sign in (1, -1):
            atoms = cluster.copy()
            atoms.positions[k, axis] += sign * h
            moved.append(float(model.evaluate(batch_atoms([atoms], model.cutoff), forces=False)["energy"][0]))
        assert -(moved[0] - moved[1]) / (2 * h) == pytest.approx(float(out["forces"][k, axis]), abs=1e-5)


def test_the_base_is_frozen_and_a_saved_model_pins_it(pair, cluster, tmp_path):
    model, base, _ = pair
    assert not any(p.requires_grad for p in model.base.parameters())
    assert all(p.requires_grad for p in model.members.parameters())
    save_potential(model, tmp_path / "delta")
    card = json.loads((tmp_path / "delta" / "potential.json").read_text())
    assert card["base"]["potential"] == str(tmp_path / "base") and len(card["base"]["sha256"]) == 64
    again = load_potential(tmp_path / "delta")
    graph = batch_atoms([cluster], model.cutoff)
    assert np.allclose(again.evaluate(graph)["forces"].numpy(), model.evaluate(graph)["forces"].numpy(), atol=1e-10)
    # the base's weights change under the residual model (members reordered): refused
    save_potential(Potential(base.config, [base.members[1], base.members[0], base.members[2]]), tmp_path / "base")
    with pytest.raises(MLFFError, match="changed since it was trained"):
        load_potential(tmp_path / "delta")


def test_a_residual_model_needs_its_base_named_to_be_saved(pair, tmp_path):
    model, _, _ = pair
    model.base_source = None
    with pytest.raises(MLFFError, match="base_source"):
        save_potential(model, tmp_path / "nameless")
