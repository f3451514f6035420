"""Pipeline fidelity: the xi free-energy profile from the same umbrella windows with GFN2-xTB and with the MACE
potential trained on GFN2-xTB labels (issue 12, item 4). The check no peer publishes: data -> training -> MD ->
free energy, against the exact reference that xTB is cheap enough to sample directly.

    python workflows/fdh_fidelity.py run xtb  [--resume]     # about an hour of one core (background: nohup nice)
    python workflows/fdh_fidelity.py run mace [--resume]     # ~1.5 h of one core; needs potentials/fdh-cluster-small-xtb
    python workflows/fdh_fidelity.py compare [--append-results] [--card potentials/fdh-cluster-small-xtb]

`compare` writes OUT/fidelity.json (both profiles, their difference and error bars, the verdict, provenance)
and OUT/fidelity.png (the overlay and the difference), OUT = out/fidelity unless --out. The two profiles are
put on one footing by the offset that minimises the error-weighted squared difference over the compared range
(each MBAR profile is only defined up to a constant); the target: |F_mace - F_xtb| <= 0.5 kcal/mol at every
bin of [-1.2, +1.2] A, or within the combined error bar (2 sigma) where that is larger. --append-results adds
the numbers to benchmarks/RESULTS.md and copies fidelity.json and fidelity.png to benchmarks/fidelity/, with
the COLVAR, bias.json and run.json of both runs (benchmarks/fidelity/xtb, .../mace): `compare --out
benchmarks/fidelity` redoes the analysis from them without rerunning a window.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
POTENTIALS = {"xtb": "gfn2-xtb", "mace": "fdh-cluster-small-xtb"}
RANGE_A = (-1.2, 1.2)
TOLERANCE_KCAL = 0.5
# The MACE run only: float32 (the precision the committee was trained in) and the Verlet neighbour list (the same
# pairs within the cutoff as all pairs). Measured on one CPU thread, a step of the 24 windows with the committee
# of 4: 7.7 s in float64 with all pairs, 1.7 s in float32 with the Verlet list; xTB's step is ~1.4 s.
MACE_MD = {"dtype": "float32", "neighbors": "verlet"}
RUN_FILES = ("COLVAR", "bias.json", "run.json")  # all `mlff fes` needs of a run


def _config(which: str, args):
    from mlff.bias.umbrella import load_umbrella_config
    from mlff.config import load_yaml

    data = load_yaml(args.config)
    if which == "mace":
        data["md"] = {**data.get("md", {}), **MACE_MD}
    return load_umbrella_config(data, potential=args.potential or POTENTIALS[which], out=str(Path(args.out) / which))


def _run(args) -> None:
    from mlff.bias.umbrella import run_umbrella

    summary = run_umbrella(_config(args.which, args), resume=args.resume)
    print(f"{args.which}: {json.dumps(summary, default=str)[:2000]}")


def align(a, b, ea, eb):
    """Offset c minimising sum w (a - b - c)^2, w = 1 / (ea^2 + eb^2), over the finite bins; returns b + c."""
    ok = np.isfinite(a) & np.isfinite(b)
    var = np.where(np.isfinite(ea) & np.isfinite(eb), ea ** 2 + eb ** 2, np.nan)
    w = np.where(ok & np.isfinite(var) & (var > 0), 1.0 / np.where(var > 0, var, 1.0), 0.0)
    if w.sum() == 0:
        w = ok.astype(float)
    c = float(np.sum(w * np.where(ok, a - b, 0.0)) / w.sum())
    return b + c


def compare_profiles(cv, f_ref, e_ref, f_new, e_new, *, window=RANGE_A, tolerance=TOLERANCE_KCAL) -> dict:
    """The comparison of two profiles on the same bins (kcal/mol): aligned difference, worst bin, verdict."""
    inside = (cv >= window[0]) & (cv <= window[1])
    if not inside.any():
        raise ValueError(f"no bins inside {window}")
    aligned = np.full_like(f_new, np.nan)
    aligned[inside] = align(f_ref[inside], f_new[inside], e_ref[inside], e_new[inside])
    diff = aligned - f_ref
    sigma = np.sqrt(e_ref ** 2 + e_new ** 2)
    allowed = np.maximum(tolerance, 2 * sigma)
    ok = np.isfinite(diff[inside])
    worst = int(np.nanargmax(np.where(inside, np.abs(diff), -np.inf)))
    return {"range_A": list(window), "tolerance_kcal_per_mol": tolerance, "bins_compared": int(ok.sum()),
            "bins_missing": int((~ok).sum()), "max_abs_difference_kcal_per_mol": float(np.abs(diff[worst])),
            "at_cv_A": float(cv[worst]), "combined_sigma_there_kcal_per_mol": float(sigma[worst]),
            "rms_difference_kcal_per_mol": float(np.sqrt(np.nanmean(diff[inside] ** 2))),
            "within_tolerance": bool(ok.all() and (np.abs(diff[inside]) <= tolerance).all()),
            "within_tolerance_or_2sigma": bool(ok.all() and (np.abs(diff[inside]) <= allowed[inside]).all()),
            "aligned": aligned, "difference": diff, "sigma": sigma}


def _compare(args) -> None:
    from mlff.fes.analysis import run_fes
    from mlff.fes.config import load_fes_config
    from mlff.fes.units import kT_kcal_per_mol

    out = Path(args.out)
    fes_config = load_fes_config(args.fes_config, bins=args.bins, cv_range=(-1.6, 1.6))
    results = {}
    for which in ("xtb", "mace"):
        run_dir = out / which
        results[which] = run_fes(run_dir, fes_config)
        print(f"{which}: fes written to {results[which].out}")
    kcal = kT_kcal_per_mol(results["xtb"].analysis.temperature_K)
    prof = {k: r.analysis.profiles[0] for k, r in results.items()}
    cv = prof["xtb"].cv
    if not np.allclose(cv, prof["mace"].cv):
        raise SystemExit("the two profiles have different bins")
    f = {k: p.f_kT * kcal for k, p in prof.items()}
    e = {k: p.error_kT * kcal for k, p in prof.items()}
    c = compare_profiles(cv, f["xtb"], e["xtb"], f["mace"], e["mace"])
    barrier = {k: {name: [v * kcal, r.analysis.barrier.errors_kT.get(name, np.nan) * kcal]
                   for name, v in r.analysis.barrier.values_kT.items()} if r.analysis.barrier.found else
               {name: [None, None] for name in ("barrier_forward", "barrier_reverse", "reaction")}
               for k, r in results.items()}
    doc = {"what": "xi free-energy profile of the small FDH cluster, 300 K: GFN2-xTB vs MACE trained on GFN2-xTB",
           "unit": "kcal/mol", "cv_A": cv.tolist(),
           "F_xtb": f["xtb"].tolist(), "err_xtb": e["xtb"].tolist(),
           "F_mace_aligned": c.pop("aligned").tolist(), "F_mace": f["mace"].tolist(), "err_mace": e["mace"].tolist(),
           "difference": c.pop("difference").tolist(), "sigma_combined": c.pop("sigma").tolist(),
           "comparison": c, "barriers_kcal_per_mol [value, error]": barrier,
           "fes": {k: str(r.out) for k, r in results.items()},
           "provenance": {k: r.document.get("provenance", {}) for k, r in results.items()}}
    path = out / "fidelity.json"
    path.write_text(json.dumps(doc, indent=1, default=lambda x: None if x != x else x).replace("NaN", "null"))
    _plot(doc, out / "fidelity.png")
    print(json.dumps(c, indent=1))
    print(f"wrote {path} and {out / 'fidelity.png'}")
    if args.append_results:
        _append_results(doc, path, out / "fidelity.png")
    if args.card:
        _card(Path(args.card), doc, out)


def _comparison_text(c: dict) -> str:
    """The comparison and the verdict in one sentence (RESULTS.md and the card)."""
    return (f"Over xi in [{c['range_A'][0]}, {c['range_A'][1]}] Å ({c['bins_compared']} bins, {c['bins_missing']} "
            f"missing): max |F_MACE - F_xTB| = {c['max_abs_difference_kcal_per_mol']:.2f} kcal/mol at xi = "
            f"{c['at_cv_A']:+.2f} Å (combined 1-sigma there {c['combined_sigma_there_kcal_per_mol']:.2f}), RMS "
            f"{c['rms_difference_kcal_per_mol']:.2f}; within {c['tolerance_kcal_per_mol']} kcal/mol everywhere: "
            f"{'yes' if c['within_tolerance'] else 'no'}; within 0.5 kcal/mol or 2 sigma: "
            f"{'yes' if c['within_tolerance_or_2sigma'] else 'no'}.")


def _barrier_rows(doc: dict, mace_name: str) -> list[list[str]]:
    """[level, barrier ± error, reaction free energy ± error] for xTB and the MACE run, kcal/mol."""
    b = doc["barriers_kcal_per_mol [value, error]"]

    def pm(pair):
        return "no barrier" if pair[0] is None else f"{pair[0]:.2f} ± {pair[1]:.2f}"

    return [[name, pm(b[k]["barrier_forward"]), pm(b[k]["reaction"])]
            for k, name in (("xtb", "GFN2-xTB (reference)"), ("mace", mace_name))]


def card_text(doc: dict, weights: str) -> str:
    """The "Pipeline fidelity" section of a potential's card: the comparison, the verdict and both barriers."""
    rows = ["| " + " | ".join(row) + " |" for row in _barrier_rows(doc, "this potential")]
    return "\n".join([
        "The xi free-energy profile of the small cluster at 300 K from the same umbrella windows "
        "(`workflows/fdh_fidelity.py`, `mlff fes`, MBAR with bootstrap errors) run with GFN2-xTB itself and with "
        f"this potential (MACE). {_comparison_text(doc['comparison'])} {weights} Plot: `fidelity.png`.", "",
        "| level | barrier (kcal/mol) | reaction free energy (kcal/mol) |", "|---|---|---|", *rows])


def _card(card_dir: Path, doc: dict, out: Path) -> None:
    """Write the comparison into the card of the potential the MACE windows ran (refused for other weights)."""
    import shutil

    from mlff.models.store import check_weights, set_card_section

    run = json.loads((out / "mace" / "run.json").read_text())
    check_weights(run.get("inputs"), card_dir, f"write the fidelity numbers into {card_dir}", "the MACE windows ran")
    set_card_section(card_dir / "MODEL_CARD.md", "Pipeline fidelity", card_text(doc, _which_weights(run)))
    shutil.copyfile(out / "fidelity.png", card_dir / "fidelity.png")
    print(f"wrote the Pipeline fidelity section of {card_dir / 'MODEL_CARD.md'} and {card_dir / 'fidelity.png'}")


def _which_weights(run: dict) -> str:
    """Which weights the MACE windows ran (their run.json): a shipped name holds another round after each
    retraining."""
    digest = (run.get("inputs") or {}).get("potential_sha256")
    commit = run.get("provenance", {}).get("mlff_git_commit") or "?"
    return (f"MACE windows: potential {run.get('config', {}).get('potential')}"
            + (f" (weights sha256 {digest[:16]})" if digest else "") + f", mlff git {commit[:8]}, "
            f"run {run.get('provenance', {}).get('created_utc', '?')}.")


def _append_results(doc: dict, json_path: Path, png: Path) -> None:
    import shutil

    bench = HERE.parent / "benchmarks"
    sys.path.insert(0, str(bench))
    from _common import append_results, markdown_table

    ship = bench / "fidelity"
    ship.mkdir(exist_ok=True)
    shutil.copyfile(json_path, ship / "fidelity.json")
    shutil.copyfile(png, ship / "fidelity.png")
    for which in ("xtb", "mace"):  # what `mlff fes` reads: the reference costs an hour of a core to make again
        (ship / which).mkdir(exist_ok=True)
        for name in RUN_FILES:
            shutil.copyfile(json_path.parent / which / name, ship / which / name)
    rows = _barrier_rows(doc, "MACE fdh-cluster-small-xtb")
    table = markdown_table(["xi profile, small FDH cluster, 300 K", "barrier (kcal/mol)", "reaction F (kcal/mol)"], rows)
    run = json.loads((json_path.parent / "mace" / "run.json").read_text())
    notes = ("Same 24 umbrella windows (workflows/fdh_fidelity.yaml), both analysed by `mlff fes` (MBAR, bootstrap "
             f"errors). {_comparison_text(doc['comparison'])} {_which_weights(run)} "
             "Plot and numbers: benchmarks/fidelity/.")
    append_results("Pipeline fidelity: xi free energy with GFN2-xTB vs the MACE trained on it", table, notes)


def _plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mlff.plotting import save_figure

    cv = np.array(doc["cv_A"])
    arr = {k: np.array(doc[k], dtype=float) for k in ("F_xtb", "err_xtb", "F_mace_aligned", "err_mace", "difference",
                                                      "sigma_combined")}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 6.0), sharex=True, height_ratios=[3, 1.4])
    top.errorbar(cv, arr["F_xtb"], yerr=arr["err_xtb"], fmt="o-", ms=3, capsize=2, label="GFN2-xTB (reference)")
    top.errorbar(cv, arr["F_mace_aligned"], yerr=arr["err_mace"], fmt="s-", ms=3, capsize=2,
                 label="MACE fdh-cluster-small-xtb")
    top.set_ylabel("F (kcal/mol)")
    top.legend()
    top.set_title("Umbrella sampling, same windows, 300 K")
    lo, hi = doc["comparison"]["range_A"]
    tol = doc["comparison"]["tolerance_kcal_per_mol"]
    bottom.fill_between(cv, -2 * arr["sigma_combined"], 2 * arr["sigma_combined"], color="0.85", label="2 sigma")
    bottom.plot(cv, arr["difference"], "k.-", label="MACE - xTB")
    for y in (-tol, tol):
        bottom.axhline(y, color="r", lw=0.8, ls="--")
    for x in (lo, hi):
        for ax in (top, bottom):
            ax.axvline(x, color="0.6", lw=0.6, ls=":")
    bottom.set_xlabel("xi = d(C-H) - d(H-C4) (Å)")
    bottom.set_ylabel("ΔF (kcal/mol)")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None) -> int:
    from mlff.errors import script_exit

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="stage", required=True)
    run = sub.add_parser("run", help="run the windows with one potential")
    run.add_argument("which", choices=sorted(POTENTIALS))
    run.add_argument("--resume", action="store_true")
    run.add_argument("--potential", help="override the potential (default: gfn2-xtb / fdh-cluster-small-xtb)")
    cmp_ = sub.add_parser("compare", help="analyse both runs, overlay them, write the numbers")
    cmp_.add_argument("--bins", type=int, default=32)
    cmp_.add_argument("--fes-config", help="a YAML of mlff fes settings (FESConfig keys) for both analyses")
    cmp_.add_argument("--append-results", action="store_true", help="add the numbers to benchmarks/RESULTS.md")
    cmp_.add_argument("--card", help="a potential directory (the one the MACE windows ran): write the numbers and "
                      "the plot into its card")
    for s in (run, cmp_):
        s.add_argument("--config", default=str(HERE / "fdh_fidelity.yaml"))
        s.add_argument("--out", default="out/fidelity")
    args = p.parse_args(argv)
    return script_exit("fdh_fidelity", _run if args.stage == "run" else _compare, args)


if __name__ == "__main__":
    sys.exit(main())
