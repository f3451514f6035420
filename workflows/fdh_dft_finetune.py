"""`fdh-cluster-small`: the xTB foundation fine-tuned on the DFT labels, and how far the labels go (issue 13, item 4).

    mlff train workflows/fdh_dft_finetune.yaml          # the committee (all DFT labels so far; 50 labels: ~20 min on one core)
    mlff train workflows/fdh_dft_finetune_replay.yaml   # or: the same with xTB data replayed in a second head
    python workflows/fdh_dft_finetune.py curve          # learning curve: xTB-pre-trained (plain, replay) vs scratch
    python workflows/fdh_dft_finetune.py cv             # the schedule (max_epochs): 4-fold CV on the training labels
    python workflows/fdh_dft_finetune.py card runs/fdh-cluster-small-dft/fdh-cluster-small   # labels + curve in its card
    cp -r runs/fdh-cluster-small-dft/fdh-cluster-small potentials/

`curve` trains one model per (start, number of labels): the first N DFT labels of data/fdh-cluster/fdh_small.h5
(the queue's order: a round-robin over bins of xi, so every prefix is stratified) for N in 0 (the foundation as it
is), 1, 2, 4, 8, 16, 25, 50, 100, ... up to all of them; "xtb" starts from member 0 of `fdh-cluster-small-xtb` with the recipe of
fdh_dft_finetune.yaml, "replay" the same with the recipe of fdh_dft_finetune_replay.yaml (GFN2-xTB records replayed
in a second head), "scratch" from random weights of the same architecture (fdh_xtb_train.yaml's model,
DFT isolated-atom E0s, the foundation's learning rate 0.01, twice the epochs). Both are scored on the DFT
held-out scan (fdh_holdout_small.h5, never trained on): force RMSE and the largest error of relative energies
along xi. Rows go to OUT/curve.jsonl as they finish (a killed run resumes; a row is redone when its labels,
the held-out scan, the foundation's weights or the recipes changed), and OUT/learning_curve.png plots them.

`cv` chooses the recipe's schedule and loss weights without looking at the held-out scan: for each candidate
max_epochs (and energy weight of the loss, `--energy-weights`), a 4-fold cross-validation over the training labels
(fixed seeded folds; OUT/cv.jsonl, resumable), scored on forces, energies and relative energies (the spread of the
energy errors once their common offset is removed: what the held-out scan's relative energies measure).
`--starts xtb scratch delta` and `--committees 1 4 8` make the start (fine-tuned from the foundation, from scratch,
or a residual model that learns DFT minus the frozen foundation, `base:` in the training config) and the committee
size candidates too: each fold then trains a bootstrapped committee, scores its mean, and fits
the spread calibration (left-out largest force error against largest committee spread, through the origin).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "workflows/fdh_dft_finetune.yaml"
REPLAY = REPO / "workflows/fdh_dft_finetune_replay.yaml"
FOUNDATION = REPO / "workflows/fdh_xtb_train.yaml"
LABELS = REPO / "data/fdh-cluster/fdh_small.h5"
HOLDOUT = REPO / "data/fdh-cluster/fdh_holdout_small.h5"
DFT_E0S = REPO / "data/fdh-cluster/isolated_atoms.h5"
OUT = REPO / "runs/fdh-dft-curve"
SIZES = (0, 1, 2, 4, 8, 16, 25, 50, 100, 200, 400)  # 0: the xTB foundation as it is
STARTS = ("xtb", "replay", "scratch")
NAMES = {"xtb": "pre-trained on GFN2-xTB", "replay": "pre-trained, xTB replayed in a 2nd head", "scratch": "from scratch"}


def _sizes(n_all: int, sizes) -> list[int]:
    return sorted({n for n in sizes if 0 <= n < n_all} | {n_all})


def _foundation() -> str:
    """The checksum of the foundation the recipe fine-tunes (its weights files): rows made from another are stale."""
    from mlff.config import load_yaml

    path = REPO / load_yaml(CONFIG)["init_from"] / "potential.json"
    files = json.loads(path.read_text())["sha256"]
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]


def _recipe(cv: bool = False) -> str:
    """The checksum of the recipes a curve point is trained with (the fine-tune, its replay variant and the
    from-scratch model), or (``cv``) of the fine-tune less what `cv` varies: rows of another recipe are stale."""
    from mlff.config import load_yaml

    recipe = load_yaml(CONFIG)
    if cv:
        recipe.pop("max_epochs", None)
        recipe["loss"] = {k: v for k, v in recipe.get("loss", {}).items() if k != "energy_weight"}
        parts = [recipe]
    else:
        parts = [recipe, load_yaml(REPLAY), load_yaml(FOUNDATION)["model"]]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _curve_inputs(holdout) -> str:
    """What every curve row depends on besides its labels: the held-out scan, the foundation, the recipes."""
    return holdout.checksum() + _foundation() + _recipe()


def _cv_inputs() -> str:
    return _foundation() + _recipe(cv=True)


def _key(hashes, holdout_sha: str) -> str:
    """What a row depends on: the labels trained on (their geometry hashes) and the held-out scan's checksum."""
    return hashlib.sha256(("|".join(map(str, hashes)) + holdout_sha).encode()).hexdigest()[:16]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def curve_config(start: str, labels_path: Path, run_dir: Path, n_labels: int) -> dict:
    """The training config of one point of the curve (committee of one, no plots); 0 labels: the foundation as
    it is (no epochs; ``labels_path`` then only fills the training split, which relative energies ignore)."""
    from mlff.config import load_yaml

    recipe = REPLAY if start == "replay" else CONFIG
    spec = load_yaml(recipe)
    spec.update(out=str(run_dir), name="potential", committee=1, bootstrap=False, plots=False, progress=False,
                init_from=str(REPO / spec["init_from"]))
    paths = [str(labels_path), str(HOLDOUT)] + [str((recipe.parent / p).resolve()) for p in spec["data"]["paths"][2:]]
    spec["data"] = dict(spec["data"], paths=paths)
    if start in ("scratch", "delta"):
        foundation = spec.pop("init_from")
        spec.update(model=load_yaml(FOUNDATION)["model"], e0s=str(DFT_E0S), scaling="rms_forces",
                    max_epochs=2 * spec["max_epochs"])
        spec["optim"] = dict(spec["optim"], lr=0.01)
        if start == "delta":  # the same architecture learning DFT - xTB-foundation on top of the frozen foundation
            spec.update(base=foundation, e0s={symbol: 0.0 for symbol in spec["model"]["species"]})
    elif n_labels == 0:
        spec.update(max_epochs=0)
    return spec


def _score(metrics: dict) -> dict:
    scan = metrics["splits"].get("holdout-scan", {}).get("all", {})
    train = metrics["splits"].get("train", {}).get("all", {})
    scans = list(metrics.get("scans", {}).values())
    return {"holdout_points": scan.get("n_records", 0), "holdout_forces_rmse_meV_A": scan.get("forces_rmse_meV_A"),
            "holdout_energy_rmse_meV_atom": scan.get("energy_rmse_meV_atom"),
            "scan_max_error_kcal_mol": scans[0]["max_abs_error_kcal_mol_mean_aligned"] if scans else None,
            "train_forces_rmse_meV_A": train.get("forces_rmse_meV_A")}


def _train_point(run_dir: Path, key: str, spec: dict, stage: str) -> None:
    """Train (or resume) one model of ``stage`` in ``run_dir``; a run begun for another ``key`` (other labels,
    held-out scan or foundation) is removed first."""
    from mlff.errors import MLFFError
    from mlff.train import train

    key_file = run_dir / "key"
    if run_dir.exists() and (not key_file.is_file() or key_file.read_text() != key):
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    key_file.write_text(key)
    result = train(spec, resume=(run_dir / "config.json").is_file())
    if result.status != "done":
        raise MLFFError(f"training of {run_dir} stopped ({result.status}); run `{stage}` again to resume")


def curve(out: Path, sizes=SIZES, starts=STARTS) -> list[dict]:
    """Train and score every missing point of the learning curve; returns all rows."""
    from mlff.data.store import Dataset
    from mlff.errors import MLFFError

    dataset, holdout = Dataset(LABELS), Dataset(HOLDOUT)
    labels, hashes = dataset.read(), list(dataset.column("geometry_hash"))
    if not labels:
        raise MLFFError(f"no DFT labels in {LABELS}")
    if len(holdout) < 2:
        raise MLFFError(f"{HOLDOUT} has {len(holdout)} held-out scan point(s): relative energies need 2")
    out.mkdir(parents=True, exist_ok=True)
    table = out / "curve.jsonl"
    rows, holdout_sha = _rows(table), _curve_inputs(holdout)
    for n in _sizes(len(labels), sizes):
        key = _key(hashes[:n], holdout_sha)
        for start in [s for s in starts if s in STARTS] if n else ("xtb",):
            if any(r["start"] == start and r["n_labels"] == n and r["key"] == key for r in rows):
                continue
            run_dir, subset = out / f"{start}_{n:03d}", out / f"labels_{max(n, 1):03d}.h5"
            _write_subset(labels[:max(n, 1)], hashes[:max(n, 1)], subset)
            t0 = time.perf_counter()
            _train_point(run_dir, key, curve_config(start, subset, run_dir, n), "curve")
            metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
            row = {"start": start, "n_labels": n, "key": key, **_score(metrics),
                   "wall_s": round(time.perf_counter() - t0, 1)}
            rows = [r for r in rows if not (r["start"] == start and r["n_labels"] == n)] + [row]
            table.write_text("".join(json.dumps(r) + "\n" for r in rows))
            print(f"{start:>7} {n:4d} labels: held-out scan F RMSE {row['holdout_forces_rmse_meV_A']:.1f} meV/Å, "
                  f"relative E max error {row['scan_max_error_kcal_mol']:.2f} kcal/mol", flush=True)
    current = _current(rows, hashes, holdout_sha)
    if len(current) < len(rows):  # rows of label sets or held-out scans that are gone
        table.write_text("".join(json.dumps(r) + "\n" for r in current))
    plot(current, out / "learning_curve.png")
    for line in budget_lines(current):
        print(line)
    return current


FIT_FROM = 8  # labels: the power-law fit of the curve starts here (below it the errors fall faster)
TARGETS = {"holdout_forces_rmse_meV_A": (40.0, "force RMSE", "meV/Å"),  # issue 13's targets: value, name, unit
           "scan_max_error_kcal_mol": (1.0, "relative-energy max error", "kcal/mol")}


def extrapolate(rows: list[dict], start: str, what: str, target: float, fit_from: int = FIT_FROM) -> dict | None:
    """How far the labels go: a least-squares power law, error = a N^-b, through the curve's points of ``start``
    with N >= ``fit_from`` labels, and the N at which it reaches ``target`` (``labels_for_target`` None where the
    error does not fall; None: fewer than 2 such points). An extrapolation of a single-model curve; the committee
    is more accurate than one member."""
    import numpy as np

    pts = sorted((r["n_labels"], r[what]) for r in rows if r["start"] == start and r["n_labels"] >= fit_from
                 and r.get(what) is not None)
    if len(pts) < 2:
        return None
    slope, intercept = np.polyfit(np.log([n for n, _ in pts]), np.log([e for _, e in pts]), 1)
    # a curve that does not fall (a slope within rounding of 0: BLAS builds differ in the last bits) reaches no target
    reach = float(np.exp((np.log(target) - intercept) / slope)) if slope < -1e-6 else None
    return {"start": start, "what": what, "exponent": float(-slope), "points": len(pts), "labels_for_target": reach,
            "target": target}


def budget_lines(rows: list[dict]) -> list[str]:
    """One line per start and target: the fitted exponent and the labels the fit says the target needs."""
    lines = []
    for start in STARTS:
        for what, (target, name, unit) in TARGETS.items():
            fit = extrapolate(rows, start, what, target)
            if fit:
                reach = (f"{name} {target:g} {unit} at about {fit['labels_for_target']:,.0f} labels"
                         if fit["labels_for_target"] else
                         f"the {name} does not fall with labels: no label count reaches {target:g} {unit}")
                lines.append(f"{NAMES[start]}: error ~ N^{-fit['exponent']:+.2f} ({fit['points']} points from "
                             f"{FIT_FROM} labels): {reach}")
    return lines


CV_EPOCHS = (25, 50, 150, 500, 1500)  # candidate schedules for `cv` (the recipe's max_epochs)


def _recipe_energy_weight() -> float:
    from mlff.config import load_yaml

    return float(load_yaml(CONFIG)["loss"]["energy_weight"])


def _candidate(start: str, committee: int) -> str:
    """The key suffix of a (start, committee) candidate ("" for the recipe's own: rows made before these existed)."""
    return "" if (start, committee) == ("xtb", 1) else f"|{start}|c{committee}"


def cv(out: Path, epochs=CV_EPOCHS, folds: int = 4, energy_weights=None, starts=("xtb",), committees=(1,)) -> list[dict]:
    """K-fold cross-validation of the fine-tuning recipe on the DFT training labels only (never the held-out
    scan): for each candidate start (``starts``: "xtb", the foundation fine-tuned; "scratch", the same architecture
    from random weights, as in the curve), committee size (``committees``; members bootstrapped, scored by their
    mean, and their force spread calibrated against the left-out errors), ``max_epochs``, energy weight of the
    loss (``energy_weights``; default the recipe's) and fold, one model trained on the other folds and scored on
    the left-out labels. Rows go to OUT/cv.jsonl as they finish (resumable); returns one summary per candidate:
    pooled force RMSE, energy RMSE and relative-energy RMSE over all left-out labels."""
    import numpy as np

    from mlff.calculator import MLFFCalculator
    from mlff.config import load_yaml
    from mlff.data.store import Dataset
    from mlff.errors import MLFFError

    weights = [_recipe_energy_weight()] if energy_weights is None else [float(w) for w in energy_weights]

    dataset = Dataset(LABELS)
    labels, hashes = dataset.read(), list(dataset.column("geometry_hash"))
    if len(labels) < 2 * folds:
        raise MLFFError(f"{len(labels)} DFT labels in {LABELS}: {folds}-fold cross-validation needs {2 * folds}")
    fold_of = np.random.default_rng(0).permutation(len(labels)) % folds  # fixed: the same folds on every run
    foundation = _cv_inputs()
    labels_key = _key(hashes, "cv" + foundation)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "cv.jsonl"
    rows = _rows(table)
    grid = [(a, c, n, w, k) for a in starts for c in committees for n in epochs for w in weights for k in range(folds)]
    for start, committee, n_epochs, weight, k in grid:
        train_idx = [i for i in range(len(labels)) if fold_of[i] != k]
        test_idx = [i for i in range(len(labels)) if fold_of[i] == k]
        suffix = _candidate(start, committee)
        key = _key([hashes[i] for i in train_idx] + ["|"] + [hashes[i] for i in test_idx],
                   f"{n_epochs}e{weight:g}{foundation}{suffix}")
        if any(r["key"] == key for r in rows):
            continue
        name = f"cv_e{n_epochs:04d}_w{weight:g}" + ("" if not suffix else f"_{start}_c{committee}")
        run_dir, subset = out / f"{name}_f{k}", out / f"cv_f{k}.h5"
        _write_subset([labels[i] for i in train_idx], [hashes[i] for i in train_idx], subset)
        spec = dict(curve_config(start, subset, run_dir, len(train_idx)), max_epochs=n_epochs, committee=committee,
                    bootstrap=committee > 1)
        spec["loss"] = dict(spec["loss"], energy_weight=weight)
        t0 = time.perf_counter()
        _train_point(run_dir, key, spec, "cv")
        calc = MLFFCalculator(run_dir / "potential", device="cpu")
        df, de, spread, worst = [], [], [], []
        for i in test_idx:
            atoms = labels[i].copy()
            atoms.calc = calc
            diff = atoms.get_forces() - labels[i].get_forces()
            df.append(diff.ravel())
            de.append((atoms.get_potential_energy() - labels[i].get_potential_energy()) / len(atoms))
            if committee > 1:  # the committee's largest force spread and largest error of the structure
                spread.append(float(calc.results["forces_std"].max()))
                worst.append(float(np.linalg.norm(diff, axis=1).max()))
        row = {"max_epochs": n_epochs, "energy_weight": weight, "fold": k, "key": key, "labels": labels_key,
               "start": start, "committee": committee, "n_train": len(train_idx), "n_test": len(test_idx),
               "forces_sq_sum": float(np.sum(np.concatenate(df) ** 2)), "forces_n": int(sum(map(len, df))),
               "energy_err_meV_atom": [1000 * e for e in de], "n_atoms": [len(labels[i]) for i in test_idx],
               "spread_max_eV_A": spread, "error_max_eV_A": worst, "wall_s": round(time.perf_counter() - t0, 1)}
        rows = [r for r in rows if not (r["max_epochs"] == n_epochs and r.get("energy_weight") == weight
                                        and r["fold"] == k and _candidate(r.get("start", "xtb"), r.get("committee", 1))
                                        == suffix)] + [row]
        table.write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"cv {start} x{committee}, {n_epochs:5d} epochs, energy weight {weight:g}, fold {k}: F RMSE "
              f"{1000 * np.sqrt(row['forces_sq_sum'] / row['forces_n']):.1f} meV/Å on {len(test_idx)} labels",
              flush=True)
    summary = cv_summary(rows, hashes, epochs, weights, starts, committees)
    for s in summary:
        slope = "" if s.get("spread_slope") is None else f", spread calibration x{s['spread_slope']:.2f}"
        print(f"{s.get('start', 'xtb')} x{s.get('committee', 1)}, max_epochs {s['max_epochs']:5d}, energy weight {s['energy_weight']:g}: "
              f"{s['folds']}-fold CV on {len(labels)} DFT labels: F RMSE {s['cv_forces_rmse_meV_A']:.1f} meV/Å, E RMSE "
              f"{s['cv_energy_rmse_meV_atom']:.2f} meV/atom, relative E RMSE "
              f"{s['cv_relative_energy_rmse_kcal_mol']:.2f} kcal/mol{slope}")
    if summary:
        best = choose(summary)
        print(f"choice: {best.get('start', 'xtb')} x{best.get('committee', 1)}, max_epochs {best['max_epochs']}, energy weight "
              f"{best['energy_weight']:g} (the lowest relative E RMSE whose F RMSE is within {100 * FORCE_TOLERANCE:g} "
              f"% of the best); the recipe has max_epochs {load_yaml(CONFIG)['max_epochs']}, energy weight "
              f"{_recipe_energy_weight():g}")
    return summary


FORCE_TOLERANCE = 0.01  # forces may lose this much (relative) for better relative energies


def choose(summary: list[dict], force_tolerance: float = FORCE_TOLERANCE) -> dict:
    """The recipe's rule for the cross-validation's candidates: of those whose force RMSE is within
    ``force_tolerance`` (relative) of the best, the one with the lowest relative-energy RMSE (the forces are what
    MD needs; the relative energies are what the barrier needs, and energy errors cost forces little at first)."""
    cap = (1 + force_tolerance) * min(s["cv_forces_rmse_meV_A"] for s in summary)
    return min((s for s in summary if s["cv_forces_rmse_meV_A"] <= cap),
               key=lambda s: s["cv_relative_energy_rmse_kcal_mol"])


def cv_summary(rows: list[dict], hashes, epochs=None, energy_weights=None, starts=None, committees=None) -> list[dict]:
    """Per candidate (``starts`` x ``committees`` x ``epochs`` x ``energy_weights``, or every one in ``rows``) of the
    cross-validation over the labels ``hashes`` (rows of other label sets or another foundation are left out): the
    pooled force RMSE, the energy RMSE over all left-out labels, and the relative-energy RMSE: the RMSE of their
    energy errors (kcal/mol a structure) once the mean error, the one offset that relative energies do not see, is
    removed; for committees, the spread calibration: the slope of the left-out structures' largest force error
    against their largest committee spread (a line through the origin, ``mlff.learn.calibrate``)."""
    import numpy as np

    from mlff.fes.units import EV_TO_KCAL_PER_MOL
    from mlff.learn.calibrate import fit_through_origin

    rows = [dict(r, start=r.get("start", "xtb"), committee=r.get("committee", 1)) for r in rows
            if r.get("labels") == _key(hashes, "cv" + _cv_inputs())]
    if epochs is None:
        candidates = sorted({(r["start"], r["committee"], r["max_epochs"], r["energy_weight"]) for r in rows})
    else:
        weights = energy_weights or sorted({r["energy_weight"] for r in rows})
        candidates = [(a, c, n, w) for a in (starts or ("xtb",)) for c in (committees or (1,)) for n in epochs
                      for w in weights]
    summary = []
    for start, committee, n_epochs, weight in candidates:
        mine = [r for r in rows if (r["start"], r["committee"], r["max_epochs"], r["energy_weight"])
                == (start, committee, n_epochs, weight)]
        if not mine:
            continue
        e = np.concatenate([r["energy_err_meV_atom"] for r in mine])
        e_structure = np.concatenate([np.multiply(r["energy_err_meV_atom"], r["n_atoms"]) for r in mine]) / 1000
        entry = {"max_epochs": n_epochs, "energy_weight": weight, "folds": len(mine),
                 "cv_forces_rmse_meV_A": 1000 * float(np.sqrt(sum(r["forces_sq_sum"] for r in mine)
                                                               / sum(r["forces_n"] for r in mine))),
                 "cv_energy_rmse_meV_atom": float(np.sqrt(np.mean(e ** 2))),
                 "cv_relative_energy_rmse_kcal_mol": EV_TO_KCAL_PER_MOL * float(np.std(e_structure))}
        if (start, committee) != ("xtb", 1):  # the recipe's own candidates keep their old summary
            fit = fit_through_origin(np.concatenate([r.get("spread_max_eV_A", []) for r in mine]),
                                     np.concatenate([r.get("error_max_eV_A", []) for r in mine]))
            entry.update(start=start, committee=committee, spread_slope=fit["slope"])
        summary.append(entry)
    return summary


def _current(rows: list[dict], hashes, holdout_sha: str) -> list[dict]:
    """The rows that belong to the labels and the held-out scan there are now."""
    return [r for r in rows if r["n_labels"] <= len(hashes) and r["key"] == _key(hashes[:r["n_labels"]], holdout_sha)]


def _write_subset(records, hashes, path: Path) -> None:
    """``path`` holding exactly ``records`` (rewritten when it does not)."""
    from mlff.data.store import Dataset
    from mlff.learn.state import write_dataset

    if not path.is_file() or list(Dataset(path).column("geometry_hash")) != list(hashes):
        path.unlink(missing_ok=True)
        write_dataset(path, records, description=f"the first {len(records)} DFT labels of {LABELS.name}",
                      require=("energy", "forces"))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mlff.plotting import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for start, style in zip(STARTS, ("o-", "^-", "s--")):
        mine = sorted((r for r in rows if r["start"] == start), key=lambda r: r["n_labels"])
        name = NAMES[start]
        n = [r["n_labels"] for r in mine]
        axes[0].plot(n, [r["holdout_forces_rmse_meV_A"] for r in mine], style, label=name)
        axes[1].plot(n, [r["scan_max_error_kcal_mol"] for r in mine], style, label=name)
    axes[0].axhline(40, color="grey", lw=0.8, ls=":", label="target 40 meV/Å")
    axes[1].axhline(1, color="grey", lw=0.8, ls=":", label="target 1 kcal/mol")
    points = max((r["holdout_points"] for r in rows), default=0)
    for ax, what in zip(axes, ("force RMSE (meV/Å)", "relative energies: max error (kcal/mol)")):
        ax.set_xscale("symlog", linthresh=1)  # 0 labels: the foundation as it is
        ax.set_xlim(0, 1.5 * max((r["n_labels"] for r in rows), default=1))
        ax.set_yscale("log")
        ax.set_xlabel("DFT labels trained on")
        ax.set_ylabel(what)
        ax.legend(fontsize=8)
    fig.suptitle(f"Learning curve of the small-cluster MACE on the held-out DFT scan ({points} points; "
                 "B3LYP-D3(BJ)/def2-SVP, C-PCM eps 4)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def card_section(rows: list[dict], labels, schedules=()) -> str:
    """The card's "DFT labels and learning curve" section: which labels, the curve's table and (``schedules``,
    from ``cv_summary``) the cross-validation that chose the schedule."""
    from mlff.data.recipe import region_of

    lines = [f"{len(labels)} DFT labels (B3LYP-D3(BJ)/def2-SVP, C-PCM eps 4; `data/fdh-cluster/fdh_small.h5`), all "
             "trained on; the test set is the DFT held-out scan (`fdh_holdout_small.h5`, never trained on).", "",
             "| label | xi (Å) | region | geometry source | DFT wall time (s) |", "|---|---|---|---|---|"]
    for k, a in enumerate(labels):
        xi = a.info.get("xi")
        prov = a.info.get("provenance", {})
        where = f"{xi:+.2f} | {region_of(float(xi))}" if xi is not None else "- | -"
        lines.append(f"| {k} | {where} | "
                     f"{a.info.get('source', prov.get('geometry_source', '-'))} | {prov.get('wall_s', float('nan')):.0f} |")
    lines += ["", "Learning curve (`python workflows/fdh_dft_finetune.py curve`; one model per point, scored on the "
              "held-out DFT scan; `dft_learning_curve.png`):", "",
              "| DFT labels | start | held-out F RMSE (meV/Å) | held-out E RMSE (meV/atom) | relative E max error (kcal/mol) | train F RMSE (meV/Å) |",
              "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["n_labels"], r["start"])):
        start = {"xtb": "GFN2-xTB foundation", "replay": "GFN2-xTB foundation, xTB replay head"}.get(r["start"], "scratch")
        lines.append(f"| {r['n_labels']} | {start} | {r['holdout_forces_rmse_meV_A']:.1f} | "
                     f"{r['holdout_energy_rmse_meV_atom']:.2f} | {r['scan_max_error_kcal_mol']:.2f} | "
                     f"{r['train_forces_rmse_meV_A']:.1f} |")
    budget = budget_lines(rows)
    if budget:
        lines += ["", "How far the labels go (`extrapolate`: a power law fitted to the curve, one model per point; the "
                  "committee does better than one model):", ""] + [f"- {b}" for b in budget]
    if schedules:
        lines += ["", f"Schedule and loss weights (`python workflows/fdh_dft_finetune.py cv`): {schedules[0]['folds']}"
                  f"-fold cross-validation on the {len(labels)} training labels (never the held-out scan), one model "
                  "per fold, errors pooled over the left-out labels (relative E: the energy errors a structure with "
                  "their mean removed):", "",
                  "| max_epochs | energy weight | CV F RMSE (meV/Å) | CV E RMSE (meV/atom) "
                  "| CV relative E RMSE (kcal/mol) |",
                  "|---|---|---|---|---|"]
        lines += [f"| {s['max_epochs']} | {s['energy_weight']:g} | {s['cv_forces_rmse_meV_A']:.1f} | "
                  f"{s['cv_energy_rmse_meV_atom']:.2f} | {s['cv_relative_energy_rmse_kcal_mol']:.2f} |"
                  for s in schedules]
    return "\n".join(lines)


def card(potential_dir: Path, out: Path) -> None:
    from mlff.data.store import Dataset
    from mlff.errors import MLFFError
    from mlff.models.store import set_card_section

    path = potential_dir / "MODEL_CARD.md"
    if not path.is_file():
        raise MLFFError(f"no model card at {path}: train it first (`mlff train workflows/fdh_dft_finetune.yaml`)")
    rows = _rows(out / "curve.jsonl")
    if not rows:
        raise MLFFError(f"no learning curve in {out}: run `python workflows/fdh_dft_finetune.py curve` first")
    dataset = Dataset(LABELS)
    current = _current(rows, list(dataset.column("geometry_hash")), _curve_inputs(Dataset(HOLDOUT)))
    if len(current) < len(rows) or not any(r["n_labels"] == len(dataset) for r in current):
        raise MLFFError(f"the learning curve in {out} is older than the DFT labels, the held-out scan, the "
                        "foundation or the recipe: run `python workflows/fdh_dft_finetune.py curve` again")
    schedules = cv_summary(_rows(out / "cv.jsonl"), list(dataset.column("geometry_hash")))
    set_card_section(path, "DFT labels and learning curve", card_section(rows, dataset.read(), schedules))
    shutil.copy2(out / "learning_curve.png", potential_dir / "dft_learning_curve.png")
    print(f"wrote the DFT labels and the learning curve into {path}")


def main(argv=None) -> int:
    from mlff.errors import script_exit

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    c = sub.add_parser("curve", help="train and score the learning curve (resumable)")
    c.add_argument("--out", default=str(OUT))
    c.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="label counts (all labels are always added)")
    c.add_argument("--starts", nargs="+", choices=STARTS, default=list(STARTS), help="which starts to train")
    v = sub.add_parser("cv", help="choose the schedule and energy weight: K-fold cross-validation on the training "
                       "labels (resumable)")
    v.add_argument("--out", default=str(OUT))
    v.add_argument("--epochs", type=int, nargs="+", default=list(CV_EPOCHS), help="candidate max_epochs")
    v.add_argument("--folds", type=int, default=4)
    v.add_argument("--energy-weights", type=float, nargs="+", help="candidate energy weights of the loss (default: "
                   "the recipe's)")
    v.add_argument("--starts", nargs="+", choices=("xtb", "scratch", "delta"), default=["xtb"],
                   help="fine-tuned from the xTB foundation, trained from scratch, and/or a residual model on the "
                   "frozen foundation (default xtb)")
    v.add_argument("--committees", type=int, nargs="+", default=[1], help="candidate committee sizes (default 1; "
                   "members bootstrapped, scored by their mean; spreads calibrated against the left-out errors)")
    k = sub.add_parser("card", help="the labels and the learning curve into a model card")
    k.add_argument("potential")
    k.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    if args.stage == "curve":
        return script_exit("fdh_dft_finetune", curve, Path(args.out), args.sizes, args.starts)
    if args.stage == "cv":
        return script_exit("fdh_dft_finetune", cv, Path(args.out), args.epochs, args.folds, args.energy_weights,
                           args.starts, args.committees)
    return script_exit("fdh_dft_finetune", card, Path(args.potential), Path(args.out))


if __name__ == "__main__":
    raise SystemExit(main())
