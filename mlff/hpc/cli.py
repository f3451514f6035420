"""``mlff slurm KIND CONFIG``: sbatch scripts for a run (written, printed or submitted); ``mlff slurm status``."""

from __future__ import annotations

import json

__all__ = ["add_slurm_commands"]

_OVERRIDES = (("--partition", str), ("--account", str), ("--qos", str), ("--time", str), ("--nodes", int),
              ("--gpus-per-node", int), ("--gpus-per-task", int), ("--cpus-per-task", int), ("--mem", str))


def _jobs(args) -> int:
    from mlff.hpc.kinds import Options, plan
    from mlff.hpc.profile import load_profile
    from mlff.hpc.submit import scripts, submit_plan, write_plan

    overrides = {name.lstrip("-").replace("-", "_"): getattr(args, name.lstrip("-").replace("-", "_"))
                 for name, _ in _OVERRIDES}
    profile = load_profile(args.profile, overrides, args.set)
    the_plan = plan(args.kind, args.config, profile, Options(resume=args.resume, run_dir=args.run_dir,
                                                              committee_array=getattr(args, "committee_array", False)))
    if args.dry_run:
        for path, text in scripts(the_plan, profile, kind=args.kind, config=args.config).items():
            print(f"# ---- {path}\n{text}")
        return 0
    if not args.submit:
        written = write_plan(the_plan, profile, kind=args.kind, config=args.config)
        for path in written:
            print(f"wrote {path}")
        print(f"submit with `mlff slurm {args.kind} {args.config} --submit` (dependencies are set at submission)")
        return 0
    jobs = submit_plan(the_plan, profile, kind=args.kind, config=args.config)
    for job in jobs:
        after = f" (after {', '.join(job.after)})" if job.after else ""
        tasks = f", array of {job.array}" if job.array else ""
        print(f"submitted {job.name}: job {job.job_id}{tasks}{after}")
    print(f"follow with `mlff slurm status {the_plan.run_dir}`")
    return 0


def _status(args) -> int:
    from mlff.hpc.status import format_status, job_status

    status = job_status(args.run_dir)
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


def _kind_parser(sub, kind: str, help_text: str):
    p = sub.add_parser(kind, help=help_text)
    p.add_argument("config", help=f"the {kind} config (YAML)")
    p.add_argument("--profile", help="site profile (YAML): partition, account, time, gpus_per_node, modules, venv, ...")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one profile key")
    for name, kind_type in _OVERRIDES:
        p.add_argument(name, type=kind_type, help="profile override")
    p.add_argument("--run-dir", help="where slurm/ (scripts, logs, jobs.json) goes (default: the run's directory)")
    p.add_argument("--resume", action="store_true", help="continue an existing run (its first attempt resumes too)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--dry-run", action="store_true", help="print the scripts; write and submit nothing")
    what.add_argument("--submit", action="store_true", help="write the scripts and submit them with sbatch")
    p.set_defaults(run=_jobs, kind=kind)
    return p


def add_slurm_commands(commands) -> None:
    slurm = commands.add_parser("slurm", help="SLURM batch jobs: scripts, arrays, chains, requeue, status")
    sub = slurm.add_subparsers(dest="slurm_kind", required=True)
    _kind_parser(sub, "md", "an MD run that requeues itself until its steps are done")
    train = _kind_parser(sub, "train", "training (srun torchrun over nodes x GPUs; committee members as an array)")
    train.add_argument("--committee-array", action="store_true",
                       help="one array task per committee member, then one job that writes the potential")
    _kind_parser(sub, "label", "label a pool in array shards, merged by one dependent job")
    _kind_parser(sub, "umbrella", "umbrella windows / metaD (mlff umbrella) that requeue themselves until done")
    _kind_parser(sub, "chain", "stages (label, train, md, ...) submitted as one afterok graph")
    _kind_parser(sub, "learn", "the active-learning loop (mlff learn) as one job that requeues itself until it stops")
    from mlff.hpc.kinds import PLANNED

    for kind, command in PLANNED.items():
        _kind_parser(sub, kind, f"(needs `{command}`, not in this version)")
    status = sub.add_parser("status", help="state, progress and last error of every job submitted from RUN_DIR")
    status.add_argument("run_dir")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=_status)
