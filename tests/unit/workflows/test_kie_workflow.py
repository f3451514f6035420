"""workflows/fdh_kie.py's card section carries every number of its kie.json record, and a deep-tunnelling Bell value
is said to be out of reach rather than printed."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def _workflow():
    spec = importlib.util.spec_from_file_location("fdh_kie", REPO / "workflows" / "fdh_kie.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_card_section_carries_the_numbers_and_their_caveats():
    record = {"reactant": {"xi_A": -1.4}, "ts": {"xi_A": 0.17}, "imaginary_cm_H": 922.4, "imaginary_cm_D": 816.6,
              "barrier_electronic_kcal_mol": 25.18, "moving_atoms": 31, "temperature_K": 300.0, "kie_zpe_only": 2.696,
              "kie": 2.851, "kie_wigner": 3.158, "kie_bell": None,
              "provenance": {"mlff_git_commit": "70ec7d2abc", "created_utc": "2026-12-08T00:45:00"}}
    text = _workflow().card_section(record)
    for piece in ("mlff 70ec7d2, 2026-12-08", "xi -1.40 Å", "xi +0.17 Å", "922i", "817i", "25.2 kcal/mol", "31 moving",
                  "2.70 from the zero-point", "**2.85**", "3.16 with Wigner", "n/a (deep tunnelling)", "2.7-3", "Caveats"):
        assert piece in text, piece
