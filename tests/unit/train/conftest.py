"""Fixtures for the training tests: a tiny labelled dataset (EMT molecules and a held-out scan)."""

from __future__ import annotations

import pytest
from helpers import emt_records, scan_records

from mlff.data import Dataset


@pytest.fixture(scope="session")
def emt_dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("train-data") / "emt.h5"
    ds = Dataset.create(path, description="EMT test molecules")
    ds.append(scan_records() + emt_records(36))  # the scan first, so max_records keeps it
    return path
