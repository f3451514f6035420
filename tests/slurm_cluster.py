"""A real one-node SLURM cluster for tests: munge + slurmctld + slurmd, as root, without systemd.

``SlurmCluster(tmp_dir).start()`` writes slurm.conf / gres.conf into ``tmp_dir`` (kept short: unix socket
paths must stay under 108 bytes), starts munged with its own key and socket, then slurmctld and slurmd on
free ports, and waits for the node to be idle. ``stop()`` cancels every job first (their slurmstepd
processes outlive slurmd), then stops the daemons by the PIDs they were started with. Client commands
find the cluster through ``cluster.env`` (SLURM_CONF), which jobs inherit on submission.

``missing()`` names what is absent (binaries, root) so tests can skip with a clear reason; with
``MLFF_REQUIRE_SLURM=1`` the fixture fails instead (CI installs the Debian packages).
Settings that matter (measured on SLURM 22.05): ``SlurmdParameters=config_overrides`` lets a 2-core
node advertise 8 CPUs; fast scheduling needs short ``sched_interval``/``bf_interval``; ``cred_expire=5``
lets a requeued job start again within seconds (120 s by default); ``kill_invalid_depend`` is left out on
purpose: ``mlff slurm`` submits dependent jobs with ``--kill-on-invalid-dep=yes`` (without either, a job whose
``afterok`` dependency failed pends forever); fake GPUs are character devices (mknod).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["SlurmCluster", "missing"]

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "srun")


def missing() -> str | None:
    """Why a cluster cannot start here (None when it can)."""
    absent = [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
    if absent:
        return (f"SLURM binaries missing ({', '.join(absent)}): apt-get install -y slurmctld slurmd "
                "slurm-client munge")
    if os.geteuid() != 0:
        return "the test cluster runs its daemons as root (SlurmUser=root); not root here"
    return None


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


SLURM_CONF = """\
ClusterName=mlfftest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/m/sock,cred_expire=5
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/ctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/ctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1,sched_min_interval=100000
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MinJobAge=3600
KillWait=10
InactiveLimit=0
MessageTimeout=10
JobRequeue=1
{gres_types}
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} Boards=1 SocketsPerBoard=1 CoresPerSocket={cpus} ThreadsPerCore=1 RealMemory=4000 {gres} State=UNKNOWN
PartitionName=test Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""


class SlurmCluster:
    """One node (this host's short name), partition ``test``, ``cpus`` CPUs, ``gpus`` fake GPUs."""

    def __init__(self, root: str | Path, *, cpus: int = 8, gpus: int = 2):
        self.root = Path(root)
        self.cpus, self.gpus = cpus, gpus
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.procs: dict[str, int] = {}
        if len(str(self.root / "m" / "sock")) > 100:
            raise ValueError(f"{self.root}: too long for unix socket paths (< 108 bytes); use a short temp dir")

    # ---- configuration -----------------------------------------------------------------------
    def _fake_gpus(self) -> bool:
        """Character devices for gres.conf (plain files are refused); False where mknod is not allowed."""
        dev = self.root / "dev"
        dev.mkdir(exist_ok=True)
        try:
            for k in range(self.gpus):
                path = dev / f"gpu{k}"
                if not path.exists():
                    os.mknod(path, 0o600 | 0o020000, os.makedev(1, 3))  # S_IFCHR, like /dev/null
        except OSError:
            return False
        (self.root / "gres.conf").write_text(f"NodeName={self.node} Name=gpu File={dev}/gpu[0-{self.gpus - 1}]\n")
        return True

    def write_config(self) -> None:
        for sub in ("m", "state", "spool"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "m", 0o700)
        gpus = self.gpus > 0 and self._fake_gpus()
        ctld_port, slurmd_port = _free_ports(2)
        self.conf.write_text(SLURM_CONF.format(
            root=self.root, ctld_port=ctld_port, slurmd_port=slurmd_port, node=self.node, cpus=self.cpus,
            gres_types="GresTypes=gpu" if gpus else "", gres=f"Gres=gpu:{self.gpus}" if gpus else ""))
        self.has_gpus = gpus

    # ---- daemons -----------------------------------------------------------------------------
    def _start_munge(self) -> None:
        key = self.root / "m" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        m = self.root / "m"
        subprocess.run([_binary("munged"), "--force", f"--socket={m}/sock", f"--key-file={key}",
                        f"--pid-file={m}/munged.pid", f"--log-file={m}/munged.log", f"--seed-file={m}/seed"],
                       check=True, capture_output=True, timeout=30)
        self.procs["munged"] = self._read_pid(m / "munged.pid")

    def _read_pid(self, path: Path, timeout_s: float = 20.0) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if path.is_file() and path.read_text().strip():
                return int(path.read_text().split()[0])
            time.sleep(0.05)
        raise RuntimeError(f"no PID file {path}; logs in {self.root}")

    def start(self) -> "SlurmCluster":
        reason = missing()
        if reason:
            raise RuntimeError(reason)
        self.write_config()
        try:
            self._start_munge()
            subprocess.run([_binary("slurmctld"), "-f", str(self.conf), "-i"], check=True, env=self.env,
                           capture_output=True, timeout=60)
            self.procs["slurmctld"] = self._read_pid(self.root / "ctld.pid")
            subprocess.run([_binary("slurmd"), "-f", str(self.conf), "-N", self.node], check=True, env=self.env,
                           capture_output=True, timeout=60)
            self.procs["slurmd"] = self._read_pid(self.root / "slurmd.pid")
            self.wait_idle()
        except Exception:
            self.stop()
            raise
        return self

    def wait_idle(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            out = self.run("sinfo", "-h", "-N", "-o", "%T", check=False)
            state = out.stdout.strip()
            if state.startswith("idle"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"node not idle after {timeout_s} s (state {state!r}); see {self.root}/*.log")

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """A SLURM client command against this cluster."""
        return subprocess.run([str(a) for a in args], env=self.env, capture_output=True, text=True,
                              check=check, timeout=timeout)

    def stop(self) -> None:
        """Cancel all jobs, wait for them to leave the node, then stop the daemons by PID."""
        if "slurmctld" in self.procs:
            self.run("scancel", "--full", "-u", "root", check=False)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                out = self.run("squeue", "-h", "-o", "%i", check=False)
                if out.returncode != 0 or not out.stdout.strip():
                    break
                time.sleep(0.3)
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.procs.pop(name, None)
            if pid is not None:
                _terminate(pid)

    # ---- helpers for tests -------------------------------------------------------------------
    def job_state(self, job_id: str) -> dict:
        """``scontrol show job`` fields (JobState, ExitCode, Restarts, ...) of a job (or array task)."""
        out = self.run("scontrol", "-o", "show", "job", str(job_id), check=False).stdout
        fields = {}
        for item in out.split():
            key, _, value = item.partition("=")
            fields.setdefault(key, value)
        return fields

    def wait_for(self, predicate, timeout_s: float, what: str, poll_s: float = 0.5, explain=None):
        """Poll ``predicate`` until it is truthy; on timeout the error carries the cluster's state
        (``diagnose``) and ``explain()``'s text (e.g. the job's log), since the daemons' files go with CI."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(poll_s)
        extra = explain() if explain is not None else ""
        raise TimeoutError(f"{what} not reached within {timeout_s} s; logs in {self.root}\n{extra}\n{self.diagnose()}")

    def diagnose(self, lines: int = 25) -> str:
        """What a hung test needs to be understood: jobs, the node's state and reason, the daemons' last log
        lines and the job processes still alive."""
        parts = []
        for title, args in (("squeue", ("squeue", "-a", "-o", "%i %T %r %M %j")),
                            ("sinfo", ("sinfo", "-N", "-o", "%N %T %E")),
                            ("jobs", ("scontrol", "-o", "show", "job"))):
            try:
                out = self.run(*args, check=False, timeout=20)
                parts.append(f"--- {title}\n{out.stdout.strip()}{out.stderr.strip()}")
            except subprocess.TimeoutExpired:
                parts.append(f"--- {title}: timed out")
        for name in ("ctld.log", "slurmd.log"):
            path = self.root / name
            if path.is_file():
                parts.append(f"--- {name} (last {lines} lines)\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        ps = subprocess.run(["ps", "-eo", "pid,ppid,stat,etimes,args"], capture_output=True, text=True, check=False)
        keep = [ln[:200] for ln in ps.stdout.splitlines()[1:] if any(k in ln for k in ("slurmstepd", "srun", "torch", "mlff"))]
        parts.append("--- processes\n" + "\n".join(keep))
        return "\n".join(parts)


def _terminate(pid: int, timeout_s: float = 15.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
