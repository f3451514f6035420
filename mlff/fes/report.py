"""Outputs of an analysis: ``fes.json`` (every number with its unit), ``fes.csv`` and the table on stdout.

Free energies are converted from kT to kcal/mol here and only here.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from mlff.fes.barrier import CRITERION, KEYS
from mlff.fes.result import Analysis
from mlff.fes.units import EV_TO_KCAL_PER_MOL, eyring_rate_per_s, kT_kcal_per_mol

__all__ = ["fes_document", "write_json", "write_csv", "write_frames", "summary_lines"]

def _clean(value):
    """JSON-safe: numpy to Python, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(value) else float(value)
    return value


def _rate(analysis: Analysis, key: str, kcal: float) -> dict:
    b = analysis.barrier
    method = "Eyring (transition-state theory, transmission coefficient 1): k = (kB T / h) exp(-dG/kT)"
    if not b.found:
        return {"value": None, "interval_68": None, "unit": "1/s", "method": method,
                "note": "no barrier, so no transition-state rate"}
    value = float(eyring_rate_per_s(b.values_kT[key] * kcal, analysis.temperature_K))
    lo, hi = (b.values_kT[key] + np.array([1.0, -1.0]) * b.errors_kT[key]) * kcal
    interval = [float(eyring_rate_per_s(lo, analysis.temperature_K)), float(eyring_rate_per_s(hi, analysis.temperature_K))]
    return {"value": value, "interval_68": interval, "unit": "1/s",
            "interval_method": f"Eyring rate at barrier +/- its {b.error_method} error", "method": method}


def _results(analysis: Analysis, kcal: float) -> dict:
    """Barrier, reaction free energy, rates and landmarks; every value None when the profile has no barrier."""
    b = analysis.barrier
    out = {"barrier": {"found": b.found, "no_barrier": b.no_barrier, "criterion": CRITERION,
                       "bootstrap_resamples_with_barrier": b.resamples_with_barrier,
                       "bootstrap_resamples": b.n_resamples}}
    for key in KEYS:
        entry = {"value": None if not b.found else b.values_kT[key] * kcal,
                 "error": None if not b.found else b.errors_kT[key] * kcal, "error_method": b.error_method,
                 "unit": "kcal/mol"}
        if b.errors_analytic_kT is not None:
            entry["error_analytic"] = b.errors_analytic_kT[key] * kcal
        if b.bootstrap_kT is not None and np.isfinite(b.bootstrap_kT[key]).any():  # maxima and minima of noisy
            entry["bootstrap_mean"] = float(np.nanmean(b.bootstrap_kT[key])) * kcal  # bins are biased: compare
        out["reaction_free_energy" if key == "reaction" else key] = entry
    out["rate_forward"] = _rate(analysis, "barrier_forward", kcal)
    out["rate_reverse"] = _rate(analysis, "barrier_reverse", kcal)
    unit = analysis.cv_unit
    out["cv_reactant_minimum"] = {"value": b.cv_reactant, "unit": unit}
    out["cv_transition_state"] = {"value": b.cv_ts, "error": b.cv_ts_error, "error_method": b.error_method,
                                  "unit": unit}
    out["cv_product_minimum"] = {"value": b.cv_product, "unit": unit}
    return out


def _scaled(values: dict | None, kcal: float) -> dict:
    """{key: value in kcal/mol or None} of barrier numbers in kT (None: no barrier)."""
    return {key: None if values is None or values.get(key) is None else values[key] * kcal for key in KEYS}


def _profiles(analysis: Analysis, kcal: float) -> list[dict]:
    cv_key = f"cv_{analysis.cv_unit}"
    out = []
    for p in analysis.profiles:
        entry = {"label": p.label, cv_key: p.cv, "F_kcal_per_mol": p.f_kT * kcal, "error_kcal_per_mol": p.error_kT * kcal,
                 "error_method": p.error_method,
                 "error_reference": ("each walker's lowest point" if p.error_method == "spread of walkers" else
                                     "normalisation: the error of -kT ln p_i with the bin probabilities summing to 1"),
                 "note": "F is shifted so that its lowest point is 0; differences of F between bins have their own "
                         "errors (barriers: see results)"}
        if p.error_analytic_kT is not None:
            entry["error_analytic_kcal_per_mol"] = p.error_analytic_kT * kcal
        if p.counts is not None:
            entry["counts"] = p.counts
        out.append(entry)
    return out


def _convergence(analysis: Analysis, kcal: float) -> dict | None:
    conv = analysis.convergence
    if conv is None:
        return None

    def entry(e):
        out = {k: e[k] for k in ("fraction", "time_fs", "note") if k in e}
        for k in ("barrier_forward", "barrier_reverse", "reaction"):
            out[f"{k}_kcal_per_mol"] = None if e.get(k) is None else e[k] * kcal
        out["F_kcal_per_mol"] = None if e.get("f_kT") is None else e["f_kT"] * kcal
        return out

    return {k: ([entry(e) for e in v] if isinstance(v, list) and v and isinstance(v[0], dict) else v)
            for k, v in conv.items()}


def fes_document(analysis: Analysis, config: dict, provenance: dict) -> dict:
    """The content of fes.json."""
    kcal = kT_kcal_per_mol(analysis.temperature_K)
    doc = {"schema": "mlff.fes/1", "kind": analysis.kind, "estimator": analysis.estimator,
           "cv": {"name": analysis.cv_name, "unit": analysis.cv_unit},
           "temperature": {"value": analysis.temperature_K, "unit": "K"},
           "kT": {"value": kcal, "unit": "kcal/mol"},
           "results": _results(analysis, kcal), "warnings": analysis.warnings,
           "profiles": _profiles(analysis, kcal), "convergence": _convergence(analysis, kcal)}
    if analysis.overlap is not None:
        o = analysis.overlap
        doc["overlap"] = {"status": "poor" if o["poor"] else "ok", "threshold": o["threshold"],
                          "min_neighbour": o["min_neighbour"], "neighbour_pairs": o["neighbour_pairs"],
                          "matrix": o["matrix"], "unit": "probability",
                          "note": "O[i, j]: probability that a sample of window i is attributed to window j by MBAR; "
                                  "neighbouring pairs below the threshold make the analytic errors meaningless"}
        doc["windows"] = analysis.windows
    if analysis.kind == "metad":
        e = analysis.extra
        values, errors = _scaled(e["hills_barrier_kT"], kcal), _scaled(e["hills_barrier_error_kT"], kcal)
        doc["metad"] = {"biasfactor": e["biasfactor"], "n_hills": e["n_hills"], "n_biases": e["n_biases"],
                        "discarded_samples": e["discarded_samples"], "n_samples_used": e["n_samples_used"],
                        "effective_sample_size": e["effective_sample_size"],
                        "from_hills": {k: {"value": values[k], "unit": "kcal/mol", "error": errors[k],
                                           "error_method": "spread of independent walkers"} for k in KEYS},
                        "from_hills_no_barrier": e["hills_no_barrier"],
                        "from_hills_cv_transition_state": {"value": e["hills_cv_ts"], "unit": analysis.cv_unit}}
    level = analysis.extra.get("level")
    if level:
        values, errors = _scaled(level["values_kT"], kcal), _scaled(level["errors_kT"], kcal)
        doc["level_reweighting"] = {
            "method": "MBAR weights of the frames times exp(-(E_target - E_reference)/kT) (FEP through MBAR)",
            "source": level["source"], "n_frames": level["n_frames"], "windows_used": level["windows_used"],
            "effective_sample_size": level["ess_target"], "effective_sample_size_reference": level["ess_reference"],
            "delta_A": {"value": level["delta_A_eV"] * EV_TO_KCAL_PER_MOL, "unit": "kcal/mol",
                        "note": "-kT ln <exp(-dE/kT)> over the unbiased reference ensemble"},
            "no_barrier": level["no_barrier"], "bootstrap_resamples_with_barrier": level.get("resamples_with_barrier"),
            "cv_transition_state": {"value": level["cv_ts"], "unit": analysis.cv_unit},
            **{("reaction_free_energy" if k == "reaction" else k): {"value": values[k], "error": errors[k],
                                                                    "error_method": "bootstrap", "unit": "kcal/mol"}
               for k in KEYS}}
    model = analysis.extra.get("committee")
    if model:
        names = {"barrier_forward": "barrier_forward", "barrier_reverse": "barrier_reverse",
                 "reaction": "reaction_free_energy"}
        mean = _scaled(model["mean_potential_kT"], kcal)
        doc["model_error"] = {
            "method": "the run's samples at its trajectory frames reweighted from the committee mean to each member "
                      "(FEP through MBAR); error: standard deviation of the values of the members with a barrier",
            "source": model["source"], "n_frames": model["n_frames"], "min_effective_sample_size": model["min_ess"],
            "members_with_barrier": model["members_with_barrier"],
            **{names[k]: {"error": model["std_kT"][k] * kcal,
                          "range": None if model["range_kT"][k] is None else [v * kcal for v in model["range_kT"][k]],
                          "mean_potential_same_frames": mean[k], "unit": "kcal/mol"}
               for k in names},
            "members": [{"member": m["member"], "effective_sample_size": m["ess"],
                         "cv_transition_state": m["cv_ts"],
                         **{names[k]: v for k, v in _scaled(m["values_kT"], kcal).items()}} for m in model["members"]]}
    doc["config"] = config
    doc["provenance"] = {"run": analysis.provenance, "analysis": provenance}
    return _clean(doc)


def write_json(doc: dict, path: Path) -> None:
    Path(path).write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")


def write_csv(analysis: Analysis, path: Path) -> None:
    """Bin centre, F, analytic error, bootstrap (or other reported) error, counts; further profiles as columns."""
    kcal = kT_kcal_per_mol(analysis.temperature_K)
    main, *others = analysis.profiles
    header = [f"cv_{analysis.cv_unit}", "F_kcal_per_mol", "error_analytic_kcal_per_mol",
              f"error_{main.error_method.replace(' ', '_')}_kcal_per_mol", "counts"]
    for p in others:
        header += [f"{p.key}_kcal_per_mol", f"error_{p.key}_kcal_per_mol"]
    n = main.cv.size
    analytic = main.error_analytic_kT if main.error_analytic_kT is not None else np.full(n, np.nan)
    counts = main.counts if main.counts is not None else np.zeros(n, int)
    with open(path, "w", newline="") as handle:
        handle.write("# " + "; ".join([p.label for p in analysis.profiles]) + f"; {analysis.temperature_K:g} K\n")
        writer = csv.writer(handle)
        writer.writerow(header)
        for i in range(n):
            row = [f"{main.cv[i]:.6g}"] + [("nan" if not np.isfinite(v) else f"{v * kcal:.6g}")
                                           for v in (main.f_kT[i], analytic[i], main.error_kT[i])] + [int(counts[i])]
            row += [("nan" if not np.isfinite(v) else f"{v * kcal:.6g}") for p in others for v in (p.f_kT[i], p.error_kT[i])]
            writer.writerow(row)


def write_frames(analysis: Analysis, path: Path) -> bool:
    """The decorrelated frames MBAR used (step, system, window, CV): where to compute single points for
    ``--single-points``. Umbrella runs only; False when there is nothing to write."""
    frames = analysis.extra.get("frames")
    if not frames:
        return False
    with open(path, "w", newline="") as handle:
        handle.write("# decorrelated frames used by MBAR; single points on (a subset of) them reweight the profile "
                     "to another level (mlff fes --single-points)\n")
        writer = csv.writer(handle)
        writer.writerow(["step", "system", "window", f"cv_{analysis.cv_unit}"])
        for step, system, window, cv in zip(frames["step"], frames["system"], frames["window"], frames["cv"]):
            writer.writerow([int(step), int(system), int(window), f"{cv:.8g}"])
    return True


def _pm(entry: dict) -> str:
    return "n/a" if entry["value"] is None else (f"{entry['value']:.2f}" + ("" if entry["error"] is None else
                                                                         f" ± {entry['error']:.2f}"))


def _barrier_lines(analysis: Analysis, r: dict) -> list[str]:
    unit, b = analysis.cv_unit, r["barrier"]
    boot = ("" if not b["bootstrap_resamples"] else
            f" (a barrier in {b['bootstrap_resamples_with_barrier']} of {b['bootstrap_resamples']} bootstrap resamples)")
    if not b["found"]:
        return [f"  {b['no_barrier']}{boot}; no barrier, reaction free energy or rate is reported"]
    lines = []
    for key, name in (("barrier_forward", "barrier (forward)"), ("barrier_reverse", "barrier (reverse)"),
                      ("reaction_free_energy", "reaction free energy")):
        e = r[key]
        extra = f"; analytic {e['error_analytic']:.2f}" if e.get("error_analytic") is not None else ""
        err = "n/a" if e["error"] is None else f"{e['error']:.2f}"
        lines.append(f"  {name:22s} {e['value']:8.2f} ± {err} kcal/mol ({e['error_method']}{extra})")
    for key, name in (("rate_forward", "rate (forward, Eyring)"), ("rate_reverse", "rate (reverse, Eyring)")):
        e = r[key]
        lo, hi = (("n/a" if v is None else f"{v:.2e}") for v in e["interval_68"])
        lines.append(f"  {name:22s} {e['value']:8.2e} 1/s (68%: {lo} .. {hi})")
    ts = r["cv_transition_state"]
    ts_err = "" if ts.get("error") is None else f" ± {ts['error']:.2f}"
    lines.append(f"  minima at {r['cv_reactant_minimum']['value']:.2f} and {r['cv_product_minimum']['value']:.2f} {unit}; "
                 f"TS at {ts['value']:.2f}{ts_err} {unit}{boot}")
    return lines


def summary_lines(analysis: Analysis, doc: dict) -> list[str]:
    """The concise table printed by ``mlff fes``; a profile without a barrier prints why, and no numbers."""
    r = doc["results"]
    title = (f"free energy along {analysis.cv_name} ({analysis.cv_unit}) at {analysis.temperature_K:g} K: "
             f"{analysis.profiles[0].label}")
    lines = [title, *_barrier_lines(analysis, r)]
    if "overlap" in doc:
        o = doc["overlap"]
        poor = [p for p in o["neighbour_pairs"] if p["poor"]]
        status = (f"ok (smallest neighbouring-window overlap {o['min_neighbour']:.3f} >= {o['threshold']:g})" if not poor
                  else f"POOR: {len(poor)} neighbouring pair(s) below {o['threshold']:g} (smallest {o['min_neighbour']:.3f})")
        lines.append(f"  overlap: {status}")
    if "metad" in doc:
        m = doc["metad"]
        h = m["from_hills"]
        hills = (f"barrier {_pm(h['barrier_forward'])}, reaction {_pm(h['reaction'])} kcal/mol"
                 if m["from_hills_no_barrier"] is None else m["from_hills_no_barrier"])
        lines.append(f"  from the hills: {hills}; reweighting ESS {m['effective_sample_size']:.0f} of "
                     f"{m['n_samples_used']} samples")
    if "level_reweighting" in doc:
        lv = doc["level_reweighting"]
        numbers = (f"barrier {_pm(lv['barrier_forward'])}, reaction {_pm(lv['reaction_free_energy'])} kcal/mol"
                   if lv["no_barrier"] is None else lv["no_barrier"])
        lines.append(f"  at the single-point level: {numbers}; ESS {lv['effective_sample_size']:.0f} of "
                     f"{lv['n_frames']} frames")
    if "model_error" in doc:
        me = doc["model_error"]
        b, n = me["barrier_forward"], len(me["members"])
        spread = ("" if b["range"] is None else f" (members {b['range'][0]:.2f} .. {b['range'][1]:.2f})")
        err = "n/a" if b["error"] is None else f"{b['error']:.2f}"
        rerr = me["reaction_free_energy"]["error"]
        lines.append(f"  model error (committee of {n}, reweighted): barrier ± {err}{spread}, reaction ± "
                     f"{'n/a' if rerr is None else f'{rerr:.2f}'} kcal/mol over the {me['members_with_barrier']} "
                     f"members with a barrier; smallest ESS {me['min_effective_sample_size']:.0f} of "
                     f"{me['n_frames']} frames")
    lines += [f"  warning: {w}" for w in analysis.warnings]
    return lines
