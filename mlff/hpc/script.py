"""The sbatch script of one job: resources from the profile, the program run in the background with its
stop signals forwarded, and a job that requeues itself while its run ends resumable (exit 75).

Why ``scontrol requeue`` and not a dependent continuation job: a requeued job keeps its job ID, so every
``afterok`` dependency on it (the next stage of a chain, the merge of an array) keeps waiting for the real
end of the run, and ``--open-mode=append`` keeps one log per job. A continuation job would end the first
job with success while the run is unfinished and start its dependents too early.

The life of an attempt: SLURM sends USR1 to the batch shell (``--signal=B:USR1@signal_s``) before the time
limit, or a user/preemption does (``scancel --batch --signal=USR1 JOB``); bash runs the trap only once its
foreground command returns, so the program runs in the background and the script waits in a loop; the
trap forwards the signal; the program writes a checkpoint and exits 75; the script requeues the job. The
next attempt (``SLURM_RESTART_COUNT`` > 0) adds ``--resume`` when the run's checkpoint exists. Exit 0 or
any other code ends the job for good, and so does a stop after SIGTERM (``scancel`` sends it to every process
of the job, so does the hard time limit): the checkpoint is written, but a cancelled job stays cancelled.
"""

from __future__ import annotations

import datetime
import shlex
from dataclasses import dataclass, field

from mlff.hpc.profile import SiteProfile

__all__ = ["Job", "render_script", "log_pattern"]


@dataclass
class Job:
    """One sbatch job of a submitted graph."""
    name: str  # unique in the graph (file names, dependencies)
    kind: str  # md | label | merge | train | ... (what ``mlff slurm status`` reads for progress)
    command: list  # the program and its arguments; "$SLURM_ARRAY_TASK_ID" is expanded by the shell
    run_dir: str  # where this job's run lives (its outputs)
    resume_marker: str | None = None  # on a restart, pass --resume when this path exists
    resume: bool = False  # pass --resume on the first attempt too (continue an existing run)
    array: int | None = None  # array tasks 0..array-1
    after: list = field(default_factory=list)  # names of jobs that must end with success first (afterok)
    gpus: int = 0  # GPUs per node
    nodes: int = 1
    procs_per_node: int = 1  # torchrun processes per node (> 1 or nodes > 1: srun torchrun)
    torchrun: bool = False
    progress: dict = field(default_factory=dict)  # what status reads (paths, totals), per kind
    job_id: str | None = None  # after submission

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def log_pattern(job: Job, logs_dir: str) -> str:
    """The job's --output pattern: one file per job (per array task), appended across requeues."""
    return f"{logs_dir}/{job.name}-%A_%a.out" if job.array else f"{logs_dir}/{job.name}-%j.out"


def _header(job: Job, profile: SiteProfile, logs_dir: str, workdir: str) -> list[str]:
    p = profile
    lines = [f"--job-name=mlff-{job.name}", f"--output={log_pattern(job, logs_dir)}", "--open-mode=append",
             "--requeue", f"--signal=B:USR1@{p.signal_s}", f"--time={p.time}", f"--chdir={workdir}",
             f"--nodes={job.nodes}"]
    if job.torchrun:
        lines += ["--ntasks-per-node=1", f"--cpus-per-task={max(p.cpus_per_task, job.procs_per_node)}"]
    else:
        lines += ["--ntasks=1", f"--cpus-per-task={p.cpus_per_task}"]
    if job.gpus:
        lines.append(f"--gpus-per-node={job.gpus}")
    if job.array:
        lines.append(f"--array=0-{job.array - 1}")
    for key, value in (("partition", p.partition), ("account", p.account), ("qos", p.qos), ("mem", p.mem),
                       ("constraint", p.constraint)):
        if value:
            lines.append(f"--{key}={value}")
    if p.exclusive and job.torchrun:
        lines.append("--exclusive")
    lines += list(p.sbatch)
    return [f"#SBATCH {line}" for line in lines]


def _environment(profile: SiteProfile) -> list[str]:
    lines = [f"module load {shlex.quote(m)}" for m in profile.modules]
    if profile.venv:
        lines.append(f"source {shlex.quote(profile.venv.rstrip('/') + '/bin/activate')}")
    lines += list(profile.setup)
    lines.append('export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"')
    return lines


def _program(job: Job, profile: SiteProfile) -> tuple[list[str], str]:
    """Shell lines before the launch, and the launch line (without the trailing &)."""
    args = " ".join(a if a.startswith('"') else shlex.quote(a) for a in job.command)  # '"...': shell words
    mlff = profile.mlff
    if not job.torchrun:  # started with the stop signals ignored: they are resent until its handler is in
        return [], f"(trap '' USR1 TERM; exec {mlff} {args} $resume)"
    world = job.nodes * job.procs_per_node
    pre = ['export MLFF_EXIT_STATUS="{logs}/exit-$SLURM_JOB_ID-${SLURM_RESTART_COUNT:-0}"', f"world={world}"]
    # one node: torchrun's store takes a free port (two jobs sharing a node never collide); more: the head's port
    endpoint = "localhost:0"
    if job.nodes > 1:
        pre.insert(0, 'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)')
        endpoint = f"$head:{profile.rdzv_port}"
    launch = (f"srun --ntasks-per-node=1 --kill-on-bad-exit=1 {profile.torchrun} --nnodes=\"$SLURM_NNODES\" "
              f"--nproc-per-node={job.procs_per_node} --rdzv-backend=c10d "
              f"--rdzv-endpoint=\"{endpoint}\" --rdzv-id=\"$SLURM_JOB_ID\" "
              f"--no-python {mlff} {args} $resume")
    return pre, launch


_TRAPS = r"""child=""
interrupted=0
forwarded=""
terminated=0
resender=""
forward() {  # the stop signals of SLURM (time limit, preemption, scancel --batch --signal) go to the program
    interrupted=1
    echo "mlff-slurm: SIG$1 received at $(date -u +%FT%TZ); forwarding it to the program"
    if [ "$via_file" = 1 ]; then  # srun torchrun: every rank polls the stop file
        if [ "$1" = USR1 ]; then touch "$MLFF_STOP_FILE"; fi
    elif [ -n "$child" ]; then
        kill -s "$1" "$child" 2>/dev/null
        if [ -z "$forwarded" ] && [ "$resend" = 1 ]; then  # again every 5 s: a program still starting up
            ( while sleep 5 && kill -0 "$child" 2>/dev/null; do kill -s "$1" "$child" 2>/dev/null; done ) &
            resender=$!  # ignores it until its handler is installed
        fi
    fi
    forwarded="$1"
    if [ "$1" = TERM ]; then terminated=1; fi
}
trap 'forward USR1' USR1
trap 'forward TERM' TERM"""

_RUNNER = r"""
attempt=$(( ${SLURM_RESTART_COUNT:-0} + 1 ))
echo "mlff-slurm: job ${SLURM_JOB_ID}${SLURM_ARRAY_TASK_ID:+ (task $SLURM_ARRAY_TASK_ID)} attempt $attempt on $(hostname) at $(date -u +%FT%TZ)"
resume="{first_resume}"
{restart_resume}
if [ -n "$forwarded" ]; then echo "mlff-slurm: stopped before the program started"; rc=75; else
{pre}
{launch} &
child=$!
while :; do  # bash runs a trap only between commands: wait in a loop until the program has really ended
    interrupted=0
    wait "$child"
    rc=$?
    if [ "$interrupted" = 1 ] && [ "$rc" -gt 128 ]; then continue; fi
    break
done
if [ -n "$resender" ]; then kill "$resender" 2>/dev/null; fi
fi
{exit_files}
if [ -n "$forwarded" ] && [ "$rc" -eq 138 ]; then
    # killed by the forwarded USR1 before its handler was installed: its files are written atomically, so
    # the run resumes from its last checkpoint
    echo "mlff-slurm: the program ended on the forwarded SIGUSR1 (status $rc): resumable"
    rc=75
fi
if [ "$terminated" = 1 ] && { [ "$rc" -eq 75 ] || [ "$rc" -eq 143 ]; }; then
    # TERM is scancel, the hard time limit or a cancelling preemption: the job stays stopped
    echo "mlff-slurm: stopped by SIGTERM (scancel, time limit or preemption): not requeued; the run resumes" \
        "when submitted again with --resume"
    exit 75
fi
case "$rc" in
    0)
        echo "mlff-slurm: finished at $(date -u +%FT%TZ)"
        exit 0 ;;
    75)
        if [ "${SLURM_RESTART_COUNT:-0}" -ge {max_requeues} ]; then
            echo "mlff-slurm: error: resumable stop after {max_requeues} requeues: not requeued again (max_requeues)"
            exit 75
        fi
        echo "mlff-slurm: resumable stop (exit 75): requeueing job $SLURM_JOB_ID"
        if scontrol requeue "$SLURM_JOB_ID"; then exit 0; fi
        echo "mlff-slurm: error: scontrol requeue failed; continue with: mlff slurm ... --resume --submit"
        exit 75 ;;
    *)
        echo "mlff-slurm: error: the program exited with status $rc: not requeued"
        exit "$rc" ;;
esac
"""

_EXIT_FILES = r"""if [ "$rc" -ne 0 ] && [ "$rc" -ne 75 ] && [ -n "$forwarded" ]; then
    # torchrun exits non-zero after a forwarded signal even when every rank checkpointed: ask the ranks
    stopped=$(cat "$MLFF_EXIT_STATUS".* 2>/dev/null | grep -c '^75$')
    if [ "$stopped" -eq "$world" ]; then rc=75; fi
fi"""


def render_script(job: Job, profile: SiteProfile, *, logs_dir: str, workdir: str, graph: str) -> str:
    """The text of ``job``'s sbatch script."""
    import mlff

    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    deps = f"; after (afterok): {', '.join(job.after)}" if job.after else ""
    pre, launch = _program(job, profile)
    body = _RUNNER
    for key, value in {"first_resume": "--resume" if job.resume else "",
                       "restart_resume": (f'if [ "${{SLURM_RESTART_COUNT:-0}}" -gt 0 ] && [ -e {shlex.quote(job.resume_marker)} ]; '
                                          'then resume="--resume"; fi') if job.resume_marker else "",
                       "pre": "\n".join(pre).replace("{logs}", logs_dir), "launch": launch,
                       "exit_files": _EXIT_FILES if job.torchrun else "",
                       "max_requeues": str(profile.max_requeues)}.items():
        body = body.replace("{" + key + "}", value)
    if job.torchrun:  # the stop request goes by file (see mlff.signals), set before any trap can fire
        resend = (f'resend=0\nvia_file=1\nexport MLFF_STOP_FILE="{logs_dir}/stop-$SLURM_JOB_ID"\n'
                  'rm -f "$MLFF_STOP_FILE"')
    else:
        resend = "resend=1\nvia_file=0"
    lines = ["#!/bin/bash", *_header(job, profile, logs_dir, workdir), "",
             f"# mlff slurm: {job.kind} job {job.name!r} of {graph}{deps}",
             f"# written {when} by mlff {getattr(mlff, '__version__', '?')}; run dir {job.run_dir}",
             "set -u", resend, _TRAPS, *_environment(profile)]
    return "\n".join(lines) + "\n" + body
