"""What a biased run leaves for free-energy analysis: ``BiasedRun``, the contract between ``mlff.bias``
(which writes run directories) and ``mlff.fes`` (which analyses them).

Units: CV values in the CV's own unit (``cv_unit``, Å for distances and xi); energies eV; springs
eV / cv_unit²; time fs; temperature K. One row per CV sample (every ``colvar_every`` MD steps); one column
per system of the batch. With Hamiltonian replica exchange the systems swap window labels, not
coordinates: ``window[t, s]`` says which bias system ``s`` felt at sample ``t``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["BiasedRun"]


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
