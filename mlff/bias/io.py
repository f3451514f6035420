"""What a biased run leaves for free-energy analysis: ``BiasedRun``, the contract between ``mlff.bias``
(which writes run directories) and ``mlff.fes`` (which analyses them).

Units: CV values in the CV's own unit (``cv_unit``, Å for distances and xi); energies eV; springs
eV / cv_unit²; time fs; temperature K. One row per CV sample (every ``colvar_every`` MD steps); one column
per system of the batch. With Hamiltonian replica exchange the systems swap window labels, not
coordinates: ``window[t, s]`` says which bias system ``s`` felt at sample ``t``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import units

from mlff.appendonly import bad_line, complete_lines, repair_torn_tail
from mlff.errors import MLFFError

__all__ = ["BIAS_JSON", "EV_TO_KJ_PER_MOL", "BiasedRun", "ColvarWriter", "read_bias_json", "read_biased_run",
           "read_colvar", "read_hills", "write_bias_json", "write_hills"]

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
def _rows(path: Path, lines: list[tuple[int, str]]) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The ``#! FIELDS`` names and the data rows (line number, fields) of a PLUMED-style file's complete lines;
    a row whose field count differs from the header's is an error naming the line."""
    names = None
    rows = []
    for number, line in lines:
        if line.startswith("#! FIELDS"):
            if names is None:
                names = line.split()[2:]
            elif line.split()[2:] != names:
                raise bad_line(path, number, f"starts different fields ({' '.join(line.split()[2:5])} ...)")
            continue
        if not line.strip() or line.startswith("#"):
            continue
        if names is None:
            break
        parts = line.split()
        if len(parts) != len(names):
            raise bad_line(path, number, f"has {len(parts)} fields, the '#! FIELDS' header names {len(names)}")
        rows.append((number, parts))
    if names is None:
        raise MLFFError(f"{path} has no '#! FIELDS' header before its data: not a PLUMED COLVAR/HILLS file")
    return names, rows


def _table(path: Path) -> dict[str, np.ndarray]:
    """Columns of a PLUMED-style text file by field name (comment lines skipped; a torn last line skipped and
    said so; any other malformed line an error naming the line)."""
    names, rows = _rows(path, complete_lines(path))
    try:
        data = np.array([parts for _, parts in rows], dtype=np.float64).reshape(-1, len(names))
    except ValueError:
        for number, parts in rows:
            for name, value in zip(names, parts):
                try:
                    float(value)
                except ValueError:
                    raise bad_line(path, number, f"has {value!r} for field {name}, not a number") from None
        raise
    return {name: data[:, k] for k, name in enumerate(names)}


class ColvarWriter:
    """PLUMED-format COLVAR of a batch: ``#! FIELDS time step {cv}.0 .. {cv}.S-1 [window.0 ..] bias.0 ..``, one
    row per sample; time ps, bias kJ/mol. Rows are buffered (device tensors: no host sync) and written by
    ``flush``; ``restart_step`` keeps the rows up to that step of an existing file and appends after them (a
    torn last row, left by a kill during a flush, is cut off first and said so on stderr)."""

    def __init__(self, path, cv_name: str, n_systems: int, *, windows: bool, restart_step: int | None = None):
        self.path, self.windows, self.n_systems = Path(path), windows, int(n_systems)
        names = ["time", "step", *(f"{cv_name}.{s}" for s in range(n_systems))]
        names += [f"window.{s}" for s in range(n_systems)] if windows else []
        names += [f"bias.{s}" for s in range(n_systems)]
        self.fields = names
        self._rows: list = []
        header = "#! FIELDS " + " ".join(names) + "\n"
        if restart_step is None or not self.path.exists():
            self.path.write_text(header)
        else:
            self._cut_back(header, names, int(restart_step))

    def _cut_back(self, header: str, names: list[str], restart_step: int) -> None:
        repair_torn_tail(self.path)
        fields, rows = _rows(self.path, complete_lines(self.path))
        if fields != names:
            raise MLFFError(f"{self.path} has fields {fields[:4]}..., this run writes {names[:4]}...")
        kept = [header]
        for number, parts in rows:
            try:
                step = int(parts[1])
            except ValueError:
                raise bad_line(self.path, number, f"has step {parts[1]!r}, not an integer") from None
            if step <= restart_step:
                kept.append(" ".join(parts) + "\n")
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
_META_KEYS = ("kind", "temperature_K", "n_systems", "cv")


def read_bias_json(path, *, keys=_META_KEYS) -> dict:
    """A run's bias.json (``path``: the file or its run directory), with ``keys`` present; a truncated or
    damaged file is one MLFFError naming it."""
    path = Path(path)
    path = path / BIAS_JSON if path.is_dir() else path
    if not path.is_file():
        raise MLFFError(f"{path.parent} is not a biased run directory: it has no {BIAS_JSON}")
    try:
        meta = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise MLFFError(f"{path} is not text: damaged; restore it, or start the run again in a new out "
                        "directory") from None
    except json.JSONDecodeError as err:
        raise MLFFError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}): truncated "
                        "or damaged; restore it, or start the run again in a new out directory") from None
    missing = [k for k in keys if not isinstance(meta, dict) or k not in meta]
    if not missing and "cv" in keys and not (isinstance(meta["cv"], dict) and "name" in meta["cv"]):
        missing = ["cv.name"]
    if missing:
        raise MLFFError(f"{path} lacks key {missing[0]!r}: not written by mlff umbrella, or damaged")
    return meta


def write_bias_json(path, meta: dict) -> None:
    """Write bias.json whole (temporary file renamed over it): a kill leaves the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1, default=str) + "\n")
    tmp.replace(path)


def _columns(table: dict, path: Path, names: list[str]) -> np.ndarray:
    missing = [name for name in names if name not in table]
    if missing:
        raise MLFFError(f"{path} has no field {missing[0]!r}, which its run's {BIAS_JSON} implies; fields: "
                        f"{' '.join(list(table)[:6])} ...")
    return np.stack([table[name] for name in names], axis=1)


def _colvar_arrays(run: Path, meta: dict) -> dict | None:
    path = run / COLVAR
    if not path.is_file():
        return None
    table = read_colvar(path)
    n, name = int(meta["n_systems"]), meta["cv"]["name"]
    cv = _columns(table, path, [f"{name}.{s}" for s in range(n)])
    window = _columns(table, path, [f"window.{s}" for s in range(n)]) if "window.0" in table else None
    bias = _columns(table, path, [f"bias.{s}" for s in range(n)]) / EV_TO_KJ_PER_MOL
    steps = _columns(table, path, ["step", "time"])
    return {"step": steps[:, 0].astype(np.int64), "time_fs": steps[:, 1] * 1e3, "cv": cv, "window": window,
            "bias_energy": bias}


def _h5md_arrays(run: Path, meta: dict) -> dict | None:
    import h5py

    path = run / "trajectory.h5"
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r", locking=False) as f:
            return _h5md_observables(f, path)
    except OSError as err:
        raise MLFFError(f"{path} is not a readable HDF5 file ({err}): damaged; the COLVAR file holds the same CV "
                        "samples when colvar_every > 0") from None
    except KeyError as err:
        raise MLFFError(f"{path} lacks {err}: not an mlff trajectory, or damaged") from None


def _h5md_observables(f, path: Path) -> dict | None:
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
            rows = min(len(c) for c in columns)
            obs[key] = np.stack([c[:rows] for c in columns], axis=1)
    element = f["observables"][groups[0]]["cv"]
    rows = min(len(v) for v in obs.values())
    step, time_fs = element["step"][:rows], element["time"][:rows]
    keep = step >= 0  # frames whose index a crash during a flush damaged (mlff.md.h5md): left out
    if not keep.all():
        print(f"mlff: note: {path}: {int((~keep).sum())} frames lost in a crash are left out", file=sys.stderr)
    obs = {k: v[:rows][keep] for k, v in obs.items()}
    return {"step": step[keep].astype(np.int64), "time_fs": time_fs[keep], "cv": obs["cv"],
            "window": obs.get("window"), "bias_energy": obs.get("bias_energy", np.zeros_like(obs["cv"]))}


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
    meta = read_bias_json(run / BIAS_JSON)
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
