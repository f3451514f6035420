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
import torch
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
        if not os.environ.get("MLFF_KEEP_SLURM"):  # MLFF_KEEP_SLURM=1 keeps the daemons' logs
            import shutil

            shutil.rmtree(root, ignore_errors=True)
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


def wait_final(cluster, job_id: str, timeout_s: float = 240, run_dir=None, name: str = "") -> dict:
    """The job's final ``scontrol`` state; on timeout the error shows its log (``run_dir``, ``name``)."""
    return cluster.wait_for(lambda: (s := cluster.job_state(job_id)).get("JobState") in FINAL and s, timeout_s,
                            f"job {job_id} ended",
                            explain=lambda: f"--- job log\n{log_text(run_dir, name, job_id)[-6000:]}" if run_dir else "")


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

    work, steps = md_inputs, 400
    config = md_config(work, "md", steps)
    submit("md", config)
    job = jobs_record(work / "md")["jobs"][0]["job_id"]
    stopped = 0
    for k in range(2):  # a preemption (USR1 to the batch shell) in each of two attempts, each after steps of its own
        # Signalled only once this attempt's shell has printed its "attempt N on" line (its traps are set by then)
        # and its program has gone 40 steps past where the last attempt stopped. Seen on CI: the first attempt ran
        # on to step ~100 before its USR1 took effect, so a fixed "step >= 100" sent the second USR1 as the job
        # started, most likely before its batch shell ran (the signal was lost: the job finished without a second
        # requeue). The first attempt overshoots here too (USR1 sent at step >= 40 took effect at 97-102).
        at_step = stopped + 40
        cluster.wait_for(lambda: f"attempt {k + 1} on" in log_text(work / "md", "md", job)
                         and last_step(work / "md") >= at_step, 240, f"attempt {k + 1} past step {at_step}")
        cluster.run("scancel", "--batch", "--signal=USR1", job)
        cluster.wait_for(lambda: int(cluster.job_state(job).get("Restarts", -1)) == k + 1, 120, f"requeue {k + 1}")
        stopped = last_step(work / "md")  # the step of its checkpoint
        assert stopped < steps - 40, f"attempt {k + 1} ran on to step {stopped} of {steps} before it stopped"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the job (OMP_NUM_THREADS = cpus_per_task = 1): the same summation order
    try:
        reference = run_md(md_config(work, "ref", steps), show_progress=False)  # meanwhile, uninterrupted
    finally:
        torch.set_num_threads(threads)
    state = wait_final(cluster, job)
    text = log_text(work / "md", "md", job)
    assert state["JobState"] == "COMPLETED", text[-3000:]
    assert state["Restarts"] == "2" and text.count("requeueing job") == 2 and text.count("attempt ") == 3
    summary = json.loads((work / "md" / "run.json").read_text())
    assert summary["status"] == "finished" and summary["step"] == steps and summary["resumed"]
    ran, ref = trajectory(work / "md" / "trajectory.h5"), trajectory(work / "ref" / "trajectory.h5")
    assert ref["step"].tolist() == list(range(0, steps + 1, 5)) == ran["step"].tolist()
    for name in ("position", "velocity"):
        # Seen on CI's fresh clone (not here): after preemptions at uncontrolled steps, 6 of 738 position components
        # differ from the uninterrupted run in the last bit (1.4e-17 Å) from step 175 on; cause not yet found (the
        # unit tests of restarts at known steps are bit for bit). Until it is, the job must match to round-off.
        np.testing.assert_allclose(ran[name], ref[name], rtol=0, atol=1e-12, err_msg=name)
    assert reference["status"] == "finished"


def test_time_limited_md_job_continues_itself_to_the_end(cluster, md_inputs):
    work = md_inputs
    # SLURM checks time limits every 30 s and sends USR1@10 once less than 10 + 30 s are left: 20-50 s into an
    # attempt of a 1-minute limit. A run too long for one attempt is given its real length (a resumed run may
    # change `steps`) once it was requeued.
    config = md_config(work, "limited", 1_000_000)
    submit("md", config, "--time", "1", "--set", "signal_s=10")
    job = jobs_record(work / "limited")["jobs"][0]["job_id"]
    cluster.wait_for(lambda: "requeueing job" in log_text(work / "limited", "md", job), 240, "the first requeue")
    from mlff.md.checkpoint import load_checkpoint

    stopped_at = int(load_checkpoint(work / "limited" / "checkpoint.pt")["step"])
    steps = stopped_at + 20
    config.write_text(config.read_text().replace("steps: 1000000", f"steps: {steps}"))
    state = wait_final(cluster, job, timeout_s=400)
    text = log_text(work / "limited", "md", job)
    assert state["JobState"] == "COMPLETED", text[-3000:]
    assert int(state["Restarts"]) >= 1 and "SIGUSR1 received" in text  # nobody but SLURM sent it
    summary = json.loads((work / "limited" / "run.json").read_text())
    assert summary["status"] == "finished" and summary["step"] == steps and summary["resumed"]
    frames = trajectory(work / "limited" / "trajectory.h5")["step"].tolist()
    assert frames == list(range(0, steps + 1, 5))  # every frame once: resumed where the checkpoint was


CANCELLABLE = """#!{python}
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(75))  # stops 'resumably', like mlff does
open("{flag}", "w").write("running")
time.sleep(300)
"""


def test_a_cancelled_job_stays_cancelled(cluster, work, md_inputs):
    program = work / "program.py"
    program.write_text(CANCELLABLE.format(python=sys.executable, flag=work / "running"))
    program.chmod(0o755)
    submit("md", md_config(work, "cancel", 10), "--set", f"mlff={program}")
    job = jobs_record(work / "cancel")["jobs"][0]["job_id"]
    cluster.wait_for(lambda: (work / "running").exists(), 120, "the program running")
    cluster.run("scancel", job)
    state = wait_final(cluster, job)
    time.sleep(3)  # a requeue would show by now
    state = cluster.job_state(job)
    text = log_text(work / "cancel", "md", job)
    assert state["JobState"] == "CANCELLED" and state["Restarts"] == "0", text
    assert "stopped by SIGTERM" in text and "requeueing" not in text


# ---- labelling arrays, merge, failures -------------------------------------------------------------

def write_pool(path: Path, n: int, *, bad: int | None = None) -> Path:
    """``n`` rattled small molecules EMT knows (H, C, N, O); ``bad``: that one is a CH3 radical given
    multiplicity 1 (impossible: its labelling job fails)."""
    from ase.build import molecule

    from mlff.data import Dataset

    rng = np.random.default_rng(4)
    names = ["CH4", "H2O", "NH3", "CH3OH", "HCOOH", "CO2"]
    frames = []
    for k in range(n):
        atoms = molecule("CH3" if k == bad else names[k % len(names)])
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        atoms.info.update(source=f"pool:{k}", multiplicity=1, charge=0)
        frames.append(atoms)
    Dataset.create(path, description="test pool").append(frames, require=())
    return path


def label_config(work: Path, name: str, pool: Path, shards: int) -> Path:
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"pool": str(pool), "out": str(work / f"{name}.h5"), "shards": shards,
                                    "labeler": {"backend": "ase", "calculator": "emt"}}))
    return path


VOLATILE = ("wall_s", "labelled_utc", "host")  # provenance of each calculation: when, where, how long


def comparable(dataset) -> list:
    from mlff.data import Dataset
    from mlff.data.records import geometry_hash

    out = []
    for table in ("records", "failures"):
        for atoms in Dataset(dataset).read(table=table):
            info = {k: v for k, v in atoms.info.items() if k != "provenance"}
            prov = {k: v for k, v in atoms.info.get("provenance", {}).items() if k not in VOLATILE}
            labels = (atoms.get_potential_energy(), atoms.get_forces().tolist()) if atoms.calc else None
            out.append((table, geometry_hash(atoms), json.dumps(info, sort_keys=True),
                        json.dumps(prov, sort_keys=True), labels))
    return out


def test_array_labels_a_pool_in_four_shards_and_the_merge_equals_a_serial_run(cluster, work):
    pool = write_pool(work / "pool.h5", 14)
    submit("label", label_config(work, "labelled", pool, shards=4))
    record = jobs_record(work / "labelled-label")
    label, merge = record["jobs"]
    assert label["array"] == 4 and merge["after"] == ["label"]
    spec = work / "emt.yaml"
    spec.write_text("backend: ase\ncalculator: emt\n")
    assert mlff("data", "label", pool, work / "serial.h5", "--labeler", spec) == 0  # meanwhile, one serial run
    state = wait_final(cluster, merge["job_id"])
    assert state["JobState"] == "COMPLETED", log_text(work / "labelled-label", "merge", merge["job_id"])
    shards = sorted((work / "labelled-label" / "shards").glob("*.h5"))
    from mlff.data import Dataset

    assert [len(Dataset(s)) for s in shards] == [4, 4, 3, 3]
    merged, serial = comparable(work / "labelled.h5"), comparable(work / "serial.h5")
    assert len(merged) == 14 and merged == serial  # record for record, in the pool's order


def test_an_array_continues_a_dataset_that_exists_and_merges_into_it(cluster, work):
    from mlff.data import Dataset

    pool = write_pool(work / "pool.h5", 9)
    spec = work / "emt.yaml"
    spec.write_text("backend: ase\ncalculator: emt\n")
    assert mlff("data", "label", pool, work / "grown.h5", "--labeler", spec, "--limit", "4") == 0  # labelled before
    assert mlff("data", "label", pool, work / "serial.h5", "--labeler", spec) == 0
    submit("label", label_config(work, "grown", pool, shards=2))
    label, merge = jobs_record(work / "grown-label")["jobs"]
    state = wait_final(cluster, merge["job_id"])
    assert state["JobState"] == "COMPLETED", log_text(work / "grown-label", "merge", merge["job_id"])
    shards = sorted((work / "grown-label" / "shards").glob("*.h5"))
    assert [len(Dataset(s)) for s in shards] == [3, 2]  # 4, 6, 8 and 5, 7: nothing labelled twice
    merged, serial = comparable(work / "grown.h5"), comparable(work / "serial.h5")
    assert len(merged) == 9 and merged == serial


def test_paths_with_blanks_and_shell_syntax_reach_sbatch_and_the_jobs_as_they_are(cluster, work, monkeypatch):
    """Every path of a run (working directory, config, pool, dataset, logs) holds a blank, quotes, a % and shell
    syntax: sbatch takes the scripts, the array tasks and their merge run, the logs land in the run's folder, and
    nothing in a path runs."""
    from mlff.data import Dataset

    d = work / "my runs $(touch PWNED) `touch PWNED` it's #1 50%x"
    d.mkdir()
    (d / "profile.yaml").write_text((work / "profile.yaml").read_text())
    monkeypatch.chdir(d)
    pool = write_pool(d / "pool.h5", 5)
    submit("label", label_config(d, "labelled", pool, shards=2))
    run_dir = d / "labelled-label"
    label, merge = jobs_record(run_dir)["jobs"]
    state = wait_final(cluster, merge["job_id"], run_dir=run_dir, name="merge")
    assert state["JobState"] == "COMPLETED", log_text(run_dir, "merge", merge["job_id"])
    logs = run_dir / "slurm" / "logs"
    tasks = [logs / f"label-{label['job_id']}_{k}.out" for k in range(2)]
    assert sorted(logs.glob("*.out")) == sorted([*tasks, logs / f"merge-{merge['job_id']}.out"])
    assert all("mlff-slurm: finished" in t.read_text() for t in tasks)
    assert len(Dataset(d / "labelled.h5")) == 5 and len(list((run_dir / "shards").glob("*.h5"))) == 2
    assert not list(work.rglob("PWNED")), "a command in a path ran"


def test_a_preempted_array_task_requeues_itself_and_its_shard_is_completed(cluster, work):
    from ase.cluster import Octahedron

    from mlff.data import Dataset

    rng = np.random.default_rng(1)
    frames = []
    for k in range(80):  # 405-atom Cu clusters: EMT takes ~0.1 s each, long enough to preempt a task midway
        atoms = Octahedron("Cu", 9, cutoff=3)
        atoms.positions += rng.normal(0.0, 0.03, atoms.positions.shape)
        atoms.info.update(source=f"cu:{k}", charge=1)  # an even number of electrons (multiplicity 1)
        frames.append(atoms)
    Dataset.create(work / "cu-pool.h5").append(frames, require=())
    submit("label", label_config(work, "cu", work / "cu-pool.h5", shards=2))
    label, merge = jobs_record(work / "cu-label")["jobs"]
    shard0 = work / "cu-label" / "shards" / "shard-0-of-2.h5"

    def labelled() -> int:
        try:
            return len(Dataset(shard0))
        except Exception:  # noqa: BLE001 - not created yet
            return 0

    task0 = f"{label['job_id']}_0"
    cluster.wait_for(lambda: labelled() >= 3 or cluster.job_state(task0).get("JobState") in FINAL, 240,
                     "task 0 labelling")
    cluster.run("scancel", "--batch", "--signal=USR1", task0)
    assert wait_final(cluster, merge["job_id"])["JobState"] == "COMPLETED"
    text = (work / "cu-label" / "slurm" / "logs" / f"label-{label['job_id']}_0.out").read_text()
    assert cluster.job_state(task0)["Restarts"] == "1" and "requeueing job" in text, text[-2000:]
    assert "already done" in text.split("attempt 2")[-1]  # the second attempt skipped what the first labelled
    merged = Dataset(work / "cu.h5")
    assert len(Dataset(shard0)) == 40 and len(merged) == 80 and merged.count("failures") == 0
    sources = [info["source"] for info in merged.infos()]
    assert sources == [f"cu:{k}" for k in range(80)]  # every structure once, in the pool's order


def test_a_failing_array_task_is_reported_by_status_with_its_error(cluster, work, capsys):
    pool = write_pool(work / "pool.h5", 4, bad=1)  # shard 1 of 2 holds the impossible radical
    submit("label", label_config(work, "broken", pool, shards=2))
    run_dir = work / "broken-label"
    label, merge = jobs_record(run_dir)["jobs"]
    wait_final(cluster, f"{label['job_id']}_1")
    wait_final(cluster, f"{label['job_id']}_0")
    assert wait_final(cluster, merge["job_id"])["JobState"] == "CANCELLED"  # not pending forever
    capsys.readouterr()
    assert mlff("slurm", "status", run_dir) == 0
    text = capsys.readouterr().out
    print(text)
    lines = {line.strip().split(" ")[0]: line for line in text.splitlines()}
    assert "COMPLETED" in lines["[0]"] and "labels 2/2" in lines["[0]"]
    assert "FAILED" in lines["[1]"] and "exit 2:0" in lines["[1]"]
    assert "last error: mlff: error: structure 0: charge 0 and multiplicity 1 impossible for CH3" in lines["[1]"]
    assert "CANCELLED" in lines["merge"] and "DependencyNeverSatisfied" in lines["merge"]
    from mlff.hpc import job_status

    tasks = job_status(run_dir)["jobs"][0]["tasks"]
    assert [t["state"] for t in tasks] == ["COMPLETED", "FAILED"] and tasks[0]["error"] is None


# ---- training: srun torchrun, and a chain ----------------------------------------------------------

def emt_dataset(path: Path, n: int) -> Path:
    from ase.build import molecule
    from ase.calculators.emt import EMT

    from mlff.data import Dataset, make_record

    rng = np.random.default_rng(0)
    records = []
    for k in range(n):
        atoms = molecule(["CH4", "H2O", "NH3", "CH3OH", "HCOOH"][k % 5])
        atoms.positions += rng.normal(0.0, 0.08, atoms.positions.shape)
        atoms.calc = EMT()
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = None
        records.append(make_record(atoms, energy=e, forces=f, source=f"emt:{k}"))
    Dataset.create(path).append(records)
    return path


def train_config(work: Path, name: str, data: Path, small_config: dict, **extra) -> Path:
    model = {k: v for k, v in small_config.items() if k != "E0s"}
    cfg = {"data": {"paths": [str(data)]}, "model": model, "out": str(work / name), "max_epochs": 2,
           "batch_size": 5, "device": "cpu", "progress": False, "plots": False, "optim": {"lr": 0.01}, **extra}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_srun_torchrun_with_two_gloo_processes_trains_the_weights_of_one_process(cluster, work, small_config):
    import torch

    from mlff import load_potential
    from mlff.train import load_train_config, train

    data = emt_dataset(work / "emt.h5", 16)
    config = train_config(work, "ddp", data, small_config, max_epochs=4)
    submit("train", config, "--set", "procs_per_node=2")  # one node: torchrun picks a free port
    job = jobs_record(work / "ddp")["jobs"][0]
    assert job["torchrun"] and job["procs_per_node"] == 2
    single = train(load_train_config(train_config(work, "single", data, small_config, max_epochs=4)))  # meanwhile

    def epochs() -> int:
        log = work / "ddp" / "member_00" / "log.csv"
        return len(log.read_text().splitlines()) - 2 if log.is_file() else -1  # header, epoch 0

    cluster.wait_for(lambda: epochs() >= 1, 240, "the first epoch of the DDP job",
                     explain=lambda: log_text(work / "ddp", "train", job["job_id"])[-6000:])
    stop = cluster.run("scancel", "--batch", "--signal=USR1", job["job_id"], check=False)  # preempted once:
    # every rank stops and resumes; scancel fails only when the 4 epochs ended first (seen on a loaded machine)
    assert stop.returncode == 0 or cluster.job_state(job["job_id"]).get("JobState") in FINAL | {"COMPLETING"}, \
        stop.stderr
    state = wait_final(cluster, job["job_id"], run_dir=work / "ddp", name="train")
    text = log_text(work / "ddp", "train", job["job_id"])
    assert state["JobState"] == "COMPLETED", text[-4000:]
    # the stop can race the end of this short run (seen once on CI: training ended before USR1 took effect);
    # when it did land, the job must have requeued itself once, and either way the weights must match
    assert state["Restarts"] in ("0", "1") and (state["Restarts"] == "0" or "requeueing job" in text), text[-4000:]
    a = {n: p for n, p in load_potential(single.potential_dir).members[0].state_dict().items()}
    b = {n: p for n, p in load_potential(work / "ddp" / "potential").members[0].state_dict().items()}
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point() and a[k].numel())
    assert worst < 1e-9, f"largest weight difference {worst:.3g}"
    assert all(torch.equal(a[k], b[k]) for k in a if not a[k].is_floating_point())


def test_a_chain_label_train_md_completes_as_one_graph(cluster, work, small_config):
    from ase.build import molecule
    from ase.io import write

    pool = write_pool(work / "pool.h5", 12)
    label = label_config(work, "chain-data", pool, shards=2)
    train = train_config(work, "chain-train", work / "chain-data.h5", small_config, max_epochs=1)
    write(work / "start.xyz", molecule("CH4"))
    md = work / "chain-md.yaml"
    md.write_text(yaml.safe_dump({"structure": str(work / "start.xyz"), "potential": str(work / "chain-train" / "potential"),
                                  "device": "cpu", "steps": 20, "trajectory_every": 5, "out": str(work / "chain-md")}))
    chain = work / "chain.yaml"
    chain.write_text(yaml.safe_dump({"steps": [{"kind": "label", "config": label.name},
                                               {"kind": "train", "config": train.name},
                                               {"kind": "md", "config": md.name}]}))
    submit("chain", chain)
    record = jobs_record(work / "chain-chain")
    names = [(j["name"], j["after"]) for j in record["jobs"]]
    assert names == [("label", []), ("merge", ["label"]), ("train", ["merge"]), ("md", ["train"])]
    last = record["jobs"][-1]
    state = wait_final(cluster, last["job_id"], timeout_s=400)
    assert state["JobState"] == "COMPLETED", log_text(work / "chain-chain", "md", last["job_id"])[-3000:]
    assert json.loads((work / "chain-md" / "run.json").read_text())["step"] == 20
    from mlff.hpc import job_status

    status = job_status(work / "chain-chain")
    assert all(t["state"] == "COMPLETED" for j in status["jobs"] for t in j["tasks"])
    assert status["jobs"][2]["progress"].startswith("epochs 1/1") and status["jobs"][3]["progress"] == "step 20/20"


def test_a_gpu_task_gets_its_gpu_from_slurm(cluster, work, md_inputs):
    if not cluster.has_gpus:
        pytest.skip("no fake GPU devices here (mknod refused)")
    config = md_config(work, "gpu", 10)
    # the 'program' only prints what SLURM gave it (the profile's mlff is a command, its words quoted: a script)
    program = work / "print-gpu.sh"
    program.write_text("#!/bin/sh\necho\nprintenv CUDA_VISIBLE_DEVICES\n")
    program.chmod(0o755)
    submit("md", config, "--gpus-per-task", "1", "--set", f"mlff={program}")
    record = jobs_record(work / "gpu")
    job = record["jobs"][0]["job_id"]
    assert "#SBATCH --gpus-per-node=1" in Path(record["jobs"][0]["script"]).read_text()
    assert wait_final(cluster, job)["JobState"] == "COMPLETED"
    assert "\n0\n" in log_text(work / "gpu", "md", job)
