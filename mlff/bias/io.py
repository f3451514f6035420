"""What a biased run leaves for free-energy analysis: ``BiasedRun``, the contract between ``mlff.bias``
(which writes run directories) and ``mlff.fes`` (which analyses them).

Units: CV values in the CV's own unit (``cv_unit``, Å for distances and xi); energies eV; springs
eV / cv_unit²; time fs; temperature K. One row per CV sample (every ``colvar_every`` MD steps); one column
per system of the batch. With Hamiltonian replica exchange the systems swap window labels, not
coordinates: ``window[t, s]`` says which bias system ``s`` felt at sample ``t``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import units

from mlff.errors import MLFFError

__all__ = ["BIAS_JSON", "BiasedRun", "ColvarWriter", "EV_TO_KJ_PER_MOL", "read_biased_run", "read_colvar",
           "read_hills", "write_hills"]

BIAS_JSON = "bias.json"
COLVAR = "COLVAR"
EV_TO_KJ_PER_MOL = float(units.mol / units.kJ)  # PLUMED's default energy unit in COLVAR and HILLS files


@dataclass
class BiasedRun:
    kind: str  # "umbrella" (harmonic windows) or "metad" (well-tempered metadynamics)
    temperature_K: float  # thermostat temperature of every system
    cv_name: str  # e.g. "xi"
    cv_unit: str  # e.g. "A"
    step: np.ndarray  # [T] int: MD step of each sample
    time_fs: np.ndarray  # [T] float: time of each sample, fs
    cv: np.ndarray  # [T, S] float: CV value of system s at sample t
    window: np.ndarray  # [T, S] int: index (into centers/kappas) of the bias system s carried at sample t
    bias_energy: np.ndarray  # [T, S] float: bias energy (eV) system s felt at sample t
    centers: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [W] umbrella centres (cv_unit)
    kappas: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [W] springs, E = kappa/2 (s - centre)^2
    hills: dict | None = None  # metad: {"time_fs" [H], "center" [H], "sigma" [H], "height_eV" [H] (the height
    # actually added, after well-tempered scaling), "system" [H] int (-1: shared by all), "biasfactor": float}
    provenance: dict = field(default_factory=dict)  # config, software versions, potential, git commit

    def __post_init__(self):
        self.step = np.asarray(self.step, np.int64)
        self.time_fs = np.asarray(self.time_fs, np.float64)
        self.cv = np.atleast_2d(np.asarray(self.cv, np.float64))
        self.window = np.asarray(self.window, np.int64).reshape(self.cv.shape)
        self.bias_energy = np.asarray(self.bias_energy, np.float64).reshape(self.cv.shape)
        self.centers = np.asarray(self.centers, np.float64)
        self.kappas = np.asarray(self.kappas, np.float64)

    @property
    def n_samples(self) -> int:
        return self.cv.shape[0]

    @property
    def n_systems(self) -> int:
        return self.cv.shape[1]

    def samples_of_window(self, w: int) -> np.ndarray:
        """CV samples [n] of window ``w`` in time order (all systems that carried it)."""
        t, s = np.nonzero(self.window == w)
        order = np.lexsort((s, t))
        return self.cv[t[order], s[order]]


# -- PLUMED files: COLVAR and HILLS (time ps, energies kJ/mol, the CV in its own unit) -------------------
def _fields(path: Path) -> list[str]:
    with open(path) as handle:
        for line in handle:
            if line.startswith("#! FIELDS"):
                return line.split()[2:]
    raise MLFFError(f"{path} has no '#! FIELDS' header: not a PLUMED COLVAR/HILLS file")


def _table(path: Path) -> dict[str, np.ndarray]:
    """Columns of a PLUMED-style text file by field name (lines starting with # skipped)."""
    names = _fields(path)
    rows = [line.split() for line in open(path) if line.strip() and not line.startswith("#")]
    data = np.array(rows, dtype=np.float64).reshape(-1, len(names)) if rows else np.zeros((0, len(names)))
    return {name: data[:, k] for k, name in enumerate(names)}


class ColvarWriter:
    """PLUMED-format COLVAR of a batch: ``#! FIELDS time step {cv}.0 .. {cv}.S-1 [window.0 ..] bias.0 ..``, one
    row per sample; time ps, bias kJ/mol. Rows are buffered (device tensors: no host sync) and written by
    ``flush``; ``restart_step`` keeps the rows up to that step of an existing file and appends after them."""

    def __init__(self, path, cv_name: str, n_systems: int, *, windows: bool, restart_step: int | None = None):
        self.path, self.windows, self.n_systems = Path(path), windows, int(n_systems)
        names = ["time", "step", *(f"{cv_name}.{s}" for s in range(n_systems))]
        names += [f"window.{s}" for s in range(n_systems)] if windows else []
        names += [f"bias.{s}" for s in range(n_systems)]
        self.fields = names
        self._rows: list = []
        if restart_step is None or not self.path.exists():
            self.path.write_text("#! FIELDS " + " ".join(names) + "\n")
        else:
            if _fields(self.path) != names:
                raise MLFFError(f"{self.path} has fields {_fields(self.path)[:4]}..., this run writes {names[:4]}...")
            lines = open(self.path).read().splitlines(keepends=True)
            kept = [ln for ln in lines if ln.startswith("#") or not ln.strip() or int(ln.split()[1]) <= restart_step]
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(kept))
            tmp.replace(self.path)

    def add(self, step: int, time_fs: float, cv, window, bias_eV) -> None:
        self._rows.append((int(step), float(time_fs), cv.detach().clone(),
                           None if window is None else window.detach().clone(), bias_eV.detach().clone()))

    def flush(self) -> dict | None:
        """Write the buffered rows; returns them as arrays (step [k], cv [k,S], window [k,S] or None, bias_eV)."""
        if not self._rows:
            return None
        import torch

        rows, self._rows = self._rows, []
        cv = torch.stack([r[2] for r in rows]).double().cpu().numpy()
        bias = torch.stack([r[4] for r in rows]).double().cpu().numpy() * EV_TO_KJ_PER_MOL
        window = torch.stack([r[3] for r in rows]).cpu().numpy() if self.windows else None
        lines = []
        for k, (step, time_fs, *_rest) in enumerate(rows):
            parts = [f"{time_fs * 1e-3:.9f}", str(step), *(f"{v:.12g}" for v in cv[k])]
            if window is not None:
                parts += [str(int(w)) for w in window[k]]
            parts += [f"{v:.12g}" for v in bias[k]]
            lines.append(" ".join(parts) + "\n")
        with open(self.path, "a") as handle:
            handle.writelines(lines)
        return {"step": np.array([r[0] for r in rows]), "cv": cv, "window": window, "bias_eV": bias / EV_TO_KJ_PER_MOL}


def read_colvar(path) -> dict[str, np.ndarray]:
    """A COLVAR file as columns by field name (PLUMED units as written)."""
    path = Path(path)
    if not path.is_file():
        raise MLFFError(f"no COLVAR file at {path}")
    return _table(path)


def write_hills(path, hills: dict, cv_name: str, *, append: bool = False) -> None:
    """A PLUMED HILLS file (``plumed sum_hills --hills FILE`` reads it): time ps, centre, sigma, height kJ/mol,
    biasf. ``hills`` as in ``BiasedRun.hills`` (heights eV as added); for well-tempered runs the stored
    height is height x biasf/(biasf - 1), PLUMED's convention."""
    path = Path(path)
    biasf = float(hills["biasfactor"])
    scale = biasf / (biasf - 1.0) if np.isfinite(biasf) else 1.0
    new = append and path.exists()
    with open(path, "a" if new else "w") as handle:
        if not new:
            handle.write(f"#! FIELDS time {cv_name} sigma_{cv_name} height biasf\n#! SET multivariate false\n")
        shown = biasf if np.isfinite(biasf) else 1.0
        for t, c, w, h in zip(hills["time_fs"], hills["center"], hills["sigma"], hills["height_eV"]):
            handle.write(f"{t * 1e-3:.9f} {c:.12g} {w:.12g} {h * scale * EV_TO_KJ_PER_MOL:.12g} {shown:.6g}\n")


def read_hills(path) -> dict:
    """A HILLS file back in BiasedRun.hills form (time fs, heights eV as added: the biasf scaling undone)."""
    path = Path(path)
    if not path.is_file():
        raise MLFFError(f"no HILLS file at {path}")
    table = _table(path)
    names = list(table)
    if len(names) != 5 or names[0] != "time" or names[3] != "height" or names[4] != "biasf":
        raise MLFFError(f"{path}: expected fields 'time CV sigma_CV height biasf', got {' '.join(names)}")
    biasf = table["biasf"]
    gamma = float(biasf[0]) if len(biasf) else float("inf")
    scale = gamma / (gamma - 1.0) if gamma > 1.0 else 1.0
    return {"time_fs": table["time"] * 1e3, "center": table[names[1]], "sigma": table[names[2]],
            "height_eV": table["height"] / scale / EV_TO_KJ_PER_MOL, "system": np.full(len(biasf), -1),
            "biasfactor": gamma if gamma > 1.0 else float("inf")}


# -- run directories -----------------------------------------------------------------------------------
def _colvar_arrays(run: Path, meta: dict) -> dict | None:
    path = run / COLVAR
    if not path.is_file():
        return None
    table = read_colvar(path)
    n, name = meta["n_systems"], meta["cv"]["name"]
    cv = np.stack([table[f"{name}.{s}"] for s in range(n)], axis=1)
    window = np.stack([table[f"window.{s}"] for s in range(n)], axis=1) if "window.0" in table else None
    bias = np.stack([table[f"bias.{s}"] for s in range(n)], axis=1) / EV_TO_KJ_PER_MOL
    return {"step": table["step"].astype(np.int64), "time_fs": table["time"] * 1e3, "cv": cv, "window": window,
            "bias_energy": bias}


def _h5md_arrays(run: Path, meta: dict) -> dict | None:
    import h5py

    path = run / "trajectory.h5"
    if not path.is_file():
        return None
    with h5py.File(path, "r", locking=False) as f:
        groups = sorted(f.get("observables", {}))
        if not groups or "cv" not in f["observables"][groups[0]]:
            return None
        marks = f["parameters/mlff/frames"].attrs if "parameters/mlff/frames" in f else {}
        obs = {}
        for key in ("cv", "window", "bias_energy"):
            if key in f["observables"][groups[0]]:
                columns = []
                for g in groups:
                    value = f["observables"][g][key]["value"]
                    columns.append(value[:int(marks.get(g, value.shape[0]))])
                obs[key] = np.stack(columns, axis=1)
        element = f["observables"][groups[0]]["cv"]
        rows = obs["cv"].shape[0]
        step, time_fs = element["step"][:rows], element["time"][:rows]
    return {"step": step.astype(np.int64), "time_fs": time_fs, "cv": obs["cv"], "window": obs.get("window"),
            "bias_energy": obs.get("bias_energy", np.zeros_like(obs["cv"]))}


def _hills(run: Path, meta: dict) -> dict | None:
    files = meta.get("hills_files") or []
    if not files:
        return None
    parts = []
    for k, name in enumerate(files):
        h = read_hills(run / name)
        h["system"] = np.full(len(h["center"]), -1 if meta.get("shared_hills") else k)
        parts.append(h)
    out = {key: np.concatenate([p[key] for p in parts]) for key in ("time_fs", "center", "sigma", "height_eV", "system")}
    out["biasfactor"] = parts[0]["biasfactor"]
    return out


def read_biased_run(run_dir, *, include_equilibration: bool = False) -> BiasedRun:
    """The ``BiasedRun`` of a run directory written by a biased run (``mlff umbrella``): bias.json for the
    kind, CV, windows and temperature; the CV samples from COLVAR (every ``colvar_every`` steps), else from the
    H5MD trajectory's observables; hills from the HILLS files. Samples of the first ``equilibration_steps``
    steps (step <= equilibration_steps when that is > 0) are left out unless ``include_equilibration``."""
    run = Path(run_dir)
    if not (run / BIAS_JSON).is_file():
        raise MLFFError(f"{run} is not a biased run directory: it has no {BIAS_JSON}")
    meta = json.loads((run / BIAS_JSON).read_text())
    data = _colvar_arrays(run, meta) or _h5md_arrays(run, meta)
    if data is None or len(data["step"]) == 0:
        raise MLFFError(f"{run} has no CV data: neither a COLVAR file nor CV observables in trajectory.h5")
    keep = np.ones(len(data["step"]), dtype=bool)
    equilibration = int(meta.get("equilibration_steps", 0))
    if equilibration > 0 and not include_equilibration:
        keep = data["step"] > equilibration
    n = meta["n_systems"]
    window = data["window"]
    if window is None:  # metaD: each system its own hills (or all one shared bias)
        window = np.zeros_like(data["cv"], dtype=np.int64) if meta.get("shared_hills") else \
            np.broadcast_to(np.arange(n), data["cv"].shape)
    provenance = {k: meta[k] for k in ("provenance", "config", "potential", "terms", "exchange", "equilibration_steps",
                                       "colvar_every", "timestep_fs") if k in meta}
    return BiasedRun(kind=meta["kind"], temperature_K=float(meta["temperature_K"]), cv_name=meta["cv"]["name"],
                     cv_unit=meta["cv"].get("unit", "A"), step=data["step"][keep], time_fs=data["time_fs"][keep],
                     cv=data["cv"][keep], window=np.asarray(window)[keep].astype(np.int64),
                     bias_energy=data["bias_energy"][keep], centers=np.asarray(meta.get("centers", [])),
                     kappas=np.asarray(meta.get("kappas", [])), hills=_hills(run, meta), provenance=provenance)
