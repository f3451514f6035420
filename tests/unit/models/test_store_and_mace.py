"""Potential directories and the bridge to mace-torch: round trips that keep every number."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mlff import MLFFCalculator, MLFFError, Potential, build_potential, load_potential, save_potential
from mlff.models import batch_atoms


def results(potential, atoms):
    out = potential.evaluate(batch_atoms([atoms], potential.cutoff))
    return out["energy"].numpy(), out["forces"].numpy()


def test_save_load_round_trip_is_exact(committee_potential, cluster, tmp_path):
    save_potential(committee_potential, tmp_path / "pot")
    card = json.loads((tmp_path / "pot" / "potential.json").read_text())
    assert card["committee_size"] == 3 and card["provenance"]["versions"]["mace-torch"]
    assert "MACE" in (tmp_path / "pot" / "MODEL_CARD.md").read_text()
    loaded = load_potential(tmp_path / "pot")
    for a, b in zip(results(committee_potential, cluster), results(loaded, cluster)):
        np.testing.assert_array_equal(a, b)


def test_tampered_weights_are_refused(small_potential, tmp_path):
    save_potential(small_potential, tmp_path / "pot")
    with open(tmp_path / "pot" / "member_00.safetensors", "r+b") as handle:
        handle.seek(-8, 2)
        handle.write(b"\xff" * 8)
    with pytest.raises(MLFFError, match="checksum mismatch"):
        load_potential(tmp_path / "pot")
    with pytest.raises(MLFFError, match="not a potential directory"):
        load_potential(tmp_path / "nothing-here")


def test_loading_never_unpickles(small_potential, tmp_path):
    """Weights are safetensors; a pickle dropped into the directory is never read."""
    save_potential(small_potential, tmp_path / "pot")
    files = sorted(p.name for p in (tmp_path / "pot").iterdir())
    assert files == ["MODEL_CARD.md", "member_00.safetensors", "potential.json"]
    assert (tmp_path / "pot" / "member_00.safetensors").read_bytes()[8:9] == b"{", "safetensors JSON header"


def test_mace_calculator_agrees_on_the_exported_model(small_potential, cluster, periodic_box, tmp_path):
    from mace.calculators import MACECalculator

    small_potential.to_mace_model(tmp_path / "small.model")
    theirs = MACECalculator(model_paths=str(tmp_path / "small.model"), device="cpu", default_dtype="float64")
    ours = MLFFCalculator(small_potential, device="cpu")
    for atoms in (cluster, periodic_box):
        a, b = atoms.copy(), atoms.copy()
        a.calc, b.calc = ours, theirs
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), rel=1e-6)
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), rtol=1e-6, atol=1e-9)
    a, b = periodic_box.copy(), periodic_box.copy()
    a.calc, b.calc = ours, theirs
    np.testing.assert_allclose(a.get_stress(), b.get_stress(), rtol=1e-6, atol=1e-10)


def test_from_mace_model_round_trip(small_config, cluster, tmp_path):
    original = build_potential(small_config | {"heads": ["default"]}, committee=2, seed=5)
    modules = []
    for k in range(2):
        original.to_mace_model(tmp_path / f"m{k}.model", member=k)
        modules.append(torch.load(tmp_path / f"m{k}.model", weights_only=False))
    wrapped = Potential.from_mace_model(modules)
    assert wrapped.config == original.config and wrapped.committee_size == 2
    for a, b in zip(results(original, cluster), results(wrapped, cluster)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_from_mace_model_rejects_other_models():
    with pytest.raises(MLFFError, match="only mace-torch ScaleShiftMACE"):
        Potential.from_mace_model(torch.nn.Linear(2, 2))


def test_a_card_section_is_replaced_in_place_and_the_sections_after_it_stay(tmp_path):
    from mlff.models.store import set_card_section

    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# Potential `p`\n\n## Training\n\nt\n\n## Stability\n\nold\n\n## Refinement\n\nr\n")
    set_card_section(card, "Stability", "new\n\n| a |")
    assert card.read_text() == "# Potential `p`\n\n## Training\n\nt\n\n## Stability\n\nnew\n\n| a |\n\n## Refinement\n\nr\n"
    set_card_section(card, "Checks", "c")  # a new section goes at the end
    assert card.read_text().endswith("## Refinement\n\nr\n\n## Checks\n\nc\n")
    set_card_section(tmp_path / "NEW.md", "Stability", "s")
    assert (tmp_path / "NEW.md").read_text() == "\n\n## Stability\n\ns\n"
