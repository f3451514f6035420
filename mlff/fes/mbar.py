"""MBAR for harmonic umbrella windows, as functions of arrays (pymbar does the solving).

Reduced potentials: the physical energy is common to every window, so it cancels from MBAR's equations and the
reduced potential of sample n in window k is only its bias, ``u_kn[k, n] = beta * kappa_k / 2 * (x_n - c_k)**2``;
the unbiased state has ``u_n = 0``. Profiles are histogram free energies on bins, ``f_i = -ln p_i`` with ``p_i`` the
MBAR (unbiased) probability of bin i, normalised over all samples: dimensionless (units of kT).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlff.errors import MLFFError
from mlff.fes._pymbar import pymbar

__all__ = ["MBARFit", "reduced_bias", "fit_mbar", "newton_mbar", "bin_profile", "analytic_covariance", "bootstrap_profiles",
           "neighbour_overlap"]


@dataclass
class MBARFit:
    x_n: np.ndarray  # [N] CV samples, window after window
    N_k: np.ndarray  # [K] samples per window
    u_kn: np.ndarray  # [K, N] reduced bias of every sample in every window
    f_k: np.ndarray  # [K] reduced free energies of the windows (f_0 = 0)
    log_w: np.ndarray  # [N] normalised log weights of the samples in the unbiased state (logsumexp = 0)
    mbar: object  # the pymbar.MBAR instance (None in bootstrap fits)


def reduced_bias(x_n: np.ndarray, centers: np.ndarray, kappas: np.ndarray, beta_per_eV: float) -> np.ndarray:
    """[K, N] = beta * kappa_k / 2 * (x_n - c_k)^2 (kappa in eV / cv_unit^2, beta in 1/eV)."""
    x = np.asarray(x_n, np.float64)[None, :]
    return beta_per_eV * 0.5 * np.asarray(kappas, np.float64)[:, None] * (x - np.asarray(centers, np.float64)[:, None]) ** 2


def _lse(a: np.ndarray, axis: int) -> np.ndarray:
    """log-sum-exp along ``axis`` (finite inputs; faster than scipy's general one)."""
    top = a.max(axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.exp(a - top).sum(axis=axis))


def _log_denominator(u_kn, N_k, f_k) -> np.ndarray:
    """[N] ln sum_k N_k exp(f_k - u_kn)."""
    return _lse(np.log(N_k)[:, None] + f_k[:, None] - u_kn, axis=0)


def _unbiased_log_weights(u_kn, N_k, f_k) -> np.ndarray:
    log_w = -_log_denominator(u_kn, N_k, f_k)
    return log_w - _lse(log_w, axis=0)


def _self_consistency(u_kn, N_k, f_k) -> float:
    """max_k |f_k - f_k'|: one self-consistent MBAR iteration away from the solution (0 at convergence)."""
    f_new = -_lse(-u_kn - _log_denominator(u_kn, N_k, f_k)[None, :], axis=1)
    return float(np.max(np.abs((f_new - f_new[0]) - (f_k - f_k[0]))))


def newton_mbar(u_kn, N_k, f_init, *, max_iterations: int = 50, tolerance: float = 1e-10) -> np.ndarray | None:
    """MBAR's f_k by Newton's method on its convex objective, from a nearby start (f_0 = 0); None if it stalls.

    Used for bootstrap refits, which start from the full-data solution and converge in a few steps;
    the main fit is pymbar's. Objective: sum_n ln sum_k N_k exp(f_k - u_kn) - sum_k N_k f_k.
    """
    N_k = np.asarray(N_k, np.float64)
    log_N = np.log(N_k)[:, None]

    def evaluate(f_):
        a = log_N + f_[:, None] - u_kn
        top = a.max(axis=0)
        e = np.exp(a - top)
        denominator = e.sum(axis=0)
        value = float(np.sum(top + np.log(denominator)) - N_k @ f_)
        return value, e / denominator  # N_k W_nk [K, N]

    f = np.asarray(f_init, np.float64) - f_init[0]
    value, NW = evaluate(f)
    for _ in range(max_iterations):
        column = NW.sum(axis=1)  # N_k sum_n W_nk
        gradient = column - N_k
        hessian = np.diag(column) - NW @ NW.T
        try:
            step = np.concatenate([[0.0], np.linalg.solve(hessian[1:, 1:], -gradient[1:])])
        except np.linalg.LinAlgError:
            return None
        for _ in range(30):  # backtracking line search keeps every step downhill
            trial, trial_NW = evaluate(f + step)
            if trial <= value + 1e-12 * abs(value):
                break
            step *= 0.5
        f, value, NW = f + step, trial, trial_NW
        if np.max(np.abs(step)) < tolerance:
            return f
    return None


def fit_mbar(samples: list[np.ndarray], centers, kappas, beta_per_eV: float, *, initial_f_k=None,
             keep_mbar: bool = True, tolerance: float = 1e-5) -> MBARFit:
    """Solve MBAR for umbrella windows; ``samples[k]`` are the decorrelated CV samples of window k.

    With ``keep_mbar`` (the main fit) pymbar solves; without (bootstrap refits from ``initial_f_k``) a few Newton
    steps do, falling back to pymbar if they stall. pymbar only logs when its solvers fail; we check the
    self-consistent equations ourselves and raise.
    """
    N_k = np.array([len(s) for s in samples], dtype=np.int64)
    x_n = np.concatenate([np.asarray(s, np.float64) for s in samples])
    u_kn = reduced_bias(x_n, centers, kappas, beta_per_eV)
    f_k, mbar = None, None
    if not keep_mbar and initial_f_k is not None:
        f_k = newton_mbar(u_kn, N_k, np.asarray(initial_f_k, np.float64))
    if f_k is None:
        state = np.random.get_state()  # pymbar 4.0 reseeds numpy's global generator when given no rseed
        try:
            with np.errstate(all="ignore"):
                mbar = pymbar().MBAR(u_kn, N_k, initial_f_k=initial_f_k)
        except Exception as err:  # pymbar raises ParameterError/LinAlgError/FloatingPointError on degenerate input
            raise MLFFError(f"MBAR failed on {len(N_k)} windows, {N_k.sum()} samples: {err}") from err
        finally:
            np.random.set_state(state)
        f_k = np.asarray(mbar.f_k, np.float64)
    residual = _self_consistency(u_kn, N_k, f_k) if np.all(np.isfinite(f_k)) else np.inf
    if not residual < tolerance:
        raise MLFFError(f"MBAR did not converge (self-consistency residual {residual:.2e} kT > {tolerance:g}): the "
                        "windows probably do not overlap; add windows in the gaps flagged by the overlap check")
    return MBARFit(x_n, N_k, u_kn, f_k, _unbiased_log_weights(u_kn, N_k, f_k), mbar if keep_mbar else None)


def bin_profile(x_n: np.ndarray, log_w: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(f_i [B], counts [B])``: f_i = -ln(sum of normalised weights in bin i); NaN for empty bins."""
    index = np.digitize(x_n, edges) - 1
    inside = (index >= 0) & (index < len(edges) - 1)
    B = len(edges) - 1
    counts = np.bincount(index[inside], minlength=B)
    top = log_w[inside].max()
    mass = np.bincount(index[inside], weights=np.exp(log_w[inside] - top), minlength=B)
    with np.errstate(divide="ignore"):
        f = -(np.log(mass) + top)
    f[counts == 0] = np.nan
    return f, counts


def analytic_covariance(fit: MBARFit, edges: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """[B, B] asymptotic covariance of the bin free energies f_i (kT^2); NaN rows/columns for empty bins.

    The bin probabilities are MBAR expectations of bin indicators in the unbiased state
    (``MBAR.compute_multiple_expectations``); cov(f_i, f_j) = cov(p_i, p_j) / (p_i p_j).
    """
    occupied = np.nonzero(counts)[0]
    index = np.digitize(fit.x_n, edges) - 1
    A_in = (index[None, :] == occupied[:, None]).astype(np.float64)  # [I, N]
    with np.errstate(divide="ignore"):  # pymbar takes the log of the zero indicator values
        out = fit.mbar.compute_multiple_expectations(A_in, np.zeros(fit.x_n.size), compute_uncertainty=True,
                                                     return_theta=True)
    I = occupied.size
    theta = out["Theta"]
    cov_p = theta[:I, :I] + theta[I:, I:] - theta[:I, I:] - theta[I:, :I]
    p = np.asarray(out["mu"], np.float64)
    cov = np.full((len(counts), len(counts)), np.nan)
    cov[np.ix_(occupied, occupied)] = cov_p / np.outer(p, p)
    return cov


def bootstrap_profiles(samples: list[np.ndarray], centers, kappas, beta_per_eV: float, edges: np.ndarray,
                       f_k: np.ndarray, n_bootstraps: int, seed: int) -> np.ndarray:
    """[n_bootstraps, B] bin free energies f_i from MBAR on samples resampled with replacement within each window.

    Deterministic for a given ``seed`` (numpy PCG64). A bin left empty by a resample is NaN in that row.
    """
    rng = np.random.default_rng(seed)
    out = np.full((n_bootstraps, len(edges) - 1), np.nan)
    for b in range(n_bootstraps):
        resampled = [s[rng.integers(0, len(s), len(s))] for s in samples]
        fit = fit_mbar(resampled, centers, kappas, beta_per_eV, initial_f_k=f_k, keep_mbar=False)
        out[b] = bin_profile(fit.x_n, fit.log_w, edges)[0]
    return out


def neighbour_overlap(overlap: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(order [K], O_nb [K-1])``: windows sorted by centre and the overlap O[i, j] of each neighbouring pair.

    O is the MBAR overlap matrix (rows sum to 1; O[i, j] is the probability that a sample of window i is
    attributed to window j); the pair value is the smaller of O[i, j] and O[j, i].
    """
    order = np.argsort(centers, kind="stable")
    a, b = order[:-1], order[1:]
    return order, np.minimum(overlap[a, b], overlap[b, a])
