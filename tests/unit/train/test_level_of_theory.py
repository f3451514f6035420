"""The model card names the level of theory of the labels it was trained on (GFN2-xTB is not DFT)."""

from __future__ import annotations

from mlff.data.labelers.xtb import xtb_level
from mlff.train.report import _reference_name, labels_level

DFT = {"method": "DFT", "functional": "b3lyp", "basis": "def2-svp", "dispersion": "d3bj",
       "solvent": "C-PCM eps=4.0", "code": "pyscf"}


def test_xtb_labels_are_named_gfn2_xtb_and_not_dft():
    infos = [{"provenance": {**xtb_level(), "wall_s": 0.1}}, {"provenance": {**xtb_level(), "wall_s": 0.2}}]
    level = labels_level(infos)
    assert level.startswith("GFN2-xTB") and level.endswith("NOT DFT") and level.count("GFN2-xTB (") == 1
    assert _reference_name(infos) == "GFN2-xTB"


def test_dft_labels_name_functional_and_basis_and_mixed_levels_are_all_listed():
    assert labels_level([{"provenance": DFT}]) == "DFT B3LYP/def2-svp (d3bj, C-PCM eps=4.0, pyscf)"
    assert _reference_name([{"provenance": DFT}]) == "DFT B3LYP/def2-svp"
    both = labels_level([{"provenance": DFT}, {"provenance": xtb_level()}, {}])
    assert both.count(";") == 1 and "NOT DFT" in both
    assert _reference_name([{"provenance": DFT}, {"provenance": xtb_level()}]) == "reference"


def test_records_without_provenance_say_so():
    assert labels_level([{}, {"provenance": None}]).startswith("unknown")
