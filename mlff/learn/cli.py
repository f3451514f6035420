"""``mlff learn CONFIG.yaml [--resume]``: the active-learning loop (exit 75 when interrupted: resumable)."""

from __future__ import annotations

import sys

__all__ = ["add_learn_command"]


def _learn(args) -> int:
    from mlff.learn import load_learn_config, run_learning

    summary = run_learning(load_learn_config(args.config, out=args.out), resume=args.resume)
    if summary["status"] == "awaiting_labels":
        print(f"mlff: iteration {summary['iteration']} waits for {summary['missing']} external label(s): run "
              f"`mlff slurm label {summary['label_config']} --submit` (or `mlff data label`), then "
              f"`mlff learn {args.config} --resume`", file=sys.stderr)
        return 0  # not a failure: a chain may go on to the label jobs
    if summary["status"] != "finished":
        print(f"mlff: learning run interrupted in iteration {summary.get('iteration', 0)} ({summary.get('stage')}); "
              f"continue with `mlff learn {args.config} --resume`", file=sys.stderr)
        return 75  # EX_TEMPFAIL: resumable (batch scripts requeue the job)
    print(f"stopped after {summary['iterations']} iteration(s): {summary['reason']}; {summary['labels_spent']} labels "
          f"spent; final committee {summary['potential']}; reports in {summary['out']}/iter_*/report.json")
    return 0


def add_learn_command(commands) -> None:
    learn = commands.add_parser("learn", help="active learning: explore, select, label, retrain until a stop criterion "
                                "(see README, Active learning)")
    learn.add_argument("config", help="YAML file of learning settings (e.g. workflows/fdh_learn_xtb.yaml)")
    learn.add_argument("--resume", action="store_true", help="continue the run in the config's out directory")
    learn.add_argument("--out", help="run directory (overrides 'out' in the config)")
    learn.set_defaults(run=_learn)
