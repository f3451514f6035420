"""Model free-energy surfaces with exact answers, and exact samplers of their umbrella windows.

Samples come from each window's biased Boltzmann density by inverse-CDF sampling on a fine grid (exact up to
the grid, cheap); a Gaussian-copula AR(1) gives correlated series with the same exact marginal. Energies eV,
CV in Å, temperature 300 K.
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import trapezoid
from scipy.special import ndtr

from mlff.bias.io import BiasedRun
from mlff.fes.units import kT_eV

T_K = 300.0
KT = kT_eV(T_K)


def double_well(x, barrier_kT=5.0, tilt_kT=1.0):
    """U(x) in eV: barrier_kT * kT * (x^2 - 1)^2 + tilt_kT * kT * x (minima near x = -1 and +1 Å)."""
    x = np.asarray(x, np.float64)
    return KT * (barrier_kT * (x ** 2 - 1.0) ** 2 + tilt_kT * x)


def mueller_brown_like(x, y):
    """A Mueller-Brown-like 2D surface in eV (the four Gaussian terms of Mueller-Brown with A in kT: wells of about -10 kT)."""
    A = np.array([-10.0, -5.0, -8.5, 0.75])
    a = np.array([-1.0, -1.0, -6.5, 0.7])
    b = np.array([0.0, 0.0, 11.0, 0.6])
    c = np.array([-10.0, -10.0, -6.5, 0.7])
    x0 = np.array([1.0, 0.0, -0.5, -1.0])
    y0 = np.array([0.0, 0.5, 1.5, 1.0])
    x = np.asarray(x, np.float64)[..., None]
    y = np.asarray(y, np.float64)[..., None]
    dx, dy = x - x0, y - y0
    return KT * np.sum(A * np.exp(a * dx ** 2 + b * dx * dy + c * dy ** 2), axis=-1)


class GridSampler:
    """Exact samples of exp(-U_eff/kT) on a fine 1D grid (inverse CDF with linear interpolation)."""

    def __init__(self, grid, u_eff_eV):
        grid = np.asarray(grid, np.float64)
        logp = -(u_eff_eV - np.min(u_eff_eV)) / KT
        p = np.exp(logp)
        cdf = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * np.diff(grid))])
        self.grid, self.cdf = grid, cdf / cdf[-1]

    def quantile(self, u):
        return np.interp(u, self.cdf, self.grid)

    def independent(self, rng, n):
        return self.quantile(rng.random(n))

    def correlated(self, rng, n, phi):
        """AR(1) in a Gaussian copula: exact marginal, correlation time about (1 + phi) / (1 - phi) samples."""
        z = np.empty(n)
        z[0] = rng.standard_normal()
        noise = rng.standard_normal(n) * np.sqrt(1.0 - phi ** 2)
        for t in range(1, n):
            z[t] = phi * z[t - 1] + noise[t]
        return self.quantile(ndtr(z))


def exact_bin_free_energies(U, edges, per_bin=400):
    """-ln p_i of the unbiased density exp(-U/kT) in each bin, normalised over the bins (kT)."""
    f = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        x = np.linspace(lo, hi, per_bin + 1)
        w = np.exp(-(U(x) - U(0.0)) / KT)
        f.append(np.sum(0.5 * (w[1:] + w[:-1]) * np.diff(x)))
    p = np.array(f) / np.sum(f)
    return -np.log(p)


def umbrella_run(U_1d, centers, kappa_eV_A2, n_per_window, *, seed=0, phi=0.0, transient=0,
                 grid=(-3.0, 3.0, 60001), sampler_factory=None) -> BiasedRun:
    """A BiasedRun of kind 'umbrella' with one window per system, sampled exactly (phi > 0: correlated series;
    transient > 0: that many leading samples relaxing from 1 Å away towards the window, to be cut off)."""
    rng = np.random.default_rng(seed)
    x = np.linspace(*grid[:2], int(grid[2]))
    centers = np.asarray(centers, np.float64)
    kappas = np.full(centers.size, float(kappa_eV_A2))
    columns = []
    for c, k in zip(centers, kappas):
        if sampler_factory is None:
            sampler = GridSampler(x, U_1d(x) + 0.5 * k * (x - c) ** 2)
        else:
            sampler = sampler_factory(c, k)
        series = sampler.correlated(rng, n_per_window, phi) if phi > 0 else sampler.independent(rng, n_per_window)
        if transient:
            series[:transient] += 1.0 * np.exp(-np.arange(transient) / (transient / 5.0))
        columns.append(series)
    cv = np.stack(columns, axis=1)  # [T, S]
    T, S = cv.shape
    window = np.tile(np.arange(S), (T, 1))
    bias_energy = 0.5 * kappas[None, :] * (cv - centers[None, :]) ** 2
    step = np.arange(T) * 10
    return BiasedRun(kind="umbrella", temperature_K=T_K, cv_name="xi", cv_unit="A", step=step, time_fs=step * 0.5,
                     cv=cv, window=window, bias_energy=bias_energy, centers=centers, kappas=kappas,
                     provenance={"source": "tests/unit/fes/fes_surfaces.py"})


def mueller_brown_sampler_factory(y_grid=(-0.8, 2.3, 621), x_grid=(-1.9, 1.4, 6601)):
    """Samplers of the marginal density of x (the CV) under a 1D bias, from the 2D Mueller-Brown-like surface:
    the y integral is done on a grid (exact up to it), so sampling x and then y | x is exact sampling in 2D."""
    x = np.linspace(*x_grid[:2], int(x_grid[2]))
    y = np.linspace(*y_grid[:2], int(y_grid[2]))
    U2 = mueller_brown_like(x[:, None], y[None, :])  # [X, Y] eV
    shift = U2.min()
    marginal = trapezoid(np.exp(-(U2 - shift) / KT), y, axis=1)  # [X]
    F_x = -KT * np.log(marginal)  # exact 1D free energy of the CV, eV (up to a constant)

    def factory(center, kappa):
        return GridSampler(x, F_x + 0.5 * kappa * (x - center) ** 2)

    def F(xq):
        return np.interp(xq, x, F_x)

    return factory, F


def wt_metad_run(U_1d, n_samples, *, sigma=0.1, height_kT=0.5, biasfactor=8.0, n_systems=1, per_system=True,
                 seed=0, grid=(-2.4, 2.4, 2401)) -> BiasedRun:
    """Well-tempered metaD in the adiabatic limit, sampled exactly: at every sample t each system draws s_t from
    exp(-(U + V_t)/kT) (inverse CDF on a grid), records V_t(s_t), then adds a hill at s_t of height
    h0 exp(-V_t(s_t) / ((gamma - 1) kT)) to its own bias (per_system) or to one shared bias."""
    rng = np.random.default_rng(seed)
    x = np.linspace(*grid[:2], int(grid[2]))
    U = U_1d(x)
    n_bias = n_systems if per_system else 1
    V = np.zeros((n_bias, x.size))
    cv = np.zeros((n_samples, n_systems))
    bias_energy = np.zeros_like(cv)
    hills = {k: [] for k in ("time_fs", "center", "sigma", "height_eV", "system")}
    time_fs = np.arange(n_samples) * 50.0
    for t in range(n_samples):
        for s in range(n_systems):
            b = s if per_system else 0
            cv[t, s] = GridSampler(x, U + V[b]).independent(rng, 1)[0]
            bias_energy[t, s] = np.interp(cv[t, s], x, V[b])
        for s in range(n_systems):  # deposit after every system has sampled (a shared bias is updated once per walker)
            b = s if per_system else 0
            h = height_kT * KT * np.exp(-np.interp(cv[t, s], x, V[b]) / ((biasfactor - 1.0) * KT))
            V[b] += h * np.exp(-0.5 * ((x - cv[t, s]) / sigma) ** 2)
            for key, value in (("time_fs", time_fs[t]), ("center", cv[t, s]), ("sigma", sigma), ("height_eV", h),
                               ("system", s if per_system else -1)):
                hills[key].append(value)
    hills = {k: np.asarray(v) for k, v in hills.items()}
    hills["biasfactor"] = biasfactor
    return BiasedRun(kind="metad", temperature_K=T_K, cv_name="xi", cv_unit="A", step=np.arange(n_samples) * 100,
                     time_fs=time_fs, cv=cv, window=np.zeros_like(cv, dtype=int), bias_energy=bias_energy, hills=hills,
                     provenance={"source": "tests/unit/fes/fes_surfaces.py:wt_metad_run"})
