"""Constants and the config builder of the active-learning tests (imported by name: a module called
`conftest` is ambiguous when the whole suite runs)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
XTB = REPO / "data" / "fdh-cluster" / "xtb_small.h5"
TINY = {"species": ["H", "C", "N", "O"], "r_max": 4.0, "hidden_irreps": "8x0e+8x1o", "max_ell": 2, "correlation": 2,
        "MLP_irreps": "8x0e", "radial_MLP": [16, 16], "avg_num_neighbors": 8.0}


def learn_dict(out, sets: dict, **changes) -> dict:
    """A two-iteration loop: initial committee trained from 16 xTB records, 2 MD replicas x 20 steps, 3 labels
    per iteration (xTB), 6 in all, fine-tuning 2 epochs; the test set is 4 points of the held-out scan."""
    config = {
        "structure": "fdh-cluster:small:reactant", "device": "cpu", "progress": False, "out": str(out),
        "initial": {"train": {"data": {"paths": [str(sets["seed"])], "split": {"train": 0.9, "valid": 0.1}},
                              "model": dict(TINY), "committee": 2, "max_epochs": 2, "batch_size": 4, "plots": False,
                              "e0s": str(REPO / "data" / "fdh-cluster" / "isolated_atoms_xtb.h5")}},
        "explore": {"md": {"replicas": 2, "steps": 20, "trajectory_every": 5, "temperature_K": 300.0,
                           "dtype": "float64", "checkpoint_every": 10}},
        "select": {"trust_window_eV_A": [0.0, 100.0], "per_iteration": 3, "max_per_bin": 2, "xi_bin_A": 0.2},
        "label": {"oracle": {"backend": "xtb"}},
        "retrain": {"train": {"max_epochs": 2, "batch_size": 4, "plots": False}},
        "test": {"path": str(sets["test"])},
        "stop": {"total_labels": 6, "max_iterations": 3},
    }
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            config[section] = {**config.get(section, {}), name: value}
        else:
            config[key] = value
    return config
