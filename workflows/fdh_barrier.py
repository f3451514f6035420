"""The hydride-transfer barrier at the DFT level: umbrella ladder, MBAR with statistical and model errors, DFT check.

    python workflows/fdh_barrier.py                          # every stage not yet done (each one resumable)
    python workflows/fdh_barrier.py --stage check            # one stage
    python workflows/fdh_barrier.py --steps 400 --out out/barrier_rehearsal   # a short rehearsal (CPU)

Reads workflows/fdh_barrier.yaml. Stages, each skipped once its output exists:
  umbrella  mlff umbrella with the config's `umbrella` section (resumed from its checkpoint after a stop)
  fes       mlff fes with the committee's model error (OUT/fes/fes.json)
  check     frames of the reactant basin and the TS window found by fes, labelled at the DFT level in one-thread
            workers (OUT/dft_check/labels.h5, resumable), then the barrier corrected to those labels by FEP at
            its two ends (OUT/dft_check/check.json: barrier, error, effective sample size per region)
  report    OUT/barrier.json and OUT/barrier.md: every number with its error and what it rests on
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import mlff.models._mace  # noqa: F401  (mace before e3nn)
from mlff.bias.umbrella import run_umbrella
from mlff.config import load_yaml
from mlff.data import Dataset
from mlff.data.workers import label_with_workers
from mlff.errors import MLFFError, script_exit
from mlff.bias.io import read_biased_run
from mlff.fes.analysis import analyse, run_fes
from mlff.fes.check import endpoint_barrier, pick_frames, regions_from_fes, write_single_points
from mlff.fes.config import load_fes_config
from mlff.fes.levels import read_single_points
from mlff.fes.units import kT_kcal_per_mol
from mlff.provenance import provenance

HERE = Path(__file__).resolve().parent
SECTIONS = ("umbrella", "fes", "check", "anchor")
STAGES = ("umbrella", "fes", "check", "report")


def load(path: Path, out: str | None, steps: int | None) -> dict:
    config = load_yaml(path)
    unknown = sorted(set(config) - set(SECTIONS))
    if unknown:
        raise MLFFError(f"{path}: unknown section {unknown[0]!r}; expected {', '.join(SECTIONS)}")
    if out:
        config["umbrella"]["out"] = out
    if steps:  # a rehearsal: a tenth equilibrates
        config["umbrella"].update(equilibration_steps=steps // 10, production_steps=steps - steps // 10)
    return config


def umbrella(config: dict, out: Path, resume: bool) -> None:
    if (out / "run.json").is_file() and json.loads((out / "run.json").read_text()).get("status") == "finished":
        return
    resume = resume or (out / "checkpoint.pt").is_file()
    status = run_umbrella(config["umbrella"], resume=resume)["status"]
    if status != "finished":
        raise MLFFError(f"umbrella run ended {status!r}; run again (or --resume) to go on")


def fes(config: dict, out: Path) -> None:
    if not (out / "fes" / "fes.json").is_file():
        run_fes(out, load_fes_config(dict(config.get("fes") or {})))


def check(config: dict, out: Path) -> None:
    c, folder = config["check"], out / "dft_check"
    if (folder / "check.json").is_file():
        return
    regions = regions_from_fes(out / "fes" / "fes.json", reactant_half_width=c["reactant_half_width_A"],
                               ts_half_width=c["ts_half_width_A"])
    frames = pick_frames(out, regions, c["per_region"], seed=c.get("seed", 0))
    folder.mkdir(exist_ok=True)
    summary = label_with_workers(frames, c["oracle"], folder / "labels.h5", workers=c.get("workers", 1),
                                 calibration=c.get("calibration"), description="DFT check of the umbrella run")
    print(f"check: {summary}", file=sys.stderr)
    if summary.remaining or summary.interrupted:
        raise MLFFError("the DFT check stopped before every frame was labelled; run the check stage again")
    csv = write_single_points(Dataset(folder / "labels.h5").read(), out, folder / "single_points.csv")
    fes_config = load_fes_config({**dict(config.get("fes") or {}), "committee": False, "plots": False})
    run = read_biased_run(out)
    result = endpoint_barrier(run, analyse(run, fes_config), read_single_points(csv), regions,
                              n_bootstraps=fes_config.n_bootstraps or 200, seed=fes_config.seed)
    kcal = kT_kcal_per_mol(run.temperature_K)
    check = {"regions_A": regions, "single_points": str(csv), "unit": "kcal/mol",
             "barrier": result["barrier_kT"] * kcal, "barrier_error": result["barrier_error_kT"] * kcal,
             "barrier_model": result["barrier_model_kT"] * kcal, "correction": result["correction_kT"] * kcal,
             "correction_error": result["correction_error_kT"] * kcal,
             "regions": {name: {**r, "delta_A": r["delta_A_kT"] * kcal} for name, r in result["regions"].items()},
             "min_effective_sample_size": result["min_effective_sample_size"], "provenance": provenance(),
             "warnings": [] if result["min_effective_sample_size"] >= max(3.0, 0.3 * c["per_region"]) else [
                 f"DFT check: an effective sample size of {result['min_effective_sample_size']:.1f} in a region of "
                 f"{c['per_region']} frames: the potential and DFT weigh those configurations differently, so the "
                 "corrected barrier rests on one or two frames; label more frames or improve the potential"]}
    (folder / "check.json").write_text(json.dumps(check, indent=1) + "\n")


def report(config: dict, out: Path) -> dict:
    main = json.loads((out / "fes" / "fes.json").read_text())
    check = json.loads((out / "dft_check" / "check.json").read_text())
    r, model = main["results"], main.get("model_error", {})
    if r["barrier_forward"]["value"] is None:
        raise MLFFError(f"{out / 'fes' / 'fes.json'}: {r.get('barrier', {}).get('no_barrier') or 'no barrier'}")
    anchor = config.get("anchor") or {}
    numbers = {
        "potential": config["umbrella"]["potential"], "temperature_K": main["temperature"]["value"],
        "barrier": {"value": r["barrier_forward"]["value"], "statistical_error": r["barrier_forward"]["error"],
                    "model_error": model.get("barrier_forward", {}).get("error"), "unit": "kcal/mol"},
        "reaction_free_energy": {"value": r["reaction_free_energy"]["value"],
                                 "statistical_error": r["reaction_free_energy"]["error"],
                                 "model_error": model.get("reaction_free_energy", {}).get("error"), "unit": "kcal/mol"},
        "dft_check": {k: check[k] for k in ("barrier", "barrier_error", "correction", "correction_error", "regions",
                                            "min_effective_sample_size")},
        "anchor": anchor, "warnings": main["warnings"] + check["warnings"], "provenance": provenance()}
    (out / "barrier.json").write_text(json.dumps(numbers, indent=1) + "\n")
    b, d = numbers["barrier"], numbers["dft_check"]
    model_text = "n/a" if b["model_error"] is None else f"{b['model_error']:.2f}"
    lines = [f"# Hydride-transfer barrier, small FDH cluster, {numbers['temperature_K']:g} K", "",
             f"- potential `{numbers['potential']}`: barrier **{b['value']:.2f} ± {b['statistical_error']:.2f} (statistical, "
             f"bootstrap) ± {model_text} (model, committee reweighting) kcal/mol**; reaction free energy "
             f"{numbers['reaction_free_energy']['value']:.2f} ± {numbers['reaction_free_energy']['statistical_error']:.2f} kcal/mol",
             "- corrected to DFT single points (FEP at the reactant basin and the TS window: "
             + ", ".join(f"{n} {r['frames']} frames, ESS {r['effective_sample_size']:.1f}" for n, r in d["regions"].items())
             + f"): barrier {d['barrier']:.2f} ± {d['barrier_error']:.2f} kcal/mol (correction {d['correction']:+.2f} ± "
             f"{d['correction_error']:.2f})",
             f"- anchor: {anchor.get('barrier_kcal_mol', 'n/a')} kcal/mol ({anchor.get('source', 'none given')}); a "
             "39-atom cluster in a dielectric continuum, not the enzyme: compare trends, not the last kcal/mol"]
    lines += [f"- warning: {w}" for w in numbers["warnings"]]
    (out / "barrier.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return numbers


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=HERE / "fdh_barrier.yaml")
    p.add_argument("--stage", choices=STAGES + ("all",), default="all")
    p.add_argument("--out", help="run directory (overrides umbrella.out)")
    p.add_argument("--steps", type=int, help="umbrella steps per window (a rehearsal; a tenth equilibrates)")
    p.add_argument("--resume", action="store_true", help="continue the umbrella run from its checkpoint")
    args = p.parse_args(argv)
    return script_exit("fdh_barrier", run, args)


def run(args) -> None:
    config = load(args.config, args.out, args.steps)
    out = Path(config["umbrella"]["out"])
    for stage in STAGES if args.stage == "all" else (args.stage,):
        print(f"fdh_barrier: {stage}", file=sys.stderr, flush=True)
        {"umbrella": lambda: umbrella(config, out, args.resume), "fes": lambda: fes(config, out),
         "check": lambda: check(config, out), "report": lambda: report(config, out)}[stage]()


if __name__ == "__main__":
    sys.exit(main())
