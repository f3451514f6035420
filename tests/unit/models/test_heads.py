"""Heads: a model moved into one with other heads predicts, through every new head, what its source head did."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlff import MLFFError, build_potential
from mlff.models import batch_atoms
from mlff.models.heads import source_heads_for, transfer_heads

CONFIG = {"species": ["H", "C", "N", "O"], "r_max": 4.0, "hidden_irreps": "8x0e+8x1o", "max_ell": 1, "correlation": 2,
          "MLP_irreps": "4x0e", "radial_MLP": [8, 8], "num_interactions": 2,
          "E0s": {"H": -1.0, "C": -3.0, "N": -4.0, "O": -5.0}, "atomic_inter_scale": 1.7, "atomic_inter_shift": -0.2}


def _perturbed(potential, seed):
    """Random non-zero weights everywhere (a fresh model's readouts can be too regular to test a transfer)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in potential.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return potential


def _moved(source, heads, **extra):
    target = build_potential({**CONFIG, **extra, "heads": heads, "E0s": None, "atomic_inter_scale": [1.0] * len(heads),
                              "atomic_inter_shift": [0.0] * len(heads)}, seed=5)
    transfer_heads(source.members[0], source.config.heads, source.head, target.members[0], heads)
    return target


def _eval(potential, atoms, head):
    graph = batch_atoms([atoms], potential.cutoff)
    out = potential.evaluate(graph, heads=torch.tensor([potential.config.heads.index(head)]))
    return float(out["energy"][0]), out["forces"].numpy()


def test_every_new_head_starts_as_its_source_head(cluster):
    """Both kinds of mace readout: linear (every layer but the last) and non-linear (the last)."""
    source = _perturbed(build_potential(CONFIG, seed=2), 11)
    e_src, f_src = _eval(source, cluster, "default")
    assert abs(e_src) > 1.0 and np.abs(f_src).max() > 1e-2
    target = _moved(source, ["xtb", "dft", "third"])
    for head in ("xtb", "dft", "third"):
        e, f = _eval(target, cluster, head)
        assert e == pytest.approx(e_src, abs=1e-9)
        np.testing.assert_allclose(f, f_src, atol=1e-9)


def test_heads_of_the_same_name_keep_their_own_weights(cluster):
    source = _perturbed(build_potential({**CONFIG, "heads": ["xtb", "dft"], "E0s": None,
                                         "atomic_inter_scale": [1.7, 0.8], "atomic_inter_shift": [0.1, -0.3]}, seed=2), 12)
    e_xtb, _ = _eval(source, cluster, "xtb")
    e_dft, f_dft = _eval(source, cluster, "dft")
    assert abs(e_xtb - e_dft) > 1e-3, "two heads of a perturbed model differ"
    target = _moved(source, ["dft", "xtb"])  # other order
    assert _eval(target, cluster, "xtb")[0] == pytest.approx(e_xtb, abs=1e-9)
    e, f = _eval(target, cluster, "dft")
    assert e == pytest.approx(e_dft, abs=1e-9)
    np.testing.assert_allclose(f, f_dft, atol=1e-9)
    # a batch of two systems through two heads at once: each as alone
    graph = batch_atoms([cluster, cluster], target.cutoff)
    out = target.evaluate(graph, heads=torch.tensor([1, 0]))
    assert out["energy"].numpy() == pytest.approx([e_xtb, e_dft], abs=1e-9)


def test_only_heads_may_differ():
    source = build_potential(CONFIG, seed=2)
    other = build_potential({**CONFIG, "hidden_irreps": "4x0e+4x1o", "heads": ["a", "b"], "E0s": None}, seed=2)
    with pytest.raises(MLFFError, match="cannot transfer"):
        transfer_heads(source.members[0], ["default"], "default", other.members[0], ["a", "b"])
    with pytest.raises(MLFFError, match="not among"):
        source_heads_for(["a"], ["default"], "dft")
