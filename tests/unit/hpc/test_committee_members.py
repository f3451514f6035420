"""Committee members trained one at a time (``mlff train --member K``: one SLURM array task each), then
assembled by a ``--resume`` run, give the potential of one run that trains the whole committee."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from helpers import config, emt_records, weights  # noqa: E402

from mlff import load_potential  # noqa: E402
from mlff.data import Dataset  # noqa: E402
from mlff.errors import MLFFError  # noqa: E402
from mlff.train import train  # noqa: E402


@pytest.mark.slow
def test_members_one_at_a_time_assemble_into_the_committee_of_one_run(small_config, tmp_path):
    data = tmp_path / "emt.h5"
    Dataset.create(data).append(emt_records(14))
    cfg = lambda out: config(small_config, data, tmp_path / out, committee=2, max_epochs=1, device="cpu")  # noqa: E731
    whole = load_potential(train(cfg("whole")).potential_dir)
    for k in (1, 0):  # any order, as array tasks finish
        result = train(cfg("split"), members=[k])
        assert result.status == "done" and result.potential_dir is None
        assert (tmp_path / "split" / f"member_{k:02d}" / "checkpoint.pt").is_file()
    assembled = train(cfg("split"), resume=True)
    a, b = weights(whole), weights(load_potential(assembled.potential_dir))
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    with pytest.raises(MLFFError, match="member 2 out of range: the committee has 2"):
        train(cfg("split"), members=[2])
