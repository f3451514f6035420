"""A barrier only where there is one: interior minima and TS, a real rise between them (mlff.fes.barrier).

A monotonic profile and a flat one give no barrier (no numbers, no TS, no Eyring rate; the output says why and
how many bootstrap resamples had one), through ``locate``, through the analysis and through ``mlff fes``; a
double well still gives its exact barrier."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from fes_surfaces import KT, double_well, exact_bin_free_energies, umbrella_run, wt_metad_run

import mlff.bias.io as bias_io
from mlff.cli import main
from mlff.errors import MLFFError
from mlff.fes import FESConfig, analyse
from mlff.fes.barrier import NoBarrier, barrier_numbers, barrier_numbers_rows, locate, spread

REGIONS = {"reactant": (-np.inf, -0.3), "product": (0.3, np.inf)}
X = np.linspace(-1.5, 1.5, 31)
FAST = {"bins": 30, "cv_range": (-1.5, 1.5), "n_bootstraps": 20, "slice_fractions": (1.0,)}


def slope(x):
    """3 kT per Å uphill from reactant to product: no minimum in either region."""
    return KT * 3.0 * np.asarray(x)


def flat(x):
    return 0.0 * np.asarray(x)


def _double_well_kT(x, barrier=5.0, tilt=1.0):
    return barrier * (x ** 2 - 1.0) ** 2 + tilt * x


def test_locate_finds_the_double_well_and_its_exact_numbers():
    f = _double_well_kT(X)
    marks = locate(X, f, **REGIONS)
    assert (X[marks.reactant], X[marks.ts], X[marks.product]) == pytest.approx((-1.0, 0.1, 1.0))
    numbers = barrier_numbers(f, marks)
    assert numbers["barrier_forward"] == pytest.approx(f[marks.ts] - _double_well_kT(-1.0))
    assert numbers["reaction"] == pytest.approx(2.0)


@pytest.mark.parametrize("f, words", [
    (3.0 * X, "reactant region's lowest point is the edge of the profile (cv = -1.5)"),  # uphill
    (-3.0 * X, "reactant region's lowest point (cv = -0.4) is on its boundary and F is lower just past it"),
    (np.where(X < 0, 3.0 * (X + 1.0) ** 2, 3.0 - 4.0 * X), "product region's lowest point is the edge"),  # a well,
    # then downhill to the end of what was sampled
])
def test_a_monotonic_profile_has_no_barrier(f, words):
    with pytest.raises(NoBarrier, match=re.escape("no barrier: the " + words)):
        locate(X, f, **REGIONS)


def test_a_flat_profile_within_its_noise_has_no_barrier():
    rng = np.random.default_rng(0)
    f = 2.0 * (X ** 2 - 1.0) ** 2 * 0.2 + rng.normal(0.0, 0.15, X.size)  # a 0.4 kT bump in 0.15 kT noise
    f[[0, -1]] += 2.0  # interior minima, so that only the height can decide
    with pytest.raises(NoBarrier, match="not more than 1.00 kT"):
        locate(X, f, **REGIONS)
    bump = _double_well_kT(X, barrier=1.5, tilt=0.0)  # 1.5 kT: above the 1 kT floor ...
    assert locate(X, bump, **REGIONS, error=np.full(X.size, 0.2)).ts == 15
    with pytest.raises(NoBarrier, match=r"2 x its error 1.41 kT"):  # ... but not above twice its error
        locate(X, bump, **REGIONS, error=np.full(X.size, 1.0))
    assert locate(X, bump, **REGIONS, error=np.full(X.size, 1.0), noise_z=1.0).ts == 15
    with pytest.raises(NoBarrier):
        locate(X, bump, **REGIONS, min_barrier_kT=2.0)


def test_a_ts_region_whose_top_is_its_boundary_and_empty_regions():
    f = _double_well_kT(X)
    with pytest.raises(NoBarrier, match="highest point of the TS region .* is on its boundary"):
        locate(X, f, **REGIONS, ts_region=(-0.9, -0.5))
    with pytest.raises(MLFFError, match="no profile bins in the product region") as info:
        locate(X, f, reactant=(-np.inf, -0.3), product=(2.0, np.inf))
    assert not isinstance(info.value, NoBarrier)  # a region the windows never sampled is a config error


def test_bootstrap_rows_count_those_with_a_barrier():
    rows = np.stack([_double_well_kT(X), 3.0 * X, _double_well_kT(X, barrier=4.0)])
    out = barrier_numbers_rows(X, rows, **REGIONS)
    assert out["found"].tolist() == [True, False, True] and np.isnan(out["barrier_forward"][1])
    assert spread(out)["barrier_forward"] == pytest.approx(np.std(out["barrier_forward"][[0, 2]], ddof=1))


@pytest.mark.parametrize("U", [slope, flat])
def test_the_analysis_of_a_profile_without_a_barrier_reports_none(U):
    a = analyse(umbrella_run(U, np.linspace(-1.5, 1.5, 9), 0.65, 400, seed=1), FESConfig(**FAST))
    b = a.barrier
    assert not b.found and b.no_barrier.startswith("no barrier: ")
    assert b.values_kT is None and b.errors_kT is None and b.cv_ts is None and b.cv_reactant is None
    assert b.n_resamples == 20 and b.resamples_with_barrier <= 2


def test_the_analysis_of_a_double_well_gives_its_exact_barrier():
    a = analyse(umbrella_run(double_well, np.linspace(-1.5, 1.5, 9), 0.65, 800, seed=2), FESConfig(**FAST))
    b = a.barrier
    exact = exact_bin_free_energies(double_well, a.profiles[0].edges)
    marks = locate(a.profiles[0].cv, exact, **REGIONS)
    expected = barrier_numbers(exact, marks)
    assert b.found and b.resamples_with_barrier == b.n_resamples == 20
    for key in ("barrier_forward", "barrier_reverse", "reaction"):
        assert abs(b.values_kT[key] - expected[key]) < 3.0 * b.errors_kT[key] + 0.15, key
    assert b.cv_ts == pytest.approx(a.profiles[0].cv[marks.ts], abs=0.25)


def test_a_metad_run_on_a_slope_has_no_barrier_in_either_profile():
    a = analyse(wt_metad_run(slope, 300, seed=4, grid=(-1.6, 1.6, 801)),
                FESConfig(bins=30, n_bootstraps=20, slice_fractions=(1.0,)))
    assert not a.barrier.found and a.extra["hills_barrier_kT"] is None and a.extra["hills_no_barrier"]


def _fes_cli(tmp_path, monkeypatch, run, capsys) -> tuple[str, dict]:
    monkeypatch.setattr(bias_io, "read_biased_run", lambda run_dir: run, raising=False)
    assert main(["fes", str(tmp_path), "--bins", "30", "--range", "-1.5", "1.5", "--bootstraps", "20"]) == 0
    return capsys.readouterr().out, json.loads((tmp_path / "fes" / "fes.json").read_text())


@pytest.mark.parametrize("U", [slope, flat])
def test_mlff_fes_says_there_is_no_barrier_and_prints_no_rate(tmp_path, monkeypatch, capsys, U):
    out, doc = _fes_cli(tmp_path, monkeypatch, umbrella_run(U, np.linspace(-1.5, 1.5, 9), 0.65, 400, seed=1), capsys)
    assert "  no barrier: " in out and "bootstrap resamples)" in out
    assert "barrier (forward)" not in out and "Eyring" not in out and "TS at" not in out
    r = doc["results"]
    assert r["barrier"]["found"] is False and r["barrier"]["no_barrier"].startswith("no barrier: ")
    assert r["barrier"]["bootstrap_resamples"] == 20 and "interior local minima" in r["barrier"]["criterion"]
    assert r["barrier_forward"]["value"] is None and r["reaction_free_energy"]["value"] is None
    assert r["rate_forward"]["value"] is None and r["rate_forward"]["interval_68"] is None
    assert r["cv_transition_state"]["value"] is None and r["cv_reactant_minimum"]["value"] is None
    assert (tmp_path / "fes" / "profile.png").is_file()


def test_mlff_fes_on_a_double_well_prints_its_barrier_and_rate(tmp_path, monkeypatch, capsys):
    run = umbrella_run(double_well, np.linspace(-1.5, 1.5, 9), 0.65, 800, seed=2)
    out, doc = _fes_cli(tmp_path, monkeypatch, run, capsys)
    assert "barrier (forward)" in out and "rate (forward, Eyring)" in out and "no barrier" not in out
    assert "(a barrier in 20 of 20 bootstrap resamples)" in out
    r = doc["results"]
    assert r["barrier"]["found"] is True and r["barrier"]["no_barrier"] is None
    assert 3.0 < r["barrier_forward"]["value"] / doc["kT"]["value"] < 8.0 and r["rate_forward"]["value"] > 0


def test_learns_barrier_stop_ignores_a_profile_without_a_barrier():
    from types import SimpleNamespace

    from mlff.learn.report import stop_reason

    config = SimpleNamespace(stop=SimpleNamespace(total_labels=100, max_iterations=10, min_uncertain=0,
                                                  barrier_tol_kcal_mol=0.5))

    def report(iteration, barrier):
        return {"iteration": iteration, "labels_spent": 10, "uncertain": 20,
                "profile": {"barrier_kcal_mol": barrier, "no_barrier": None if barrier else "no barrier: flat"}}

    assert stop_reason(config, report(1, None), report(0, None)) is None  # two flat profiles are not converged
    assert stop_reason(config, report(1, 15.2), report(0, None)) is None
    assert "barrier converged" in stop_reason(config, report(2, 15.2), report(1, 15.4))
