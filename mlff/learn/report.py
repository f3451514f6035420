"""Report and stop: per iteration ``iter_NNN/report.json`` and ``report.png``: labels spent, the errors of the
new committee on the fixed test set per xi region, the spread calibration, the number of uncertain frames,
the xi profile and barrier of the umbrella explore run (when there is one); then the stop decision.

Stop criteria, checked after every iteration in this order: the label budget is spent; ``max_iterations``;
fewer than ``min_uncertain`` uncertain frames in this and the previous iteration; the barrier moved by
less than ``barrier_tol_kcal_mol`` since the previous iteration (both profiles must have a barrier: a profile
without one never stops the loop).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mlff.errors import MLFFError
from mlff.learn.config import LearnConfig
from mlff.plotting import save_figure

__all__ = ["test_errors", "test_indices", "profile_of", "stop_reason", "write_plot"]


def _in(xi: float, interval) -> bool:
    lo = -math.inf if interval[0] is None else float(interval[0])
    hi = math.inf if interval[1] is None else float(interval[1])
    return lo <= xi < hi


def test_indices(dataset, tag: str | None) -> np.ndarray | None:
    """The records of the fixed test set in ``dataset``: those tagged ``tag``, or all (None) without a tag.
    ``test_errors`` scores them; the replay draw keeps them out of training."""
    return dataset.indices(tag=tag) if tag is not None else None


def test_errors(potential, path: str | None, regions: dict, tag: str | None = None) -> dict | None:
    """Energy (meV/atom) and force (meV/Å) errors on the test set (its records tagged ``tag``, or all), in all
    and per xi region; None without a test set."""
    if path is None:
        return None
    from mlff.data.store import Dataset
    from mlff.train.data import build_graphs
    from mlff.train.metrics import error_summary, predict

    dataset = Dataset(path)
    records = dataset.read(test_indices(dataset, tag))
    if not records:
        raise MLFFError(f"test.path: {path} holds no records" + (f" tagged {tag!r}" if tag else ""))
    graphs = build_graphs(records, potential.cutoff, device=potential.device, dtype=potential.dtype)
    p = predict(potential, graphs, np.arange(len(records)))
    out = {"all": error_summary(p)}
    xi = np.array([float(a.info.get("xi", np.nan)) for a in records])
    for name, interval in regions.items():
        mask = np.array([np.isfinite(x) and _in(x, interval) for x in xi])
        if mask.any():
            out[name] = error_summary(p.subset(mask))
    return out


def profile_of(config: LearnConfig, run_dir: Path) -> dict | None:
    """The MBAR profile and barrier (kcal/mol) of the umbrella explore run; a failed analysis is recorded, and a
    profile without a barrier (``mlff.fes.barrier``'s test) gives None numbers and the reason (``no_barrier``)."""
    if config.explore.umbrella is None or not (run_dir / "bias.json").is_file():
        return None
    from mlff.fes import load_fes_config, run_fes

    try:
        fes_config = load_fes_config({"plots": False, **(config.fes or {})})
        document = run_fes(run_dir, fes_config).document
    except MLFFError as err:
        return {"error": str(err)}
    results, profile = document["results"], document["profiles"][0]
    cv_key = next(k for k in profile if k.startswith("cv_"))
    return {"barrier_kcal_mol": results["barrier_forward"]["value"], "barrier_error_kcal_mol":
            results["barrier_forward"]["error"], "reaction_kcal_mol": results["reaction_free_energy"]["value"],
            "no_barrier": results["barrier"]["no_barrier"], "xi_A": profile[cv_key],
            "F_kcal_mol": profile["F_kcal_per_mol"]}


def _barrier(report: dict | None) -> float | None:
    profile = (report or {}).get("profile") or {}
    value = profile.get("barrier_kcal_mol")
    return float(value) if value is not None and math.isfinite(value) else None


def stop_reason(config: LearnConfig, report: dict, previous: dict | None) -> str | None:
    """Why the loop stops after the iteration of ``report`` (``previous``: the iteration before), or None."""
    s = config.stop
    if report["labels_spent"] >= s.total_labels:
        return f"label budget spent ({report['labels_spent']} of {s.total_labels})"
    if report["iteration"] + 1 >= s.max_iterations:
        return f"max_iterations ({s.max_iterations}) reached"
    if previous is not None and s.min_uncertain > 0 and report["uncertain"] < s.min_uncertain \
            and previous["uncertain"] < s.min_uncertain:
        return (f"fewer than {s.min_uncertain} uncertain frames two iterations running "
                f"({previous['uncertain']}, then {report['uncertain']})")
    now, before = _barrier(report), _barrier(previous)
    if s.barrier_tol_kcal_mol is not None and now is not None and before is not None \
            and abs(now - before) < s.barrier_tol_kcal_mol:
        return f"barrier converged: {before:.2f} -> {now:.2f} kcal/mol (moved < {s.barrier_tol_kcal_mol})"
    return None


def write_plot(reports: list[dict], path: Path) -> None:
    """Test force RMSE per region against labels spent; this iteration's calibration; the xi profiles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    ax = axes[0]
    regions = sorted({k for r in reports for k in (r.get("test") or {})})
    for name in regions:
        pts = [(r["labels_spent"], r["test"][name]["forces_rmse_meV_A"]) for r in reports
               if name in (r.get("test") or {}) and "forces_rmse_meV_A" in r["test"][name]]
        if pts:
            ax.plot(*zip(*pts), "o-", label=name)
    ax.set(xlabel="labels spent", ylabel="test force RMSE (meV/Å)", title="errors on the fixed test set")
    if regions:
        ax.legend()
    cal = reports[-1].get("calibration") or {}
    ax = axes[1]
    if cal.get("spread_eV_A"):
        s, e = np.array(cal["spread_eV_A"]), np.array(cal["error_eV_A"])
        ax.plot(s, e, "o")
        if cal.get("slope") is not None:
            grid = np.linspace(0, s.max() * 1.1, 2)
            ax.plot(grid, cal["slope"] * grid, "-", label=f"slope {cal['slope']:.2f}")
            ax.legend()
    ax.set(xlabel="committee spread (eV/Å)", ylabel="true max force error (eV/Å)",
           title=f"calibration, iteration {reports[-1]['iteration']}")
    ax = axes[2]
    for r in reports:
        prof = r.get("profile") or {}
        if prof.get("xi_A"):
            ax.plot(prof["xi_A"], [np.nan if v is None else v for v in prof["F_kcal_mol"]],
                    label=f"iteration {r['iteration']}")
    ax.set(xlabel="xi (Å)", ylabel="F (kcal/mol)", title="xi profile of the umbrella explore runs")
    if any((r.get("profile") or {}).get("xi_A") for r in reports):
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
