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

Paths are data, never shell text: every path and argument is quoted (``shlex.quote``); the one part of a command
the shell expands is a ``Var`` (the array task's index), marked by its type. #SBATCH values are written for
sbatch's own parser (blanks and quotes inside double quotes, a literal % of an --output pattern as %%), and what
that parser cannot carry (a control character such as a newline, a double quote, a backslash) is refused.
"""

from __future__ import annotations

import datetime
import re
import shlex
from dataclasses import dataclass, field

from mlff.errors import MLFFError
from mlff.hpc.profile import SiteProfile, command_words

__all__ = ["TASK_ID", "Job", "Var", "expand_word", "log_pattern", "render_script", "shell_word"]


@dataclass(frozen=True)
class Var:
    """A variable of the batch shell inside a command word (the array task's index): the only text of a
    job's command that the shell expands; every other character is quoted (``shell_word``)."""
    name: str

    def __post_init__(self):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.name):
            raise ValueError(f"not a shell variable name: {self.name!r}")


TASK_ID = Var("SLURM_ARRAY_TASK_ID")


def _parts(word) -> tuple:
    """A command word as its parts: a str (literal text), a Var, or a tuple of both joined into one word."""
    parts = word if isinstance(word, tuple) else (word,)
    if not parts or not all(isinstance(p, (str, Var)) for p in parts):
        raise TypeError(f"a command word is a str, a Var or a tuple of them, got {word!r}")
    return parts


def shell_word(word) -> str:
    """``word`` as one shell word: literal text quoted (``shlex.quote``), each Var as ``"${NAME}"``."""
    return "".join(f'"${{{p.name}}}"' if isinstance(p, Var) else shlex.quote(p) for p in _parts(word))


def expand_word(word, env: dict | None = None) -> str:
    """The text the batch shell makes of ``word`` with the variables in ``env`` (others shown as ``${NAME}``)."""
    env = env or {}
    return "".join(env.get(p.name, f"${{{p.name}}}") if isinstance(p, Var) else p for p in _parts(word))


@dataclass
class Job:
    """One sbatch job of a submitted graph."""
    name: str  # unique in the graph (file names, dependencies)
    kind: str  # md | label | merge | train | ... (what ``mlff slurm status`` reads for progress)
    command: list  # mlff's arguments, words: str (passed as is), Var, or a tuple of them joined (see shell_word)
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

        return {**asdict(self), "command": [expand_word(w) for w in self.command]}


def log_pattern(job: Job, logs_dir: str) -> str:
    """The job's --output pattern: one file per job (per array task), appended across requeues."""
    logs = logs_dir.replace("%", "%%")  # sbatch's filename pattern: a literal % is %%
    return f"{logs}/{job.name}-%A_%a.out" if job.array else f"{logs}/{job.name}-%j.out"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BARE = re.compile(r"[A-Za-z0-9_@%+=:,./-]*")


def _no_control(text: str, what: str) -> str:
    bad = _CONTROL.search(text)
    if bad:
        raise MLFFError(f"{what}: {text!r} holds the control character {bad.group()!r}; an sbatch script cannot "
                        "carry it (a newline would end the #SBATCH block)")
    return text


def _directive(option: str, value) -> str:
    """``--option=value`` for an #SBATCH line. sbatch splits the line at blanks, groups quoted text and drops
    backslashes (src/sbatch/opt.c, _get_argument); nothing is expanded. So a value with a blank, a quote or a
    ``#`` is written in double quotes, and what cannot be (a control character, a double quote, a backslash)
    is refused."""
    text = _no_control(str(value), f"#SBATCH --{option}")
    bad = re.search(r'["\\]', text)
    if bad:
        raise MLFFError(f"#SBATCH --{option}: {text!r} holds {bad.group()!r}, which an sbatch directive cannot "
                        "carry; use a path without double quotes or backslashes")
    return f"--{option}={text}" if _BARE.fullmatch(text) else f'--{option}="{text}"'


def _comment(text: str) -> str:
    """``text`` for a comment line of the script: control characters written as escapes (a newline would end
    the comment and run the rest)."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _header(job: Job, profile: SiteProfile, logs_dir: str, workdir: str) -> list[str]:
    p = profile
    options = [("job-name", f"mlff-{job.name}"), ("output", log_pattern(job, logs_dir)), ("open-mode", "append"),
               ("requeue", None), ("signal", f"B:USR1@{p.signal_s}"), ("time", p.time), ("chdir", workdir),
               ("nodes", job.nodes)]
    if job.torchrun:
        options += [("ntasks-per-node", 1), ("cpus-per-task", max(p.cpus_per_task, job.procs_per_node))]
    else:
        options += [("ntasks", 1), ("cpus-per-task", p.cpus_per_task)]
    if job.gpus:
        options.append(("gpus-per-node", job.gpus))
    if job.array:
        options.append(("array", f"0-{job.array - 1}"))
    for key, value in (("partition", p.partition), ("account", p.account), ("qos", p.qos), ("mem", p.mem),
                       ("constraint", p.constraint)):
        if value:
            options.append((key, value))
    if p.exclusive and job.torchrun:
        options.append(("exclusive", None))
    lines = [f"--{key}" if value is None else _directive(key, value) for key, value in options]
    lines += [_no_control(extra, "profile sbatch option") for extra in p.sbatch]  # verbatim, one line each
    return [f"#SBATCH {line}" for line in lines]


def _environment(profile: SiteProfile) -> list[str]:
    lines = [f"module load {shlex.quote(m)}" for m in profile.modules]
    if profile.venv:
        lines.append(f"source {shlex.quote(profile.venv.rstrip('/') + '/bin/activate')}")
    lines += list(profile.setup)
    lines.append('export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"')
    return lines


def _command(profile: SiteProfile, name: str) -> str:
    """The profile's command ``name`` (``mlff``, ``torchrun``) as shell text: each of its words quoted."""
    return " ".join(shlex.quote(w) for w in command_words(name, getattr(profile, name)))


def _program(job: Job, profile: SiteProfile, logs_dir: str) -> tuple[list[str], str]:
    """Shell lines before the launch, and the launch line (without the trailing &)."""
    args = " ".join(shell_word(w) for w in job.command)
    mlff = _command(profile, "mlff")
    if not job.torchrun:  # started with the stop signals ignored: they are resent until its handler is in
        return [], f"(trap '' USR1 TERM; exec {mlff} {args} $resume)"
    world = job.nodes * job.procs_per_node
    pre = [f'export MLFF_EXIT_STATUS={shlex.quote(logs_dir)}/"exit-$SLURM_JOB_ID-${{SLURM_RESTART_COUNT:-0}}"',
           f"world={world}"]
    # one node: torchrun's store takes a free port (two jobs sharing a node never collide); more: the head's port
    endpoint = "localhost:0"
    if job.nodes > 1:
        pre.insert(0, 'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)')
        endpoint = f"$head:{profile.rdzv_port}"
    torchrun = _command(profile, "torchrun")
    launch = (f"srun --ntasks-per-node=1 --kill-on-bad-exit=1 {torchrun} --nnodes=\"$SLURM_NNODES\" "
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
    """The text of ``job``'s sbatch script. Every path and argument in it is quoted: only the script's own
    variables are expanded by the shell."""
    import mlff

    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    deps = f"; after (afterok): {', '.join(job.after)}" if job.after else ""
    pre, launch = _program(job, profile, logs_dir)
    marker = shlex.quote(job.resume_marker) if job.resume_marker else ""
    values = {"first_resume": "--resume" if job.resume else "",
              "restart_resume": (f'if [ "${{SLURM_RESTART_COUNT:-0}}" -gt 0 ] && [ -e {marker} ]; '
                                 'then resume="--resume"; fi') if marker else "",
              "pre": "\n".join(pre), "launch": launch, "exit_files": _EXIT_FILES if job.torchrun else "",
              "max_requeues": str(profile.max_requeues)}
    # one pass: text put in (paths) is never searched for another placeholder
    body = re.sub(r"\{(" + "|".join(values) + r")\}", lambda m: values[m.group(1)], _RUNNER)
    if job.torchrun:  # the stop request goes by file (see mlff.signals), set before any trap can fire
        resend = (f'resend=0\nvia_file=1\nexport MLFF_STOP_FILE={shlex.quote(logs_dir)}/"stop-$SLURM_JOB_ID"\n'
                  'rm -f "$MLFF_STOP_FILE"')
    else:
        resend = "resend=1\nvia_file=0"
    lines = ["#!/bin/bash", *_header(job, profile, logs_dir, workdir), "",
             _comment(f"# mlff slurm: {job.kind} job {job.name!r} of {graph}{deps}"),
             _comment(f"# written {when} by mlff {getattr(mlff, '__version__', '?')}; run dir {job.run_dir}"),
             "set -u", resend, _TRAPS, *_environment(profile)]
    return "\n".join(lines) + "\n" + body
