"""The PySCF labeller's speed options: a density-matrix guess from the nearest labelled geometry (fewer SCF
cycles, the same converged answer) and the C-PCM Lebedev order (recorded, checked)."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule

from mlff.data.labelers import PySCFLabeler, make_labeler
from mlff.errors import MLFFError

pytest.importorskip("pyscf")

GAS_HF = dict(functional=None, basis="6-31g", dispersion=None, solvent_eps=None, density_fit=False, conv_tol=1e-10)


def _waters():
    first = molecule("H2O")
    first.rattle(0.03, seed=1)
    second = first.copy()
    second.rattle(0.002, seed=2)  # a close neighbour (RMSD ~0.003 Å): the guess is nearly converged
    return first, second


def test_nearest_guess_saves_cycles_and_keeps_the_answer():
    first, second = _waters()
    cold = PySCFLabeler(**GAS_HF).compute(second)
    warm_labeler = PySCFLabeler(**GAS_HF, scf_guess="nearest")
    assert warm_labeler.compute(first).info["scf_guess"].startswith("minao")  # nothing labelled yet
    warm = warm_labeler.compute(second)
    assert cold.converged and warm.converged
    assert warm.info["scf_guess"].startswith("nearest (RMSD 0.0")
    assert cold.info["scf_guess"] == "minao"
    assert warm.info["scf_cycles"] < cold.info["scf_cycles"]
    assert warm.energy_eV == pytest.approx(cold.energy_eV, abs=1e-7)
    np.testing.assert_allclose(warm.forces_eV_A, cold.forces_eV_A, atol=1e-5)


def test_nearest_guess_ignores_far_or_different_molecules():
    first, _ = _waters()
    labeler = PySCFLabeler(**GAS_HF, scf_guess="nearest", guess_max_rmsd=0.1)
    labeler.compute(first)
    far = first.copy()
    far.positions += 0.5  # a translation is a different AO frame: RMSD 0.87 Å
    assert labeler.compute(far).info["scf_guess"] == "minao (no labelled geometry within 0.1 Å)"
    ammonia = molecule("NH3")
    assert labeler.compute(ammonia).info["scf_guess"].startswith("minao")


def test_lebedev_order_is_checked_and_recorded():
    pcm = dict(GAS_HF, basis="sto-3g", solvent_eps=4.0)
    assert PySCFLabeler(**pcm).level()["pcm_lebedev_order"] == 29  # PySCF's default
    assert PySCFLabeler(**pcm, pcm_lebedev_order=17).level()["pcm_lebedev_order"] == 17
    assert "pcm_lebedev_order" not in PySCFLabeler(**GAS_HF).level()
    with pytest.raises(MLFFError, match="one of PySCF's Lebedev orders"):
        PySCFLabeler(**pcm, pcm_lebedev_order=18)
    with pytest.raises(MLFFError, match="needs solvent_eps"):
        PySCFLabeler(**GAS_HF, pcm_lebedev_order=17)
    with pytest.raises(MLFFError, match="scf_guess must be one of minao, nearest"):
        make_labeler({"backend": "pyscf", "scf_guess": "huckel"})


def test_lebedev_order_reaches_the_continuum():
    pcm = dict(GAS_HF, basis="sto-3g", solvent_eps=4.0)
    water, _ = _waters()
    coarse = PySCFLabeler(**pcm, pcm_lebedev_order=11).compute(water)
    fine = PySCFLabeler(**pcm).compute(water)
    assert coarse.converged and fine.converged
    # a different surface gives a (slightly) different solvation energy, so the option is not ignored
    assert coarse.info["solvation_Ha"] != pytest.approx(fine.info["solvation_Ha"], abs=1e-9)
    assert abs(coarse.info["solvation_Ha"] - fine.info["solvation_Ha"]) < 1e-3


def test_the_label_command_passes_the_speed_options_only_when_given():
    import argparse

    from mlff.data.cli import _labeler_spec

    base = dict(labeler=None, backend="pyscf", basis="def2-svp", functional="b3lyp", gas=False, eps=4.0,
                energy_only=False, scf_guess="minao", conv_tol=None, pcm_lebedev_order=None)
    spec = _labeler_spec(argparse.Namespace(**base))
    assert "conv_tol" not in spec and "pcm_lebedev_order" not in spec  # the labeller's defaults stand
    spec = _labeler_spec(argparse.Namespace(**{**base, "conv_tol": 1e-7, "pcm_lebedev_order": 17}))
    assert spec["conv_tol"] == 1e-7 and spec["pcm_lebedev_order"] == 17
    labeler = make_labeler(spec)
    assert labeler.level()["conv_tol_Ha"] == 1e-7 and labeler.level()["pcm_lebedev_order"] == 17
