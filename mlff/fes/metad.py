"""Well-tempered metadynamics: the profile from the hills and by reweighting (Tiwary-Parrinello c(t)).

Hills: V(s, t) = sum over hills added up to t of h_i exp(-(s - c_i)^2 / (2 sigma_i^2)), with h_i the height
*actually added* (after the well-tempered scaling; BiasedRun.hills["height_eV"]). With bias factor gamma the
long-time bias is V(s) = -(1 - 1/gamma) F(s), so

    from the hills:   F(s) = -(gamma / (gamma - 1)) V(s, t_end)          (plain metaD, gamma = inf: F = -V)
    by reweighting:   w_t = exp(beta (V(s_t, t) - c(t))),
                      c(t) = kT ln [ int exp(gamma/(gamma-1) beta V(s,t)) ds / int exp(beta V(s,t)/(gamma-1)) ds ]

(Tiwary & Parrinello, J. Phys. Chem. B 119, 736 (2015)); F(bin) = -kT ln sum_t w_t [s_t in bin] on samples after
a discarded transient, with a bootstrap over contiguous time blocks of each system for the error bars. V(s_t, t) is the
bias the run recorded (BiasedRun.bias_energy), and c(t) is computed from the hills added strictly before t (the
bias at step t is evaluated before that step's hill is added, as in PLUMED's COLVAR). Hills with system -1 are shared by every system (multiple
walkers); per-system hills make one bias per system, and the hills profile is their mean with the spread of the
walkers as error. All free energies in kT here.
"""

from __future__ import annotations

import math

import numpy as np

from mlff.errors import MLFFError

__all__ = ["check_hills", "bias_on_grid", "hills_profile", "ct_offsets", "reweighted_profile", "hill_groups"]

_KEYS = ("time_fs", "center", "sigma", "height_eV", "system")


def check_hills(hills: dict | None) -> dict:
    """Validated hills as float/int numpy arrays sorted by time, plus ``gamma`` (math.inf for plain metaD)."""
    if not hills:
        raise MLFFError("metad run without hills; expected BiasedRun.hills with time_fs, center, sigma, height_eV")
    missing = [k for k in ("time_fs", "center", "sigma", "height_eV") if k not in hills]
    if missing:
        raise MLFFError(f"metad hills lack {missing[0]!r}; expected keys {', '.join(_KEYS)}, biasfactor")
    out = {k: np.asarray(hills[k], np.float64).reshape(-1) for k in ("time_fs", "center", "sigma", "height_eV")}
    H = out["time_fs"].size
    out["system"] = np.asarray(hills.get("system", np.full(H, -1)), np.int64).reshape(-1)
    if H == 0 or any(v.size != H for v in out.values()):
        raise MLFFError(f"metad hills: {H} times but arrays of lengths {[v.size for v in out.values()]}; "
                        "expected one entry per hill, at least one hill")
    if np.any(out["sigma"] <= 0) or not np.all(np.isfinite(out["height_eV"])):
        raise MLFFError("metad hills: expected sigma > 0 and finite heights")
    gamma = hills.get("biasfactor")
    gamma = math.inf if gamma is None or not np.isfinite(gamma) else float(gamma)
    if gamma <= 1.0:
        raise MLFFError(f"metad bias factor {gamma}; expected > 1 (or none for plain metaD)")
    order = np.argsort(out["time_fs"], kind="stable")
    out = {k: v[order] for k, v in out.items()}
    out["gamma"] = gamma
    return out


def hill_groups(hills: dict, n_systems: int) -> list[tuple[list[int], np.ndarray]]:
    """``[(systems, hill_mask)]``: one bias per group of systems. Shared hills (-1) count in every group."""
    own = sorted(int(s) for s in np.unique(hills["system"]) if s >= 0)
    shared = hills["system"] < 0
    if not own:
        return [(list(range(n_systems)), shared)]
    if max(own) >= n_systems:
        raise MLFFError(f"metad hills name system {max(own)}; the run has {n_systems} system(s)")
    return [([s], shared | (hills["system"] == s)) for s in own]


def bias_on_grid(grid: np.ndarray, center: np.ndarray, sigma: np.ndarray, height: np.ndarray,
                 chunk: int = 2048) -> np.ndarray:
    """[G] sum of Gaussian hills on ``grid`` (eV), in chunks of hills."""
    V = np.zeros(grid.size)
    for a in range(0, center.size, chunk):
        d = (grid[None, :] - center[a:a + chunk, None]) / sigma[a:a + chunk, None]
        V += height[a:a + chunk] @ np.exp(-0.5 * d * d)
    return V


def _factor(gamma: float) -> float:
    return 1.0 if math.isinf(gamma) else gamma / (gamma - 1.0)


def hills_profile(grid, hills: dict, mask: np.ndarray, kT: float, t_end_fs: float | None = None) -> np.ndarray:
    """F(grid) in kT from the hills of ``mask`` added up to ``t_end_fs`` (all when None), lowest point 0."""
    use = mask & (hills["time_fs"] <= (np.inf if t_end_fs is None else t_end_fs))
    V = bias_on_grid(grid, hills["center"][use], hills["sigma"][use], hills["height_eV"][use])
    F = -_factor(hills["gamma"]) * V / kT
    return F - F.min()


def ct_offsets(grid, hills: dict, mask: np.ndarray, kT: float, chunk: int = 256) -> np.ndarray:
    """[H_mask + 1] c(t) in eV after 0, 1, 2, ... of the hills of ``mask`` (in time order)."""
    gamma = hills["gamma"]
    a, b = _factor(gamma), (0.0 if math.isinf(gamma) else 1.0 / (gamma - 1.0))
    center, sigma, height = (hills[k][mask] for k in ("center", "sigma", "height_eV"))
    dx = np.gradient(grid)
    out = [0.0]
    V = np.zeros(grid.size)
    for s in range(0, center.size, chunk):
        d = (grid[None, :] - center[s:s + chunk, None]) / sigma[s:s + chunk, None]
        Vs = V[None, :] + np.cumsum(height[s:s + chunk, None] * np.exp(-0.5 * d * d), axis=0)  # [c, G]
        top_a = (a * Vs / kT).max(axis=1, keepdims=True)
        top_b = (b * Vs / kT).max(axis=1, keepdims=True)
        num = np.log(np.exp(a * Vs / kT - top_a) @ dx) + top_a[:, 0]
        den = np.log(np.exp(b * Vs / kT - top_b) @ dx) + top_b[:, 0]
        out.extend((kT * (num - den)).tolist())
        V = Vs[-1]
    return np.asarray(out)


def reweighted_profile(cv: np.ndarray, log_w: np.ndarray, edges: np.ndarray, blocks: int, n_bootstraps: int,
                       seed: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """``(f [B], rows [n_bootstraps, B] or None, counts [B])``: -ln p of each bin (kT, p normalised over the bins)
    from weighted samples ``cv`` [T, S], ``log_w`` [T, S] in time order; the rows resample the ``blocks`` x S units
    (a contiguous time block of one system) with replacement: a block bootstrap (blocks longer than the correlation
    time keep it honest) that also sees the spread between walkers."""
    B = len(edges) - 1
    T = cv.shape[0]
    index = np.digitize(cv, edges) - 1
    inside = (index >= 0) & (index < B) & np.isfinite(log_w) & np.isfinite(cv)
    if not inside.any():
        raise MLFFError("no metaD samples inside the profile range; check cv_range")
    top = log_w[inside].max()
    w = np.where(inside, np.exp(np.where(inside, log_w, top) - top), 0.0)
    bins = np.where(inside, index, 0)
    bounds = np.linspace(0, T, blocks + 1).astype(int)
    mass = np.stack([np.bincount(bins[a:b, s], weights=w[a:b, s], minlength=B)
                     for a, b in zip(bounds[:-1], bounds[1:]) for s in range(cv.shape[1])])  # [blocks * S, B]
    counts = np.bincount(bins[inside].ravel(), minlength=B)

    def minus_log_p(m):
        with np.errstate(divide="ignore", invalid="ignore"):
            f = -np.log(m / m.sum())
        f[~np.isfinite(f)] = np.nan
        return f

    rows = None
    if n_bootstraps:
        rng = np.random.default_rng(seed)
        units = mass.shape[0]
        rows = np.stack([minus_log_p(mass[rng.integers(0, units, units)].sum(axis=0)) for _ in range(n_bootstraps)])
    return minus_log_p(mass.sum(axis=0)), rows, counts
