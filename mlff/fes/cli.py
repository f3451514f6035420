"""``mlff fes RUN_DIR``: the free-energy profile, barrier and rates of a biased run (options override --config)."""

from __future__ import annotations

__all__ = ["add_fes_command"]


def _fes(args) -> int:
    from mlff.fes.analysis import run_fes
    from mlff.fes.config import load_fes_config
    from mlff.fes.report import summary_lines

    config = load_fes_config(args.config, bins=args.bins, cv_range=args.range, n_bootstraps=args.bootstraps,
                             seed=args.seed, reactant=args.reactant, product=args.product, ts_region=args.ts_region,
                             equilibration="none" if args.no_equilibration else None, single_points=args.single_points,
                             committee=True if args.committee else None,
                             plots=False if args.no_plots else None)
    output = run_fes(args.run_dir, config, out=args.out)
    for line in summary_lines(output.analysis, output.document):
        print(line)
    print(f"outputs in {output.out}: " + ", ".join(p.name for p in output.files))
    return 0


def _interval(text: str):
    """'LO' or 'none' -> float or None (an open end of a region)."""
    return None if text.lower() in ("none", "null", "inf", "-inf") else float(text)


def add_fes_command(commands) -> None:
    fes = commands.add_parser("fes", help="free-energy profile, barrier and rates of a biased run (MBAR, metaD)",
                              description="Analyse an umbrella (MBAR) or metadynamics run directory; write "
                                          "RUN_DIR/fes/{fes.json, fes.csv, *.png} and print the barrier table.")
    fes.add_argument("run_dir", help="run directory written by a biased run (umbrella windows or metaD)")
    fes.add_argument("--out", help="output directory (default RUN_DIR/fes)")
    fes.add_argument("--config", help="YAML file of analysis settings (keys of FESConfig; see README)")
    fes.add_argument("--bins", type=int, help="histogram bins of the profile (default 50)")
    fes.add_argument("--range", type=float, nargs=2, metavar=("LO", "HI"), help="profile range in CV units")
    fes.add_argument("--bootstraps", type=int, help="bootstrap resamples for the error bars (default 200; 0: none)")
    fes.add_argument("--seed", type=int, help="seed of the bootstrap (default 0)")
    for name, default in (("reactant", "none -0.3"), ("product", "0.3 none"), ("ts-region", "between the minima")):
        fes.add_argument(f"--{name}", type=_interval, nargs=2, metavar=("LO", "HI"),
                         help=f"{name.replace('-', ' ')} of the CV, 'none' for an open end (default {default})")
    fes.add_argument("--single-points", metavar="CSV", help="reweight the profile to another level of theory: CSV of "
                     "step, system, delta_energy_eV (E_target - E_reference) on frames of the run")
    fes.add_argument("--committee", action="store_true", help="the model error: reweight the samples to each member "
                     "of the run's committee (evaluated once on its trajectory frames, cached in the run directory)")
    fes.add_argument("--no-equilibration", action="store_true", help="keep every sample (skip detect_equilibration)")
    fes.add_argument("--no-plots", action="store_true", help="write fes.json and fes.csv only")
    fes.set_defaults(run=_fes)
