"""What a training run leaves behind: log.csv, metrics.json, parity plots and learning curves (PNG), the
potential directory with its model card, and progress lines while it runs."""

from __future__ import annotations

import csv
import json
import shutil
import os
import sys
import time
from pathlib import Path

import numpy as np

from mlff.provenance import provenance
from mlff.plotting import save_figure
from mlff.train.metrics import error_summary, predict, scan_errors

__all__ = ["EpochReporter", "write_log", "write_outputs", "compute_metrics"]

LOG_FIELDS = ["epoch", "stage", "lr", "train_loss", "valid_loss", "valid_energy_rmse_meV_atom",
              "valid_forces_rmse_meV_A", "epoch_time_s"]


def write_log(path, rows: list[dict]) -> None:
    """log.csv: one row per epoch (row 0: the model before training)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as handle:
        handle.write(f"# mlff train log; {json.dumps(provenance())}\n")
        writer = csv.DictWriter(handle, fieldnames=LOG_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)  # readers (a benchmark polling the log) never see half a file


class EpochReporter:
    """Epoch progress with epoch time and ETA: a rich bar on a terminal, one line per epoch otherwise; within an
    epoch (minutes on a CPU) the steps too: a second bar, or a line every ``step_every_s`` seconds."""

    step_every_s = 60.0

    def __init__(self, label: str):
        self.label, self.bar, self.task, self.t0 = label, None, None, time.perf_counter()
        self.steps_task, self._epoch_t0, self._last_line = None, None, None

    def step(self, epoch: int, total_epochs: int, done: int, total: int) -> None:
        """Step ``done`` of ``total`` of epoch ``epoch`` (1-based) has run."""
        now = time.perf_counter()
        if self._epoch_t0 is None or self._epoch_t0[0] != epoch:  # the rate is timed from this epoch's first step seen
            self._epoch_t0, self._last_line = (epoch, now, done), now
        _, t0, first = self._epoch_t0
        if sys.stderr.isatty():
            self._bar(total_epochs, epoch - 1, None)
            if self.steps_task is None:
                self.steps_task = self.bar.add_task("", total=total, completed=0, detail="", unit="steps")
            self.bar.update(self.steps_task, total=total, completed=done, description=f"  epoch {epoch} steps")
            return
        if done == first or done == total or now - self._last_line < self.step_every_s:
            return
        self._last_line = now
        rate = (done - first) / max(now - t0, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("nan")
        print(f"{self.label} epoch {epoch}/{total_epochs}: step {done}/{total}, {rate:.2f} steps/s, epoch ETA {eta:.0f} s",
              file=sys.stderr, flush=True)

    def __call__(self, row: dict, total_epochs: int) -> None:
        epoch = row["epoch"]
        detail = f"loss {row['train_loss']:.4g}"
        if "valid_forces_rmse_meV_A" in row:
            detail += f", valid F {row['valid_forces_rmse_meV_A']:.1f} meV/Å, E {row['valid_energy_rmse_meV_atom']:.2f} meV/atom"
        detail += f", {row['epoch_time_s']:.2f} s/epoch"
        if sys.stderr.isatty():
            self._bar(total_epochs, epoch, detail)
            return
        remaining = (total_epochs - epoch) * row["epoch_time_s"]
        print(f"{self.label} epoch {epoch}/{total_epochs}: {detail}, ETA {remaining:.0f} s", file=sys.stderr, flush=True)

    def _bar(self, total: int, epoch: int, detail: str | None) -> None:
        """The bar with ``epoch`` epochs done (started on first use); ``detail`` None leaves it as it is."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        if self.bar is None:
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"),
                                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[detail]}"),
                                transient=False)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=total, completed=epoch, detail="", unit="epochs")
        if detail is not None:
            self.bar.update(self.task, completed=epoch, detail=detail)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar, self.steps_task = None, None


def compute_metrics(potential, graphs, records, config) -> tuple[dict, dict]:
    """Errors per split and per region tag, the held-out scan check; and the predictions behind them."""
    metrics, preds = {"splits": {}, "scans": {}}, {}
    for split, index in records.splits.items():
        if records.heads is not None:  # data.heads: the errors of the potential's own head
            index = index[records.heads[index] == records.target_head]
        if len(index) == 0:
            continue
        p = predict(potential, graphs, np.sort(index), config.valid_batch_size)
        preds[split] = p
        entry = {"all": error_summary(p)}
        for tag in config.data.regions:
            mask = np.array([tag in records.infos[k].get("tags", []) for k in p.index])
            if mask.any():
                entry[tag] = error_summary(p.subset(mask))
        metrics["splits"][split] = entry
    scan = preds.get(config.data.holdout_tag)
    if scan is not None:
        infos = [records.infos[k] for k in scan.index]
        if all("xi" in info for info in infos):
            xi = np.array([float(info["xi"]) for info in infos])
            metrics["scans"] = scan_errors(scan, xi, [info.get("scan", "scan") for info in infos])
    return metrics, preds


def labels_level(infos) -> str:
    """The level(s) of theory of the training labels, from the records' provenance, e.g.
    "GFN2-xTB (tblite; ...) -- NOT DFT" or "DFT B3LYP/def2-svp (d3bj, C-PCM eps=4.0, pyscf) [numerical settings
    conv_tol_Ha 1e-09, ..., 60 labels, 8 of them at faster settings shifted by a measured calibration]"."""
    from mlff.data.levels import describe_numerics, levels_in

    infos = list(infos)
    parts = []
    for level, numerics, count in levels_in(infos):
        text = _describe_level(level)
        if numerics:
            shifted = sum(isinstance(i.get("provenance", {}).get("numerics_calibration"), dict) for i in infos)
            text += f" [numerical settings {describe_numerics(numerics)}, {count} labels" + (
                f", {shifted} of them at faster settings shifted by a measured calibration]" if shifted else "]")
        parts.append(text)
    return "; ".join(parts) or "unknown (no provenance in the records)"


def _describe_level(level: dict) -> str:
    method = level["method"] or "unnamed method"
    if method.upper() == "DFT":
        text = "DFT " + "/".join(v for v in (level["functional"].upper(), level["basis"]) if v)
    else:
        text = method
    extras = ", ".join(v for v in (level["dispersion"], level["solvent"], level["code"]) if v)
    return text + (f" ({extras})" if extras else "") + ("" if method.upper() == "DFT" else " -- NOT DFT")


def _infos_of_head(records, head: str | None = None) -> list:
    """Infos of the records that train ``head`` (default: the potential's own head; all without data.heads)."""
    if records.heads is None:
        return records.infos
    head = records.target_head if head is None else head
    return [info for info, h in zip(records.infos, records.heads) if h == head]


def replayed_heads(records) -> dict:
    """data.heads: {head: {"level", "records"}} of the heads other than the potential's (the replayed data)."""
    if records.heads is None:
        return {}
    train = np.unique(records.splits.get("train", []))
    return {h: {"level": labels_level(_infos_of_head(records, h)), "train_records": int(np.sum(records.heads[train] == h))}
            for h in dict.fromkeys(records.heads.tolist()) if h != records.target_head}


def _reference_name(infos) -> str:
    level = labels_level(infos)
    return level.split(" (")[0].split(" -- ")[0] if ";" not in level else "reference"


def _parity_plot(preds: dict, path: Path, reference: str = "reference") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_e, ax_f) = plt.subplots(1, 2, figsize=(10, 4.6))
    for split, p in preds.items():
        ax_e.scatter(p.energy_ref / p.n_atoms, p.energy / p.n_atoms, s=6, label=split, alpha=0.7)
        ax_f.scatter(p.forces_ref.ravel(), p.forces.ravel(), s=3, label=split, alpha=0.5)
    for ax, title, unit in ((ax_e, "energy per atom", "eV/atom"), (ax_f, "force components", "eV/Å")):
        lo, hi = ax.get_xlim()
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set(title=title, xlabel=f"{reference} ({unit})", ylabel=f"model ({unit})")
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def _scan_plot(scans: dict, path: Path, reference: str = "reference") -> None:
    """Energy along each held-out scan: reference and model, each relative to its own minimum (kcal/mol)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, scan in scans.items():
        line = ax.plot(scan["xi"], scan["energy_ref_kcal_mol"], "o-", label=f"{name} {reference}")[0]
        ax.plot(scan["xi"], scan["energy_model_kcal_mol"], "s--", color=line.get_color(), label=f"{name} model")
    ax.set(xlabel="xi (reaction coordinate)", ylabel="E - E_min (kcal/mol)", title="held-out scan")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _learning_curves(run_dir: Path, committee: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_l, ax_f) = plt.subplots(1, 2, figsize=(10, 4.2))
    for k in range(committee):
        rows = _read_log(run_dir / f"member_{k:02d}" / "log.csv")
        train = [(r["epoch"], r["train_loss"]) for r in rows if r.get("train_loss")]
        valid = [(r["epoch"], r["valid_forces_rmse_meV_A"]) for r in rows if r.get("valid_forces_rmse_meV_A")]
        if train:
            ax_l.semilogy(*zip(*train), label=f"member {k} train loss")
        if valid:
            ax_f.semilogy(*zip(*valid), label=f"member {k}")
    ax_l.set(xlabel="epoch", ylabel="loss")
    ax_f.set(xlabel="epoch", ylabel="validation force RMSE (meV/Å)")
    for ax in (ax_l, ax_f):
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def _read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path) as handle:
        lines = [line for line in handle if not line.startswith("#")]
    return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(lines)]


def _shown(path: str) -> str:
    """A data path as the card shows it: relative to the working directory when inside it (no home paths)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def training_cost(run_dir: Path, committee: int) -> list[dict]:
    """Per member: epochs trained and the summed epoch wall time (s), from member_NN/log.csv."""
    out = []
    for k in range(committee):
        rows = [r for r in _read_log(Path(run_dir) / f"member_{k:02d}" / "log.csv") if "epoch_time_s" in r]
        out.append({"member": k, "epochs": len(rows), "wall_s": float(sum(r["epoch_time_s"] for r in rows))})
    return out


def _cost_line(cost: list[dict], config) -> str:
    done = [c for c in cost if c["epochs"]]
    if not done:
        return ""
    total = sum(c["wall_s"] for c in done)
    per = ", ".join(f"{c['wall_s'] / 3600:.2f} h ({c['epochs']} epochs)" for c in done)
    return (f"Training time (sum of epoch wall times, device {config.device}, {config.dtype}): "
            f"{total / 3600:.2f} h for {len(done)} member(s): {per}.")


def _card_section(metrics: dict, records, config, e0s, cost: list[dict] | None = None) -> str:
    data = ", ".join(f"`{_shown(s['path'])}` ({s['records']} records"
                     + (f" drawn from {s['drawn_from']}" if s.get("drawn_from") else "")
                     + f", sha256 `{s['sha256'][:16]}…`)" for s in records.sources)
    reference = _reference_name(_infos_of_head(records))
    replayed = "".join(f"; replayed in head `{h}` (training only, errors below not of it): {r['level']}, "
                       f"{r['train_records']} training records" for h, r in replayed_heads(records).items())
    lines = ["", "## Training", "", f"Level of theory of the labels: **{labels_level(_infos_of_head(records))}**"
             + (f" (head `{records.target_head}`){replayed}" if replayed else ""), "",
             f"Data: {data}",
             f"Split sizes: {', '.join(f'{k} {len(v)}' for k, v in records.splits.items())}; E0s (eV): {e0s}", "",
             "| split | region | records | E RMSE (meV/atom) | E MAE (meV/atom) | F RMSE (meV/Å) | F MAE (meV/Å) |",
             "|---|---|---|---|---|---|---|"]
    for split, entry in metrics["splits"].items():
        for region, s in entry.items():
            if s.get("n_records"):
                lines.append(f"| {split} | {region} | {s['n_records']} | {s['energy_rmse_meV_atom']:.2f} | "
                             f"{s['energy_mae_meV_atom']:.2f} | {s['forces_rmse_meV_A']:.1f} | {s['forces_mae_meV_A']:.1f} |")
    for name, scan in metrics.get("scans", {}).items():
        lines.append(f"\nHeld-out scan `{name}` ({scan['n_points']} points): max |E_model - E_{reference}| = "
                     f"{scan['max_abs_error_kcal_mol_mean_aligned']:.2f} kcal/mol (mean offset removed), "
                     f"{scan['max_abs_error_kcal_mol_min_aligned']:.2f} kcal/mol (minima aligned).")
    if cost and _cost_line(cost, config):
        lines += ["", _cost_line(cost, config)]
    keys = {k: v for k, v in config.to_dict().items() if k not in ("progress", "plots", "data")}
    if isinstance(keys.get("e0s"), str) and keys["e0s"].endswith((".h5", ".hdf5", ".json", ".yaml", ".xyz", ".extxyz")):
        keys["e0s"] = _shown(keys["e0s"])  # a file of isolated-atom labels: no home paths in a shipped card
    lines += ["", "Hyperparameters:", "", "```json", json.dumps(keys, indent=1), "```",
              "", "Plots: `parity.png`, `learning_curves.png`, `scan.png` (held-out scans), beside this card.", ""]
    return "\n".join(lines)


def _trained_per_source(records) -> list[int]:
    """How many records of each dataset are in the training split."""
    train, out, start = np.unique(records.splits.get("train", [])), [], 0
    for source in records.sources:
        out.append(int(np.count_nonzero((train >= start) & (train < start + source["records"]))))
        start += source["records"]
    return out


def _source_line(source: dict, trained: int) -> str:
    note = "" if trained else ", never trained on: held out"
    return f"{_shown(source['path'])} (sha256 {source['sha256']}{note})"


def write_outputs(potential, graphs, records, config, run_dir: Path) -> tuple[Path, dict]:
    """metrics.json, plots, and the potential directory ``run_dir/<name>`` with its extended card."""
    from mlff.models.store import save_potential

    metrics, preds = compute_metrics(potential, graphs, records, config)
    scored = next((name for name in ("test", "valid", config.data.holdout_tag)
                   if metrics["splits"].get(name, {}).get("all", {}).get("n_records")), None)
    test = metrics["splits"][scored]["all"] if scored else {}
    label = {"test": "test", "valid": "validation", config.data.holdout_tag: "held-out scan"}.get(scored, "")
    potential.metadata.update({
        "training_data": "; ".join(_source_line(s, n) for s, n in zip(records.sources, _trained_per_source(records))),
        "level_of_theory": labels_level(_infos_of_head(records)),
        **({"replayed_heads": replayed_heads(records)} if records.heads is not None else {}),
        "metrics": (f"{label}: E RMSE {test['energy_rmse_meV_atom']:.2f} meV/atom, "
                    f"F RMSE {test['forces_rmse_meV_A']:.1f} meV/Å") if test else "none",
        "training": {"config": config.to_dict(), "data": records.sources,
                     "split_sizes": {k: int(len(v)) for k, v in records.splits.items()}, "metrics": metrics},
    })
    path = save_potential(potential, run_dir / config.name, name=config.name)
    with open(path / "MODEL_CARD.md", "a") as card:
        card.write(_card_section(metrics, records, config, potential.config.E0s,
                                 training_cost(run_dir, config.committee)))
    (run_dir / "metrics.json").write_text(json.dumps({"metrics": metrics, "provenance": provenance()}, indent=2) + "\n")
    if config.plots:
        _parity_plot(preds, run_dir / "parity.png", _reference_name(_infos_of_head(records)))
        _learning_curves(run_dir, config.committee, run_dir / "learning_curves.png")
        if metrics["scans"]:
            _scan_plot(metrics["scans"], run_dir / "scan.png", _reference_name(_infos_of_head(records)))
        for name in ("parity.png", "learning_curves.png", "scan.png"):  # the potential ships with its plots
            if (run_dir / name).exists():
                shutil.copy2(run_dir / name, path / name)
    return path, metrics
