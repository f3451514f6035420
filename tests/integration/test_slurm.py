"""``mlff slurm`` on a real one-node SLURM cluster (tests/slurm_cluster.py): preemption and time limits that
requeue a job until its run is done, array labelling merged like a serial run, chains, srun torchrun, and
the status of a failed array task. CPU only, tiny models, short runs.

Skipped (with the reason) where the SLURM binaries or root are missing; ``MLFF_REQUIRE_SLURM=1`` (CI)
turns that skip into a failure.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from slurm_cluster import SlurmCluster, missing  # noqa: E402

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED"}


@pytest.fixture(scope="module")
def cluster():
    reason = missing()
    if reason:
        if os.environ.get("MLFF_REQUIRE_SLURM") == "1":
            pytest.fail(f"MLFF_REQUIRE_SLURM=1 but no test cluster: {reason}")
        pytest.skip(reason)
    root = tempfile.mkdtemp(prefix="mlff-slurm-", dir="/tmp")  # short: unix socket paths < 108 bytes
    c = SlurmCluster(root).start()
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(c.conf)  # sbatch (and the jobs, which inherit the environment) find it
    try:
        yield c
    finally:
        c.stop()
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved


@pytest.fixture()
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    repo = str(Path(__file__).resolve().parents[2])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([repo, *filter(None, [os.environ.get("PYTHONPATH")])]))
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump({
        "partition": "test", "time": "10", "signal_s": 30, "mlff": f"{sys.executable} -m mlff.cli",
        "torchrun": f"{sys.executable} -m torch.distributed.run"}))
    return tmp_path


def mlff(*args) -> int:
    from mlff.cli import main

    return main([str(a) for a in args])


def submit(kind: str, config, *options) -> None:
    assert mlff("slurm", kind, config, "--submit", "--profile", "profile.yaml", *options) == 0


def jobs_record(run_dir) -> dict:
    return json.loads((Path(run_dir) / "slurm" / "jobs.json").read_text())


def wait_final(cluster, job_id: str, timeout_s: float = 240) -> dict:
    return cluster.wait_for(lambda: (s := cluster.job_state(job_id)).get("JobState") in FINAL and s, timeout_s,
                            f"job {job_id} ended")


def log_text(run_dir, name: str, job_id: str) -> str:
    path = Path(run_dir) / "slurm" / "logs" / f"{name}-{job_id}.out"
    return path.read_text() if path.is_file() else ""


# ---- MD: preempted twice, and a time limit ---------------------------------------------------------

@pytest.fixture()
def md_inputs(work, small_potential):
    from ase.build import molecule
    from ase.io import write

    from mlff import save_potential

    save_potential(small_potential, work / "pot")
    write(work / "start.xyz", molecule("CH3OH"))
    return work


def md_config(work, out: str, steps: int) -> Path:
    path = work / f"{out}.yaml"
    path.write_text(yaml.safe_dump({
        "structure": str(work / "start.xyz"), "potential": str(work / "pot"), "engine": "gpu", "device": "cpu",
        "dtype": "float64", "integrator": "langevin", "temperature_K": 300.0, "steps": steps, "seed": 3,
        "trajectory_every": 5, "checkpoint_every": 20, "monitor_every": 5, "out": str(work / out)}))
    return path


def last_step(out: Path) -> int:
    from mlff.md.runlog import read_log

    try:
        rows = read_log(out / "log.csv")
    except (FileNotFoundError, KeyError, ValueError):
        return -1
    return rows[-1]["step"] if rows else -1


def trajectory(path) -> dict:
    with h5py.File(path, "r") as f:
        g = f["particles/system_0000"]
        return {name: g[f"{name}/value"][()] for name in ("position", "velocity")} | {"step": g["position/step"][()]}


def test_md_preempted_twice_resumes_to_the_uninterrupted_trajectory(cluster, md_inputs):
    from mlff.md.runner import run_md

    work, steps = md_inputs, 200
    config = md_config(work, "md", steps)
    submit("md", config)
    job = jobs_record(work / "md")["jobs"][0]["job_id"]
    for k, at_step in enumerate((40, 100)):  # a preemption (USR1 to the batch shell) in each of two attempts
        cluster.wait_for(lambda: int(cluster.job_state(job).get("Restarts", -1)) == k and last_step(work / "md") >= at_step,
                         240, f"attempt {k + 1} past step {at_step}")
        cluster.run("scancel", "--batch", "--signal=USR1", job)
        cluster.wait_for(lambda: int(cluster.job_state(job).get("Restarts", -1)) == k + 1, 120, f"requeue {k + 1}")
    reference = run_md(md_config(work, "ref", steps), show_progress=False)  # meanwhile, uninterrupted
    state = wait_final(cluster, job)
    text = log_text(work / "md", "md", job)
    assert state["JobState"] == "COMPLETED", text[-3000:]
    assert state["Restarts"] == "2" and text.count("requeueing job") == 2 and text.count("attempt ") == 3
    summary = json.loads((work / "md" / "run.json").read_text())
    assert summary["status"] == "finished" and summary["step"] == steps and summary["resumed"]
    ran, ref = trajectory(work / "md" / "trajectory.h5"), trajectory(work / "ref" / "trajectory.h5")
    assert ref["step"].tolist() == list(range(0, steps + 1, 5)) == ran["step"].tolist()
    for name in ("position", "velocity"):
        np.testing.assert_array_equal(ran[name], ref[name], err_msg=name)
    assert reference["status"] == "finished"


def test_time_limited_md_job_continues_itself_to_the_end(cluster, md_inputs):
    from mlff.md.runner import run_md

    work = md_inputs
    probe = run_md(md_config(work, "probe", 30), show_progress=False)
    # SLURM checks time limits every 30 s: USR1@50 of a 1-minute limit comes 10-40 s into an attempt, so a
    # run of ~60 s of steps cannot end in one attempt
    steps = int(np.clip(60e3 / probe["ms_per_step"], 300, 20000)) // 20 * 20
    config = md_config(work, "limited", steps)
    submit("md", config, "--time", "1", "--set", "signal_s=50")
    job = jobs_record(work / "limited")["jobs"][0]["job_id"]
    state = wait_final(cluster, job, timeout_s=600)
    text = log_text(work / "limited", "md", job)
    assert state["JobState"] == "COMPLETED", text[-3000:]
    assert int(state["Restarts"]) >= 1 and "SIGUSR1 received" in text and "requeueing job" in text
    summary = json.loads((work / "limited" / "run.json").read_text())
    assert summary["status"] == "finished" and summary["step"] == steps
    frames = trajectory(work / "limited" / "trajectory.h5")["step"].tolist()
    assert frames == list(range(0, steps + 1, 5))  # every frame once: resumed where the checkpoint was
