"""Fixtures for the active-learning tests: the small FDH cluster, xTB as the oracle, a tiny MACE committee.

The seed and test sets are drawn from the shipped GFN2-xTB dataset (the oracle's own level), so the loop's
labels, the training data and the test set share one level of theory."""

from __future__ import annotations

import numpy as np
import pytest

from learn_helpers import XTB


@pytest.fixture(scope="session")
def xtb_sets(tmp_path_factory) -> dict:
    """{"seed": 16 xTB records off the held-out scan, "test": 4 points of the held-out scan} (paths)."""
    from mlff.data import Dataset

    source = Dataset(XTB)
    infos = source.infos()
    held = [k for k, info in enumerate(infos) if "holdout-scan" in info.get("tags", [])]
    other = [k for k, info in enumerate(infos) if "holdout-scan" not in info.get("tags", [])]
    picks = {"seed": sorted(np.random.default_rng(0).choice(other, 16, replace=False)), "test": held[::4]}
    folder = tmp_path_factory.mktemp("learn-data")
    paths = {}
    for name, index in picks.items():
        paths[name] = folder / f"{name}.h5"
        Dataset.create(paths[name]).append(source.read(index))
    return paths
