"""The model error of an umbrella profile: the run's samples reweighted to each committee member. On a synthetic
run whose members differ by known bumps on the barrier, the members' barriers move by those bumps; on a real
(tiny) umbrella run, the members' energies are the potential's, evaluated once and cached."""

from __future__ import annotations

import numpy as np
import pytest
from fes_surfaces import KT, double_well, umbrella_run

from mlff.errors import MLFFError
from mlff.fes import FESConfig, analyse
from mlff.fes.report import fes_document, summary_lines

HEIGHTS_KT = np.array([-1.0, -0.5, 0.5, 1.0])  # member k: the committee mean + HEIGHTS_KT[k] kT at the barrier top


def _bump(x):
    return KT * np.exp(-0.5 * (np.asarray(x) / 0.3) ** 2)


@pytest.fixture(scope="module")
def run():
    return umbrella_run(double_well, np.linspace(-1.5, 1.5, 13), 0.65, 800, seed=5)


def _table(run, every=2):
    t = np.arange(0, run.n_samples, every)
    steps = np.repeat(run.step[t], run.n_systems)
    systems = np.tile(np.arange(run.n_systems), t.size)
    x = run.cv[t].ravel()
    mean = 3.0 + double_well(x) * KT  # any committee-mean energy: only member - mean matters
    return {"step": steps, "system": systems, "energy_eV": mean[:, None] + HEIGHTS_KT[None] * _bump(x)[:, None],
            "potential": "synthetic committee"}


def test_members_barriers_move_by_their_bumps_and_their_spread_is_the_model_error(run):
    config = FESConfig(bins=24, cv_range=(-1.4, 1.4), n_bootstraps=0, slice_fractions=(1.0,), committee=True)
    a = analyse(run, config, committee=_table(run))
    model = a.extra["committee"]
    barriers = np.array([m["values_kT"]["barrier_forward"] for m in model["members"]])
    shifts = barriers - model["mean_potential_kT"]["barrier_forward"]
    # the bump is ~1 kT at the TS and ~0 at the minima: each member's barrier moves by its height (binning blurs)
    assert np.allclose(shifts, HEIGHTS_KT, atol=0.25)
    assert model["std_kT"]["barrier_forward"] == pytest.approx(np.std(HEIGHTS_KT, ddof=1), abs=0.2)
    assert abs(model["std_kT"]["reaction"]) < 0.1  # the bumps leave the minima alone
    assert model["min_ess"] > 0.3 * model["n_frames"] and model["n_frames"] == 13 * 400
    doc = fes_document(a, config.to_dict(), {})
    me = doc["model_error"]
    assert me["barrier_forward"]["unit"] == "kcal/mol" and len(me["members"]) == 4
    assert me["barrier_forward"]["error"] == pytest.approx(model["std_kT"]["barrier_forward"] * doc["kT"]["value"])
    assert any(line.strip().startswith("model error (committee of 4, reweighted)") for line in summary_lines(a, doc))


def test_a_committee_table_on_frames_outside_the_run_is_refused(run):
    table = _table(run)
    table["step"] = table["step"] + 1  # no CV sample there
    with pytest.raises(MLFFError, match="none of the .* frames of the committee table"):
        analyse(run, FESConfig(bins=20, n_bootstraps=0, slice_fractions=(1.0,)), committee=table)


@pytest.mark.slow
def test_member_energies_of_a_real_umbrella_run_are_the_potentials_and_cached(tmp_path, committee_potential):
    from mlff.bias.umbrella import run_umbrella
    from mlff.fes.committee import CACHE, member_energies
    from mlff.md.h5md import read_h5md
    from mlff.models.graph import batch_atoms
    from mlff.models.store import save_potential

    save_potential(committee_potential, tmp_path / "pot")
    config = {"structure": "fdh-cluster:small:reactant", "potential": str(tmp_path / "pot"), "out": str(tmp_path / "run"),
              "centers_A": {"start": -0.6, "stop": 0.6, "count": 3}, "spring_eV_per_A2": 2.0, "starts": "structure",
              "equilibration_steps": 0, "production_steps": 12, "colvar_every": 2,
              "md": {"device": "cpu", "dtype": "float64", "timestep_fs": 0.25, "temperature_K": 300.0,
                     "trajectory_every": 4, "seed": 1}}
    run_umbrella(config, show_progress=False)
    table = member_energies(tmp_path / "run")
    assert table["energy_eV"].shape == (3 * 4, 3) and set(table["system"]) == {0, 1, 2}  # steps 0, 4, 8, 12
    frame = read_h5md(tmp_path / "run" / "trajectory.h5", ":", group="system_0001")[2]
    graph = batch_atoms([frame], committee_potential.cutoff, dtype=committee_potential.dtype)
    direct = committee_potential.evaluate(graph, forces=False)["energy_members"][:, 0].numpy()
    row = np.nonzero((table["step"] == int(frame.info["step"])) & (table["system"] == 1))[0][0]
    assert np.allclose(table["energy_eV"][row], direct, atol=1e-6)
    stamp = (tmp_path / "run" / CACHE).stat().st_mtime_ns
    assert np.array_equal(member_energies(tmp_path / "run")["energy_eV"], table["energy_eV"])
    assert (tmp_path / "run" / CACHE).stat().st_mtime_ns == stamp  # read back, not evaluated again
