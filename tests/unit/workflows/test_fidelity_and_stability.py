"""The numbers of the fidelity check (profile comparison) and of the stability check (bond events)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from ase.build import molecule

WORKFLOWS = Path(__file__).resolve().parents[3] / "workflows"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, WORKFLOWS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fidelity = _load("fdh_fidelity")
stability = _load("fdh_stability")


def test_profiles_that_differ_by_a_constant_agree_and_a_bump_is_found():
    cv = np.linspace(-1.6, 1.6, 33)
    ref = 8.0 * np.exp(-cv ** 2 / 0.1)
    err = np.full_like(cv, 0.1)
    same = fidelity.compare_profiles(cv, ref, err, ref + 3.7, err)
    assert same["max_abs_difference_kcal_per_mol"] < 1e-12 and same["within_tolerance"]
    bumped = ref + 3.7
    bumped[np.argmin(abs(cv - 0.5))] += 1.0
    c = fidelity.compare_profiles(cv, ref, err, bumped, err)
    assert not c["within_tolerance"] and not c["within_tolerance_or_2sigma"]
    assert c["at_cv_A"] == cv[np.argmin(abs(cv - 0.5))] and 0.9 < c["max_abs_difference_kcal_per_mol"] < 1.0
    noisy = fidelity.compare_profiles(cv, ref, np.full_like(cv, 0.5), bumped, np.full_like(cv, 0.5))
    assert not noisy["within_tolerance"] and noisy["within_tolerance_or_2sigma"]  # inside 2 sigma = 1.41


def test_bins_outside_the_compared_range_do_not_count_and_missing_bins_fail():
    cv = np.linspace(-1.6, 1.6, 33)
    ref, err = np.zeros_like(cv), np.full_like(cv, 0.1)
    other = ref.copy()
    other[0] = 5.0  # at -1.6, outside [-1.2, 1.2]
    assert fidelity.compare_profiles(cv, ref, err, other, err)["within_tolerance"]
    other[16] = np.nan
    c = fidelity.compare_profiles(cv, ref, err, other, err)
    assert c["bins_missing"] == 1 and not c["within_tolerance"]


def test_bond_events_separate_reactive_pairs_from_broken_bonds():
    start = molecule("HCOOH")
    symbols = start.get_chemical_symbols()
    c = symbols.index("C")
    hydrogens = [k for k, s in enumerate(symbols) if s == "H"]
    h_c = min(hydrogens, key=lambda k: start.get_distance(c, k))  # the H bonded to C
    frames = [start.copy() for _ in range(4)]
    far = frames[2].positions[h_c] - frames[2].positions[c]
    for k in (2, 3):
        frames[k].positions[h_c] = frames[k].positions[c] + 2.0 * far  # the C-H bond stretched to twice its length
    events = stability.bond_events(frames, xi_atoms=[c, h_c, 1])
    assert events["bonds_at_start"] == 4
    [broken] = events["broken"]
    assert broken["pair"] == sorted([c, h_c]) and broken["first_frame"] == 2 and broken["reactive"]
    assert stability.bond_events(frames, xi_atoms=None)["broken"][0]["reactive"] is False
    assert stability.bond_events(frames[:2], xi_atoms=None) == {"bonds_at_start": 4, "broken": [], "formed": []}
