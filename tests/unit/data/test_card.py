"""The dataset card counts what is in the file and plots it."""

import json

from emt_labeler import EMTLabeler, structures
from mlff.data import Dataset, label
from mlff.data.card import dataset_statistics, write_card


def test_card_counts_regions_and_records_checksums(tmp_path):
    pool = structures(6)
    for k, atoms in enumerate(pool):
        atoms.info["xi"] = -1.2 + 0.45 * k  # -1.2 -0.75 -0.3 0.15 0.6 1.05
        atoms.info["tags"] = ["reactant" if atoms.info["xi"] < -0.3 else "ts" if atoms.info["xi"] < 0.3 else "product"]
    label(pool, EMTLabeler(fail_every=4), tmp_path / "d.h5", progress=False)  # k = 0 and 4 fail
    stats = dataset_statistics(Dataset(tmp_path / "d.h5"))
    # kept: k=1 (-0.75, reactant), 2 (-0.3: not < -0.3, so ts), 3 (0.15, ts), 5 (1.05, product)
    assert stats["per_region"] == {"reactant": 1, "ts": 2, "product": 1} and stats["failures"] == 2
    assert stats["levels"][0]["method"] == "EMT"
    card = write_card({"small": tmp_path / "d.h5"}, tmp_path, recipe={"size": "small"})
    text = card.read_text()
    assert "| small | 4 | 2 | 1 | 2 | 1 |" in text and "method EMT" in text
    assert "DFT speed options" not in text
    assert (tmp_path / "distributions.png").stat().st_size > 10_000
    sums = json.loads((tmp_path / "checksums.json").read_text())
    assert sums["d.h5"]["records_checksum"] == Dataset(tmp_path / "d.h5").checksum()


def test_card_includes_the_measured_dft_speed_options(tmp_path):
    label(structures(2), EMTLabeler(), tmp_path / "d.h5", progress=False)
    (tmp_path / "dft_speed.md").write_text("## DFT speed options, measured\n\n| option | CPU time |\n|---|---|\n| x | 0.7x |\n")
    text = write_card({"small": tmp_path / "d.h5"}, tmp_path).read_text()
    assert "## DFT speed options, measured" in text and "| x | 0.7x |" in text
    assert text.index("DFT speed options") < text.index("## Distributions")
