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


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, committee_potential):
    """A real umbrella run on the small FDH cluster: 3 windows x 12 steps with an untrained committee of 3."""
    from mlff.bias.umbrella import run_umbrella
    from mlff.models.store import save_potential

    root = tmp_path_factory.mktemp("committee")
    save_potential(committee_potential, root / "pot")
    config = {"structure": "fdh-cluster:small:reactant", "potential": str(root / "pot"), "out": str(root / "run"),
              "centers_A": {"start": -0.6, "stop": 0.6, "count": 3}, "spring_eV_per_A2": 2.0, "starts": "structure",
              "equilibration_steps": 0, "production_steps": 12, "colvar_every": 2,
              "md": {"device": "cpu", "dtype": "float64", "timestep_fs": 0.25, "temperature_K": 300.0,
                     "trajectory_every": 4, "seed": 1}}
    run_umbrella(config, show_progress=False)
    return root / "run"


@pytest.mark.slow
def test_member_energies_of_a_real_umbrella_run_are_the_potentials_and_cached(tiny_run, committee_potential):
    from mlff.fes.committee import CACHE, member_energies
    from mlff.md.h5md import read_h5md
    from mlff.models.graph import batch_atoms

    table = member_energies(tiny_run)
    assert table["energy_eV"].shape == (3 * 4, 3) and set(table["system"]) == {0, 1, 2}  # steps 0, 4, 8, 12
    frame = read_h5md(tiny_run / "trajectory.h5", ":", group="system_0001")[2]
    graph = batch_atoms([frame], committee_potential.cutoff, dtype=committee_potential.dtype)
    direct = committee_potential.evaluate(graph, forces=False)["energy_members"][:, 0].numpy()
    row = np.nonzero((table["step"] == int(frame.info["step"])) & (table["system"] == 1))[0][0]
    assert np.allclose(table["energy_eV"][row], direct, atol=1e-6)
    stamp = (tiny_run / CACHE).stat().st_mtime_ns
    assert np.array_equal(member_energies(tiny_run)["energy_eV"], table["energy_eV"])
    assert (tiny_run / CACHE).stat().st_mtime_ns == stamp  # read back, not evaluated again


@pytest.mark.slow
def test_frames_picked_in_regions_are_labelled_and_paired_with_the_committee_mean(tiny_run, tmp_path):
    from mlff.bias.io import read_biased_run
    from mlff.data import Dataset, label
    from mlff.data.labelers import make_labeler
    from mlff.fes.check import pick_frames, write_single_points
    from mlff.fes.committee import member_energies
    from mlff.fes.levels import read_single_points

    run = read_biased_run(tiny_run)
    lo_hi = {"low": [-10.0, float(np.median(run.cv))], "high": [float(np.median(run.cv)), 10.0]}
    frames = pick_frames(tiny_run, lo_hi, 3, seed=4)
    assert [f.info["region"] for f in frames] == ["low"] * 3 + ["high"] * 3
    from mlff.md.config import read_structure

    cluster = read_structure("fdh-cluster:small:reactant")  # its charge and xi atoms travel along
    assert all(f.info["charge"] == cluster.info["charge"] and f.info["xi_atoms"] == cluster.info["xi_atoms"]
               for f in frames)
    for f in frames:
        t = int(np.nonzero(run.step == f.info["step"])[0][0])
        assert f.info["cv"] == pytest.approx(run.cv[t, f.info["system"]])
    assert pick_frames(tiny_run, lo_hi, 3, seed=4)[0].info["step"] == frames[0].info["step"]  # seeded
    label(frames, make_labeler({"backend": "ase", "calculator": "emt"}), tmp_path / "sp.h5", progress=False)
    path = write_single_points(Dataset(tmp_path / "sp.h5").read(), tiny_run, tmp_path / "sp.csv")
    points = read_single_points(path)
    table = member_energies(tiny_run)
    records = Dataset(tmp_path / "sp.h5").read()
    k = int(np.nonzero((table["step"] == records[0].info["step"]) & (table["system"] == records[0].info["system"]))[0][0])
    assert points.delta_eV[0] == pytest.approx(records[0].get_potential_energy() - table["energy_eV"][k].mean(), abs=1e-6)
    with pytest.raises(MLFFError, match="in the far region"):
        pick_frames(tiny_run, {"far": [50.0, 60.0]}, 2)


def _points_in(run, regions, delta):
    from mlff.fes.levels import SinglePoints

    t, s = np.nonzero(np.any([(run.cv >= lo) & (run.cv <= hi) for lo, hi in regions.values()], axis=0))
    return SinglePoints(run.step[t], s, delta(run.cv[t, s]), "synthetic")


def test_the_endpoint_correction_recovers_a_known_change_of_the_barrier(run):
    from mlff.fes.check import endpoint_barrier

    a = analyse(run, FESConfig(bins=24, cv_range=(-1.4, 1.4), n_bootstraps=40, slice_fractions=(1.0,)))
    b = a.barrier
    regions = {"reactant": [b.cv_reactant - 0.1, b.cv_reactant + 0.1], "ts": [b.cv_ts - 0.05, b.cv_ts + 0.05]}
    # a 1 kT bump centred on the TS (0.3 Å wide) and a constant offset: the barrier rises by ~1 kT
    out = endpoint_barrier(run, a, _points_in(run, regions, lambda x: 2.5 + KT * np.exp(-0.5 * ((x - b.cv_ts) / 0.3) ** 2)),
                           regions, n_bootstraps=50)
    assert out["correction_kT"] == pytest.approx(1.0 - np.exp(-0.5 * (b.cv_reactant - b.cv_ts) ** 2 / 0.09), abs=0.05)
    assert out["barrier_kT"] == pytest.approx(b.values_kT["barrier_forward"] + out["correction_kT"])
    assert out["correction_error_kT"] < 0.05 and out["barrier_error_kT"] >= b.errors_kT["barrier_forward"]
    assert out["min_effective_sample_size"] > 0.8 * min(r["frames"] for r in out["regions"].values())
    # a tilt: E_label - E_model = c x changes the barrier by c (x_ts - x_reactant) (frames weighted by MBAR)
    tilt = endpoint_barrier(run, a, _points_in(run, regions, lambda x: 0.7 * KT * x), regions, n_bootstraps=0)
    mean_x = {name: np.mean(run.cv[(run.cv >= lo) & (run.cv <= hi)]) for name, (lo, hi) in regions.items()}
    assert tilt["correction_kT"] == pytest.approx(0.7 * (mean_x["ts"] - mean_x["reactant"]), abs=0.05)
    with pytest.raises(MLFFError, match="in the ts region"):
        endpoint_barrier(run, a, _points_in(run, {"r": regions["reactant"]}, lambda x: 0 * x), regions)
