"""Numerical settings are not the level of theory: faster settings join a dataset only through a measured
calibration within tolerance, their constant energy shift removed and recorded; without one they are refused,
by labelling and by merging alike (and a merge refuses another level of theory, as labelling does)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from emt_labeler import EMTLabeler, structures
from mlff.cli import main
from mlff.data import Dataset, label
from mlff.data.levels import effective_numerics_of, levels_in, numerics_of
from mlff.data.merge import merge
from mlff.data.numerics import EV_TO_KCAL_MOL, load_calibration, measure
from mlff.data.records import labels
from mlff.errors import MLFFError

DEFAULT = {"density_fit": True, "grids_level": 3, "conv_tol_Ha": 1e-9, "pcm_lebedev_order": 29}
FAST = {**DEFAULT, "conv_tol_Ha": 1e-7, "pcm_lebedev_order": 17}
SHIFT_EV = 0.0115


class AtNumerics(EMTLabeler):
    """EMT as a 'DFT' code at given numerical settings: ``shift_eV`` added to every energy, forces nudged."""

    def __init__(self, numerics: dict, shift_eV: float = 0.0, force_noise: float = 0.0):
        super().__init__()
        self.numerics, self.shift_eV, self.force_noise = numerics, shift_eV, force_noise

    def level(self) -> dict:
        return {**super().level(), "solvent": "C-PCM eps=4.0", **self.numerics}

    def compute(self, atoms):
        result = super().compute(atoms)
        rng = np.random.default_rng([int(atoms.info["k"]), self.numerics["pcm_lebedev_order"]])
        result.energy_eV += self.shift_eV + 1e-4 * rng.normal()  # a shift with a 0.1 meV scatter (per settings)
        result.forces_eV_A = result.forces_eV_A + self.force_noise * rng.normal(size=result.forces_eV_A.shape)
        return result


def _calibration(tmp_path, n: int = 5, force_noise: float = 1e-3):
    """Label n geometries at both settings and measure; returns (calibration, reference path)."""
    ref, fast = tmp_path / "default.h5", tmp_path / "fast.h5"
    label(structures(n), AtNumerics(DEFAULT), ref, progress=False)
    label(structures(n), AtNumerics(FAST, SHIFT_EV, force_noise), fast, progress=False)
    return measure(Dataset(ref).read(), Dataset(fast).read(), sources=[ref, fast]), ref


def test_a_calibration_measures_the_shift_the_relative_energies_and_the_forces(tmp_path):
    cal, _ = _calibration(tmp_path)
    assert cal.geometries == 5 and cal.reference == DEFAULT and cal.numerics == FAST
    assert cal.energy_shift_eV == pytest.approx(SHIFT_EV, abs=2e-4)
    assert 0 < cal.energy_shift_std_eV < 5e-4
    assert 0 < cal.relative_energy_max_kcal_mol < 1e-3 * EV_TO_KCAL_MOL  # scatter of 0.1 meV, not the 11.5 shift
    assert cal.force_rms_meV_A == pytest.approx(1.0, rel=0.3)  # 1 meV/Å noise per component
    assert cal.within() and "within tolerance: one level" in cal.summary()
    assert len(cal.sources) == 2 and all(len(s["sha256"]) == 64 for s in cal.sources)


def test_a_calibration_outside_its_tolerance_is_refused(tmp_path):
    cal, ref = _calibration(tmp_path, force_noise=0.02)  # 20 meV/Å: not one level
    assert not cal.within() and "force RMS" in cal.exceeded()[0]
    with pytest.raises(MLFFError, match="outside its tolerance"):
        label(structures(7), AtNumerics(FAST), ref, progress=False, calibration=cal)


def test_labels_at_other_settings_join_only_through_a_calibration_shifted_and_recorded(tmp_path):
    cal, ref = _calibration(tmp_path)
    path = tmp_path / "cal.json"
    cal.save(path)
    cal = load_calibration(path)
    fast = AtNumerics(FAST, SHIFT_EV)
    with pytest.raises(MLFFError, match=r"other numerical settings .*mlff data numerics"):
        label(structures(7), fast, ref, progress=False)
    assert fast.calls == 0
    summary = label(structures(7), fast, ref, progress=False, calibration=cal)
    assert summary.labelled == 2 and fast.calls == 2
    records = Dataset(ref).read()
    for record in records[5:]:
        prov = record.info["provenance"]
        assert numerics_of(prov) == FAST and effective_numerics_of(prov) == DEFAULT
        assert prov["numerics_calibration"]["file"] == "cal.json"
        assert labels(record)["energy"] == pytest.approx(prov["energy_raw_eV"] - cal.energy_shift_eV, abs=1e-9)
    # the shifted labels sit where default-settings labels of the same geometries would (0.1 meV scatter)
    label(structures(7), AtNumerics(DEFAULT), tmp_path / "check.h5", progress=False)
    expected = [labels(r)["energy"] for r in Dataset(tmp_path / "check.h5").read()[5:]]
    assert np.allclose([labels(r)["energy"] for r in records[5:]], expected, atol=5e-4)
    assert [(n, c) for _, n, c in levels_in(Dataset(ref).infos())] == [(DEFAULT, 7)]


def test_a_calibration_is_only_for_the_settings_and_level_it_measured(tmp_path):
    cal, ref = _calibration(tmp_path)
    other = AtNumerics({**FAST, "pcm_lebedev_order": 23})
    with pytest.raises(MLFFError, match="the calibration measured .*pcm_lebedev_order 17"):
        label(structures(7), other, ref, progress=False, calibration=cal)
    record = Dataset(ref).read()[0]
    with pytest.raises(MLFFError, match="the calibration measured"):
        cal.apply(record)  # a default-settings record is not at the calibrated settings


def test_merge_keeps_one_level_and_applies_a_calibration(tmp_path):
    cal, ref = _calibration(tmp_path)
    label(structures(8)[5:], AtNumerics(FAST, SHIFT_EV), tmp_path / "new_fast.h5", progress=False)
    with pytest.raises(MLFFError, match="other numerical settings"):
        merge([ref, tmp_path / "new_fast.h5"], tmp_path / "merged.h5")
    counts = merge([ref, tmp_path / "new_fast.h5"], tmp_path / "merged.h5", calibration=cal)
    assert counts["records"] == 8
    assert [(n, c) for _, n, c in levels_in(Dataset(tmp_path / "merged.h5").infos())] == [(DEFAULT, 8)]
    label(structures(10)[8:], EMTLabeler(), tmp_path / "emt.h5", progress=False)
    with pytest.raises(MLFFError, match="another level of theory"):
        merge([ref, tmp_path / "emt.h5"], tmp_path / "mixed.h5")
    assert not (tmp_path / "mixed.h5").exists()
    assert merge([ref, tmp_path / "emt.h5"], tmp_path / "mixed.h5", allow_mixed_levels=True)["records"] == 7


def test_the_cli_measures_writes_and_uses_a_calibration(tmp_path, capsys):
    _calibration(tmp_path)
    out = tmp_path / "cal.json"
    main(["data", "numerics", str(tmp_path / "default.h5"), str(tmp_path / "fast.h5"), "--out", str(out)])
    printed = capsys.readouterr().out
    assert "5 geometries" in printed and "within tolerance: one level" in printed
    assert re.search(r"total energy shifted by \+11\.[3-7] ± 0\.\d meV", printed)
    saved = json.loads(out.read_text())
    assert saved["numerics"]["pcm_lebedev_order"] == 17 and saved["geometries"] == 5
    label(structures(6)[5:], AtNumerics(FAST, SHIFT_EV), tmp_path / "one.h5", progress=False)
    main(["data", "merge", str(tmp_path / "default.h5"), str(tmp_path / "default.h5"), str(tmp_path / "one.h5"),
          "--overwrite", "--calibration", str(out)])
    assert len(Dataset(tmp_path / "default.h5")) == 6


def test_a_broken_calibration_file_is_one_line(tmp_path):
    bad = tmp_path / "cal.json"
    bad.write_text('{"level": {}, "refer')
    with pytest.raises(MLFFError, match=r"cal.json: not a numerics calibration"):
        load_calibration(bad)
    with pytest.raises(MLFFError, match="no numerics calibration at"):
        load_calibration(tmp_path / "missing.json")


def test_measure_needs_shared_geometries_at_two_settings(tmp_path):
    ref = tmp_path / "a.h5"
    label(structures(3), AtNumerics(DEFAULT), ref, progress=False)
    label(structures(6)[3:], AtNumerics(FAST), tmp_path / "b.h5", progress=False)
    with pytest.raises(MLFFError, match="0 geometries are labelled on both sides"):
        measure(Dataset(ref).read(), Dataset(tmp_path / "b.h5").read())
    with pytest.raises(MLFFError, match="same settings"):
        measure(Dataset(ref).read(), Dataset(ref).read())
