"""Physical constants of the free-energy analysis (CODATA 2018, exact SI where defined)."""

from __future__ import annotations

import numpy as np

__all__ = ["KB_EV_PER_K", "EV_TO_KCAL_PER_MOL", "KB_OVER_H_PER_S_PER_K", "kT_eV", "kT_kcal_per_mol", "eyring_rate_per_s"]

KB_EV_PER_K = 8.617333262e-5  # Boltzmann constant, eV/K
EV_TO_KCAL_PER_MOL = 23.060547830619026  # 1 eV per particle in kcal/mol (96.48533212 kJ/mol / 4.184)
KB_OVER_H_PER_S_PER_K = 1.380649e-23 / 6.62607015e-34  # k_B / h, 1/(s K)


def kT_eV(temperature_K: float) -> float:
    return KB_EV_PER_K * float(temperature_K)


def kT_kcal_per_mol(temperature_K: float) -> float:
    return kT_eV(temperature_K) * EV_TO_KCAL_PER_MOL


def eyring_rate_per_s(barrier_kcal_per_mol, temperature_K: float):
    """Eyring (transition-state theory) rate k = (k_B T / h) exp(-ΔG‡ / k_B T), transmission coefficient 1, in 1/s."""
    barrier = np.asarray(barrier_kcal_per_mol, dtype=np.float64)
    return KB_OVER_H_PER_S_PER_K * temperature_K * np.exp(-barrier / kT_kcal_per_mol(temperature_K))
