"""sbatch scripts without a cluster: profiles (unknown keys refused), what the scripts ask SLURM for, and the
batch shell's signal forwarding, wait loop and requeue decision, run by bash with a fake program and scontrol."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mlff.cli import main
from mlff.errors import MLFFError
from mlff.hpc import Job, load_profile, render_script
from mlff.hpc.profile import parse_time_s


def test_profile_keys_and_overrides(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({"partition": "gpu", "account": "p1", "gpus_per_node": 8, "modules": "cuda/12"}))
    p = load_profile(path, {"account": "p2", "time": None}, ["time=2-00:00:00", "sbatch=[--mail-type=END]"])
    assert (p.partition, p.account, p.gpus_per_node, p.modules, p.sbatch) == ("gpu", "p2", 8, ["cuda/12"], ["--mail-type=END"])
    assert p.time_s == 2 * 86400 and p.train_procs_per_node == 8
    with pytest.raises(MLFFError, match="unknown key 'gpu_per_node'"):
        load_profile(None, settings=["gpu_per_node=4"])
    with pytest.raises(MLFFError, match="signal_s"):
        load_profile(None, {"time": "5", "signal_s": 300})
    assert [parse_time_s(t) for t in ("30", "5:00", "01:00:00", "1-0", "1-01:02:03")] == [1800, 300, 3600, 86400, 90123]
    with pytest.raises(MLFFError, match="not a SLURM time limit"):
        parse_time_s("1h")


def _job(**kw):
    base = {"name": "md", "kind": "md", "command": ["md", "/abs/md.yaml"], "run_dir": "/abs/out",
            "resume_marker": "/abs/out/checkpoint.pt"}
    return Job(**{**base, **kw})


def test_script_asks_for_requeue_append_and_the_stop_signal_before_the_limit():
    profile = load_profile(None, {"partition": "gpu", "account": "p", "time": "12:00:00", "signal_s": 600,
                                  "venv": "/v", "modules": ["cuda/12.4"]})
    text = render_script(_job(gpus=1), profile, logs_dir="/abs/out/slurm/logs", workdir="/abs", graph="g")
    for line in ("#SBATCH --signal=B:USR1@600", "#SBATCH --requeue", "#SBATCH --open-mode=append",
                 "#SBATCH --time=12:00:00", "#SBATCH --partition=gpu", "#SBATCH --account=p",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --output=/abs/out/slurm/logs/md-%j.out",
                 "module load cuda/12.4", "source /v/bin/activate", 'scontrol requeue "$SLURM_JOB_ID"',
                 "(trap '' USR1 TERM; exec mlff md /abs/md.yaml $resume) &"):
        assert line in text, line
    assert text.index("trap 'forward USR1' USR1") < text.index("module load")  # trapped before anything slow
    array = render_script(_job(array=4, name="label"), profile, logs_dir="/l", workdir="/abs", graph="g")
    assert "#SBATCH --array=0-3" in array and "#SBATCH --output=/l/label-%A_%a.out" in array


def test_training_over_nodes_is_srun_torchrun_with_the_rendezvous_from_slurm():
    profile = load_profile(None, {"nodes": 2, "gpus_per_node": 8, "exclusive": True})
    job = _job(name="train", kind="train", command=["train", "/t.yaml"], gpus=8, nodes=2, procs_per_node=8,
               torchrun=True)
    text = render_script(job, profile, logs_dir="/l", workdir="/w", graph="g")
    assert "#SBATCH --nodes=2" in text and "#SBATCH --ntasks-per-node=1" in text and "#SBATCH --exclusive" in text
    assert 'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in text
    assert ('srun --ntasks-per-node=1 --kill-on-bad-exit=1 torchrun --nnodes="$SLURM_NNODES" --nproc-per-node=8 '
            '--rdzv-backend=c10d --rdzv-endpoint="$head:29500" --rdzv-id="$SLURM_JOB_ID"') in text
    assert "--no-python mlff train /t.yaml $resume &" in text and "world=16" in text
    assert 'export MLFF_STOP_FILE=/l/"stop-$SLURM_JOB_ID"' in text and 'touch "$MLFF_STOP_FILE"' in text


def test_training_on_one_node_lets_torchrun_pick_a_free_rendezvous_port():
    profile = load_profile(None, {"gpus_per_node": 4})
    job = _job(name="train", kind="train", command=["train", "/t.yaml"], gpus=4, nodes=1, procs_per_node=4,
               torchrun=True)
    text = render_script(job, profile, logs_dir="/l", workdir="/w", graph="g")
    assert '--nproc-per-node=4 --rdzv-backend=c10d --rdzv-endpoint="localhost:0" --rdzv-id="$SLURM_JOB_ID"' in text
    assert "29500" not in text  # two such jobs sharing a node must not both bind the profile's port
    assert "scontrol show hostnames" not in text  # no head node to look up


def test_a_stop_file_is_a_stop_request(tmp_path, monkeypatch):
    from mlff.signals import SignalFlag

    monkeypatch.setenv("MLFF_STOP_FILE", str(tmp_path / "stop"))
    flag = SignalFlag()
    flag.CHECK_EVERY_S = 0.0
    with flag:
        assert flag.received is None
        (tmp_path / "stop").touch()
        assert flag.received == "stop file"


FAKE_PROGRAM = """#!{python}
# a resumable program: starts slowly (the batch shell resends the stop signal), then on USR1/TERM it
# 'checkpoints' and exits 75; it finishes after {n} ticks in all
import os, signal, sys, time
d = "{d}"
open(f"{{d}}/calls", "a").write("args: " + " ".join(sys.argv[1:]) + "\\n")
time.sleep(0.5)  # startup: a signal now is ignored (inherited SIG_IGN) and must come again
stop = []
signal.signal(signal.SIGUSR1, lambda *a: stop.append(1))
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
ticks = int(open(f"{{d}}/ticks").read()) if os.path.exists(f"{{d}}/ticks") else 0
while ticks < {n}:
    if stop:
        open(f"{{d}}/calls", "a").write("stopped\\n")
        sys.exit(75)
    time.sleep(0.05)
    ticks += 1
    open(f"{{d}}/ticks", "w").write(str(ticks))
sys.exit(3 if os.path.exists(f"{{d}}/fail") else 0)
"""


def _run_script(tmp_path, restart: int, *, send=None, n=160, fail=False):
    d = tmp_path
    (d / "bin").mkdir(exist_ok=True)
    prog = d / "bin" / "fakemlff"
    prog.write_text(FAKE_PROGRAM.format(d=d, n=n, python=sys.executable))
    (d / "bin" / "scontrol").write_text(f"#!/bin/bash\necho \"$*\" >> {d}/scontrol\n")
    for f in (prog, d / "bin" / "scontrol"):
        f.chmod(0o755)
    if fail:
        (d / "fail").touch()
    profile = load_profile(None, {"mlff": str(prog), "time": "10", "signal_s": 60})
    script = d / "job.sh"
    script.write_text(render_script(_job(resume_marker=str(d / "ticks")), profile, logs_dir=str(d), workdir=str(d),
                                    graph="g"))
    env = {**os.environ, "PATH": f"{d / 'bin'}:{os.environ['PATH']}", "SLURM_JOB_ID": "42",
           "SLURM_RESTART_COUNT": str(restart)}
    proc = subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if send is not None:
        deadline = time.monotonic() + 20
        while not (d / "calls").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(send)  # during the program's startup
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out, (d / "scontrol").read_text() if (d / "scontrol").exists() else ""


def test_usr1_during_startup_stops_the_program_requeues_and_the_next_attempt_resumes(tmp_path):
    rc, out, scontrol = _run_script(tmp_path, 0, send=signal.SIGUSR1)
    assert rc == 0 and scontrol == "requeue 42\n", out
    assert "SIGUSR1 received" in out and "requeueing job 42" in out
    rc, out, scontrol = _run_script(tmp_path, 1)  # the requeued attempt: --resume, runs to the end
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls == ["args: md /abs/md.yaml", "stopped", "args: md /abs/md.yaml --resume"]
    assert rc == 0 and "mlff-slurm: finished" in out and scontrol == "requeue 42\n"  # not requeued again


def test_term_stops_the_program_and_the_job_stays_stopped(tmp_path):
    rc, out, scontrol = _run_script(tmp_path, 0, send=signal.SIGTERM)  # scancel, the hard time limit
    assert rc == 75 and scontrol == "" and "stopped by SIGTERM" in out and "not requeued" in out
    assert (tmp_path / "calls").read_text().splitlines() == ["args: md /abs/md.yaml", "stopped"]


def test_a_finished_or_failed_run_does_not_come_back(tmp_path):
    rc, out, scontrol = _run_script(tmp_path, 0, n=3)
    assert rc == 0 and scontrol == "" and "finished" in out
    (tmp_path / "ticks").unlink()
    rc, out, scontrol = _run_script(tmp_path, 0, n=3, fail=True)
    assert rc == 3 and scontrol == "" and "mlff-slurm: error: the program exited with status 3: not requeued" in out


def test_dry_run_prints_and_unknown_kinds_are_named(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "md.yaml").write_text(yaml.safe_dump({"structure": "x.xyz", "steps": 10, "out": "out/md"}))
    assert main(["slurm", "md", "md.yaml", "--dry-run", "--time", "30", "--partition", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "#SBATCH --partition=cpu" in text and "#SBATCH --time=30" in text and not (tmp_path / "out").exists()
    assert main(["slurm", "md", "md.yaml", "--set", "partitions=x"]) == 2
    assert "unknown key 'partitions'" in capsys.readouterr().err
    assert main(["slurm", "md", "md.yaml"]) == 0  # writes the script, submits nothing
    assert (tmp_path / "out" / "md" / "slurm" / "md.sbatch").is_file()


def test_the_test_cluster_says_why_it_cannot_start(monkeypatch):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import slurm_cluster

    monkeypatch.setattr(slurm_cluster.shutil, "which", lambda name: None)
    monkeypatch.setattr(slurm_cluster.Path, "exists", lambda self: False)
    reason = slurm_cluster.missing()
    assert reason.startswith("SLURM binaries missing (munged, slurmctld") and "apt-get install" in reason


def test_umbrella_runs_as_one_self_requeueing_job(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = {"structure": "fdh-cluster:small:reactant", "potential": "gfn2-xtb", "centers_A": [-0.2, 0.2],
              "equilibration_steps": 10, "production_steps": 30, "out": "out/umb"}
    (tmp_path / "umb.yaml").write_text(yaml.safe_dump(config))
    assert main(["slurm", "umbrella", "umb.yaml", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "mlff umbrella" in text and "umb.yaml" in text and "--signal=B:USR1@" in text and "requeue" in text
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**config, "colvar_every": 0}))
    assert main(["slurm", "umbrella", "bad.yaml", "--dry-run"]) == 2  # refused at submission, as by mlff umbrella
