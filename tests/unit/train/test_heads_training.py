"""data.heads: fine-tuning to a new level of theory with data of the old level replayed in a head of its own.
The new heads start as the source model's head, each record trains only its own head's readout, and the card's
errors are those of the potential's head."""

import json

import numpy as np
import pytest
import torch
from helpers import config, emt_records

from mlff import load_potential
from mlff.data import Dataset
from mlff.models import batch_atoms
from mlff.train import train


@pytest.fixture()
def two_levels(tmp_path):
    """'DFT': EMT energies + 0.3 eV/atom (a new level); 'xTB': plain EMT, the foundation's own level."""
    dft = emt_records(12, seed=3)
    for atoms in dft:
        atoms.calc.results["energy"] += 0.3 * len(atoms)
    Dataset.create(tmp_path / "dft.h5", description="EMT + 0.3 eV/atom").append(dft)
    Dataset.create(tmp_path / "xtb.h5", description="EMT").append(emt_records(24, seed=4))
    return tmp_path / "dft.h5", tmp_path / "xtb.h5"


def _energies(potential, atoms_list, head):
    graph = batch_atoms(atoms_list, potential.cutoff)
    index = potential.config.heads.index(head)
    out = potential.evaluate(graph, heads=torch.full((len(atoms_list),), index))
    return out["energy"].numpy(), out["forces"].numpy()


def test_replay_head_keeps_the_foundation_and_the_new_head_moves_to_the_new_level(small_potential, small_config,
                                                                                  two_levels, tmp_path):
    dft, xtb = two_levels
    foundation = tmp_path / "foundation.model"
    small_potential.to_mace_model(foundation)
    cfg = config(small_config, dft, tmp_path / "run", max_epochs=0, init_from=str(foundation), e0s="shift",
                 data={"paths": [str(dft), str(xtb)], "heads": ["dft", "xtb"], "train_records": [None, 10]})
    del cfg["model"]
    result = train(cfg)
    tuned = load_potential(result.potential_dir)
    assert tuned.config.heads == ["xtb", "dft"] and tuned.head == "dft"
    probe = Dataset(xtb).read(list(range(6)))
    e_found, f_found = _energies(small_potential, probe, "default")
    e_xtb, f_xtb = _energies(tuned, probe, "xtb")
    np.testing.assert_allclose(e_xtb, e_found, atol=1e-5)  # the replay head is the foundation, exactly
    np.testing.assert_allclose(f_xtb, f_found, atol=1e-6)
    e_dft, f_dft = _energies(tuned, probe, "dft")
    shift = (e_dft - e_found) / np.array([len(a) for a in probe])
    np.testing.assert_allclose(shift, shift[0], atol=1e-6)  # the DFT head: the same, moved by a per-atom constant
    assert shift[0] > 0.1
    np.testing.assert_allclose(f_dft, f_found, atol=1e-6)
    # the card's errors: the DFT records only (their valid split), the replayed xTB records only train
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]["splits"]
    assert metrics["valid"]["all"]["n_records"] > 0
    n_dft = len(Dataset(dft))
    assert sum(m["all"]["n_records"] for m in metrics.values()) == n_dft
    card = (result.potential_dir / "MODEL_CARD.md").read_text()
    assert "replayed in head `xtb`" in card and "10 training records" in card
    saved = json.loads((result.potential_dir / "potential.json").read_text())
    assert saved["metadata"]["replayed_heads"]["xtb"]["train_records"] == 10


def test_each_record_trains_only_its_own_heads_readout(small_potential, small_config, two_levels, tmp_path):
    dft, xtb = two_levels
    cfg = config(small_config, dft, tmp_path / "run", max_epochs=1, init_from="unused",
                 data={"paths": [str(dft), str(xtb)], "heads": ["dft", "xtb"]})
    del cfg["model"]
    foundation = tmp_path / "foundation.model"
    small_potential.to_mace_model(foundation)
    cfg["init_from"] = str(foundation)
    tuned = load_potential(train(cfg).potential_dir)
    before = {k: v for k, v in small_potential.members[0].state_dict().items()}
    after = tuned.members[0].state_dict()
    trunk = [k for k in after if not k.startswith(("readouts", "scale_shift", "atomic_energies"))
             and after[k].is_floating_point() and after[k].shape == before[k].shape]
    assert any(not torch.equal(after[k], before[k].to(after[k].dtype)) for k in trunk)  # the shared trunk trains
    # per-system heads route the gradient: a batch of xTB records leaves the DFT head's readouts untouched
    tuned.members[0].zero_grad()
    graph = batch_atoms(Dataset(xtb).read([0, 1, 2]), tuned.cutoff)
    out = tuned.evaluate(graph, heads=torch.zeros(3, dtype=torch.int64), training=True)
    (out["energy"].sum() + out["forces"].pow(2).sum()).backward()
    grad = tuned.members[0].readouts[0].linear.weight.grad.reshape(-1, 2)
    assert grad[:, 0].abs().max() > 0 and grad[:, 1].abs().max() == 0


def test_a_replayed_dataset_only_trains_and_never_with_its_own_test_split(small_config, two_levels, tmp_path):
    from mlff.train.config import train_config
    from mlff.train.data import load_records

    dft, _ = two_levels
    xtb = emt_records(20, seed=6)
    for k, atoms in enumerate(xtb):
        atoms.info["split"] = "test" if k % 4 == 0 else "train"
    Dataset.create(tmp_path / "xtb_split.h5").append(xtb)
    cfg = train_config(config(small_config, dft, tmp_path / "run", init_from="x", data={
        "paths": [str(dft), str(tmp_path / "xtb_split.h5")], "heads": ["dft", "xtb"], "train_records": [None, 12]}))
    records = load_records(cfg.data)
    replayed = np.flatnonzero(records.heads == "xtb")
    in_train = np.intersect1d(records.splits["train"], replayed)
    assert len(in_train) == 12  # the draw, from the 15 non-test records
    assert len(records.atoms) == len(Dataset(dft)) + 12 and records.sources[1]["drawn_from"] == 20  # read: the draw
    assert all(records.infos[k]["split"] == "train" for k in in_train)
    for name, index in records.splits.items():  # valid, test, held-out: the DFT dataset's records only
        if name != "train":
            assert not np.isin(index, replayed).any()
    again = load_records(cfg.data)
    assert np.array_equal(np.sort(again.splits["train"]), np.sort(records.splits["train"]))  # a fixed draw


def test_heads_config_is_checked(small_config, two_levels, tmp_path):
    from mlff.errors import MLFFError
    from mlff.train.config import train_config

    dft, xtb = two_levels
    with pytest.raises(MLFFError, match="data.heads needs one entry per entry of data.paths"):
        train_config(config(small_config, dft, tmp_path, init_from="x", data={"paths": [str(dft)], "heads": ["a", "b"]}))
    with pytest.raises(MLFFError, match="it needs init_from"):
        train_config(config(small_config, dft, tmp_path, data={"paths": [str(dft), str(xtb)], "heads": ["a", "b"]}))
    with pytest.raises(MLFFError, match="train_records entries must be >= 1"):
        train_config(config(small_config, dft, tmp_path, data={"paths": [str(dft)], "train_records": [0]}))
