"""benchmarks/dft_speed.py: the comparison of speed options against the default, from the rows it wrote."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import dft_speed  # noqa: E402

from mlff.errors import MLFFError  # noqa: E402


def _row(variant, geometry, energy, forces, cpu, cycles):
    return {"variant": variant, "geometry": geometry, "energy_eV": energy, "forces_eV_A": forces.tolist(),
            "cpu_s": cpu, "scf_cycles": cycles}


def test_options_are_judged_by_relative_energy_and_largest_force_change():
    f = np.zeros((3, 3))
    done = {("default", "A"): _row("default", "A", -10.0, f, 100.0, 14),
            ("default", "B"): _row("default", "B", -9.0, f, 120.0, 14)}
    shifted = f.copy()
    shifted[1, 2] = 0.004  # 4 meV/Å: inside the 5 meV/Å limit
    # the same shift of both energies leaves the relative energy alone
    done[("lebedev17", "A")] = _row("lebedev17", "A", -10.5, f, 60.0, 14)
    done[("lebedev17", "B")] = _row("lebedev17", "B", -9.5, shifted, 66.0, 14)
    # a relative-energy change of 0.2 kcal/mol: outside
    done[("conv_tol", "A")] = _row("conv_tol", "A", -10.0, f, 80.0, 9)
    done[("conv_tol", "B")] = _row("conv_tol", "B", -9.0 + 0.2 * dft_speed.EV_PER_KCAL_MOL, f, 90.0, 9)
    rows = dft_speed.compare(done, seed={})
    leb, tol = rows["lebedev17"], rows["conv_tol"]
    assert leb["relative_kcal_mol"] == pytest.approx(0.0, abs=1e-9)
    assert leb["energy_meV_max"] == pytest.approx(500.0)
    assert leb["force_max_meV_A"] == pytest.approx(4.0)
    assert leb["cpu_ratio"] == pytest.approx(126.0 / 220.0)
    assert leb["within_limits"] is True
    assert tol["relative_kcal_mol"] == pytest.approx(0.2)
    assert tol["within_limits"] is False
    assert tol["cycles"] == ["9 vs 14", "9 vs 14"]


def test_a_restored_row_without_forces_keeps_the_comparison_measured_with_it():
    f = np.zeros((3, 3))
    done = {("default", "A"): _row("default", "A", -10.0, f, 100.0, 14),
            ("default", "B"): _row("default", "B", -9.0, f, 200.0, 14),
            ("nearest", "B"): {"variant": "nearest", "geometry": "B", "cpu_s": 150.0, "scf_cycles": 10,
                               "summary": {"energy_meV_max": 1e-5, "force_rms_meV_A": 0.07, "force_max_meV_A": 6.0},
                               "restored": "from a card"}}
    entry = dft_speed.compare(done, seed={})["nearest"]
    assert entry["cpu_ratio"] == pytest.approx(0.75)
    assert entry["cycles"] == ["10 vs 14"]
    assert entry["within_limits"] is False  # 6 meV/Å: outside the force limit
    assert "0.75x" in dft_speed._table({"nearest": entry}, done)
    with pytest.raises(MLFFError, match="only understood"):
        dft_speed._from_summary("lebedev17", [done[("nearest", "B")]], [done[("default", "B")]])
