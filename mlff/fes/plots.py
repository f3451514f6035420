"""PNG plots of an analysis (matplotlib's object API with the Agg canvas: no pyplot, no global backend).

profile.png      free energy with its error band, minima and TS marked, barrier and reaction free energy
windows.png      umbrella: histogram of every window's decorrelated samples, with the neighbouring overlap
overlap.png      umbrella: the MBAR overlap matrix, poor neighbouring pairs outlined
convergence.png  umbrella: barrier and reaction free energy from the first/last fractions of the data;
                 metaD: the hills profile and its barrier as the run goes on
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlff.fes.result import Analysis
from mlff.fes.units import kT_kcal_per_mol
from mlff.plotting import save_figure

__all__ = ["write_plots"]


def _figure(width=6.4, height=4.4, rows=1, cols=1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _profile(analysis: Analysis, path: Path) -> None:
    kcal = kT_kcal_per_mol(analysis.temperature_K)
    fig, ax = _figure()
    ax = ax[0, 0]
    for i, p in enumerate(analysis.profiles):
        F, err = p.f_kT * kcal, p.error_kT * kcal
        line, = ax.plot(p.cv, F, lw=2 if i == 0 else 1.2, ls="-" if i == 0 else "--", label=p.label)
        if np.isfinite(err).any():
            ax.fill_between(p.cv, F - err, F + err, color=line.get_color(), alpha=0.25,
                            label=f"± 1 sigma ({p.error_method})")
    b = analysis.barrier
    F0 = analysis.profiles[0]
    if b.found:
        for x, name in [(b.cv_reactant, "R"), (b.cv_ts, "TS"), (b.cv_product, "P")]:
            y = np.interp(x, F0.cv, F0.f_kT * kcal)
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=9)
            ax.plot([x], [y], "k.", ms=6)
        v, e = b.values_kT, b.errors_kT
        ax.set_title(f"barrier {v['barrier_forward'] * kcal:.2f} ± {e['barrier_forward'] * kcal:.2f}, reaction "
                     f"{v['reaction'] * kcal:.2f} ± {e['reaction'] * kcal:.2f} kcal/mol ({b.error_method})", fontsize=9)
    else:
        ax.set_title(b.no_barrier, fontsize=7, wrap=True)
    ax.set_xlabel(f"{analysis.cv_name} ({analysis.cv_unit})")
    ax.set_ylabel("free energy (kcal/mol)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path, dpi=130)


def _windows(analysis: Analysis, path: Path) -> None:
    samples = analysis.extra["window_samples"]
    fig, axes = _figure(7.0, 5.4, rows=2)
    ax = axes[0, 0]
    lo = min(s.min() for s in samples)
    hi = max(s.max() for s in samples)
    edges = np.linspace(lo, hi, 80)
    for w, s in zip(analysis.windows, samples):
        ax.hist(s, bins=edges, histtype="step", lw=1)
        ax.axvline(w["center"], color="0.6", lw=0.5)
    ax.set_ylabel("decorrelated samples")
    ax.set_title(f"{len(samples)} umbrella windows (grey: centres)", fontsize=9)
    ax2 = axes[1, 0]
    pairs = analysis.overlap["neighbour_pairs"]
    mid = [0.5 * sum(p["centers"]) for p in pairs]
    values = [p["overlap"] for p in pairs]
    colours = ["tab:red" if p["poor"] else "tab:blue" for p in pairs]
    ax2.bar(mid, values, width=0.8 * np.min(np.diff(sorted(w["center"] for w in analysis.windows))), color=colours)
    ax2.axhline(analysis.overlap["threshold"], color="tab:red", ls="--", lw=1, label="threshold")
    ax2.set_yscale("log")
    ax2.set_ylabel("neighbour overlap")
    ax2.set_xlabel(f"{analysis.cv_name} ({analysis.cv_unit})")
    ax2.legend(fontsize=8)
    for a in (ax, ax2):
        a.set_xlim(lo, hi)
    save_figure(fig, path, dpi=130)


def _overlap(analysis: Analysis, path: Path) -> None:
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    o = analysis.overlap
    order = np.argsort([w["center"] for w in analysis.windows], kind="stable")
    M = np.asarray(o["matrix"])[np.ix_(order, order)]
    fig, ax = _figure(5.6, 4.8)
    ax = ax[0, 0]
    image = ax.imshow(np.clip(M, 1e-4, 1.0), norm=LogNorm(1e-4, 1.0), cmap="viridis", origin="upper")
    fig.colorbar(image, ax=ax, label="overlap O[i, j]")
    position = {int(w): i for i, w in enumerate(order)}
    for p in o["neighbour_pairs"]:
        if p["poor"]:
            i, j = (position[w] for w in p["windows"])
            ax.add_patch(Rectangle((min(i, j) - 0.5, min(i, j) - 0.5), 2, 2, fill=False, ec="red", lw=2))
    ticks = np.arange(len(order))[:: max(1, len(order) // 12)]
    labels = [f"{analysis.windows[order[i]]['center']:.2f}" for i in ticks]
    ax.set_xticks(ticks, labels, rotation=90, fontsize=7)
    ax.set_yticks(ticks, labels, fontsize=7)
    ax.set_xlabel(f"window centre ({analysis.cv_name}, {analysis.cv_unit})")
    ax.set_ylabel(f"window centre ({analysis.cv_name}, {analysis.cv_unit})")
    ax.set_title(f"MBAR overlap; red: neighbours below {o['threshold']:g}", fontsize=9)
    save_figure(fig, path, dpi=130)


def _convergence(analysis: Analysis, path: Path) -> None:
    kcal = kT_kcal_per_mol(analysis.temperature_K)
    conv = analysis.convergence
    fig, axes = _figure(7.0, 5.4, rows=2)
    top, bottom = axes[0, 0], axes[1, 0]
    series = [("forward", "first"), ("backward", "last")] if analysis.kind == "umbrella" else [("hills", "up to")]
    b = analysis.barrier
    for key, word in series:
        entries = [e for e in conv[key] if e.get("barrier_forward") is not None]
        x = [e["fraction"] for e in entries]
        for name, style in (("barrier_forward", "o-"), ("reaction", "s--")):
            top.plot(x, [e[name] * kcal for e in entries], style, label=f"{name.replace('_', ' ')}: {word} fraction")
        for e in conv[key]:  # the slices' profiles, with a barrier or without
            if e.get("f_kT") is not None:
                bottom.plot(analysis.profiles[0].cv, e["f_kT"] * kcal, lw=1, label=f"{word} {e['fraction']:.0%}")
    for name in ("barrier_forward", "reaction") if b.found else ():
        v, err = b.values_kT[name] * kcal, b.errors_kT[name] * kcal
        if np.isfinite(err):
            top.axhspan(v - err, v + err, color="0.85", zorder=0)
    top.set_xlabel("fraction of the data" if analysis.kind == "umbrella" else "fraction of the run (hills)")
    top.set_ylabel("kcal/mol")
    top.set_title("convergence (grey bands: final ± error)", fontsize=9)
    if top.get_legend_handles_labels()[0]:  # a slice without a barrier draws nothing
        top.legend(fontsize=7)
    bottom.set_xlabel(f"{analysis.cv_name} ({analysis.cv_unit})")
    bottom.set_ylabel("free energy (kcal/mol)")
    if bottom.get_legend_handles_labels()[0]:
        bottom.legend(fontsize=6, ncol=2)
    save_figure(fig, path, dpi=130)


def write_plots(analysis: Analysis, out: Path) -> list[Path]:
    """Write the PNGs of ``analysis`` into ``out``; the paths written."""
    out = Path(out)
    jobs = [("profile.png", _profile), ("convergence.png", _convergence)]
    if analysis.kind == "umbrella":
        jobs += [("windows.png", _windows), ("overlap.png", _overlap)]
    written = []
    for name, plot in jobs:
        plot(analysis, out / name)
        written.append(out / name)
    return written
