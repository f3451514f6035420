"""Well-tempered metadynamics on a scalar CV, with the hills in fixed-capacity device tensors.

V(s, t) = sum_k h_k exp(-(s - c_k)^2 / (2 sigma^2)); every ``pace`` steps each system deposits a hill at its
CV value with h = w0 exp(-V(s)/(kB dT)), dT = (biasfactor - 1) T (Barducci, Bussi, Parrinello 2008).
``shared``: one set of hills that every system adds to and feels (multiple walkers); otherwise one set per
system. Unused slots have height 0, so the bias is a sum over all ``capacity`` slots: shapes never change,
nothing is read back to the host (the hill count and times are host numbers: deposition is every ``pace``
steps), and a CUDA graph can capture the force evaluation. Deposition runs between steps (``after_step``).

HILLS files follow PLUMED (time ps, CV, sigma, height, biasf; energies kJ/mol): for well-tempered runs
PLUMED stores height x biasf/(biasf-1), so that ``plumed sum_hills`` prints the free energy estimate
directly; ``mlff.bias.io.write_hills`` / ``read_hills`` do the same and undo it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from ase import units

from mlff.bias.restraint import BiasTerm
from mlff.errors import MLFFError

__all__ = ["MetaD"]

KB_EV_PER_K = float(units.kB)


class MetaD(BiasTerm):
    """Well-tempered metaD. sigma (CV unit), height_eV (w0), pace (steps), biasfactor (> 1; inf: plain metaD),
    temperature_K, n_systems, shared (one set of hills for all systems), capacity (hills per set)."""

    name = "metad"

    def __init__(self, *, sigma: float, height_eV: float, pace: int, biasfactor: float, temperature_K: float,
                 n_systems: int, shared: bool = False, capacity: int = 10000, device="cpu", dtype=torch.float64):
        if not sigma > 0 or not height_eV > 0 or pace < 1 or not biasfactor > 1 or not temperature_K > 0:
            raise MLFFError(f"metad needs sigma > 0, height_eV > 0, pace >= 1, biasfactor > 1 and temperature_K > 0, "
                            f"got sigma={sigma}, height_eV={height_eV}, pace={pace}, biasfactor={biasfactor}, "
                            f"temperature_K={temperature_K}")
        if capacity < 1:
            raise MLFFError(f"metad capacity must be >= 1 hills, got {capacity}")
        self.sigma, self.height_eV, self.pace = float(sigma), float(height_eV), int(pace)
        self.biasfactor, self.temperature_K = float(biasfactor), float(temperature_K)
        self.n_systems, self.shared, self.capacity = int(n_systems), bool(shared), int(capacity)
        rows = 1 if shared else self.n_systems
        self.centers = torch.zeros(rows, capacity, dtype=dtype, device=device)  # [R, H] CV unit
        self.heights = torch.zeros(rows, capacity, dtype=dtype, device=device)  # [R, H] eV (0: empty slot)
        self.count = 0  # hills per row so far (host)
        self.times_fs: list[float] = []  # time of each deposition (host)

    @property
    def well_tempered(self) -> bool:
        return math.isfinite(self.biasfactor)

    def to(self, device, dtype) -> "MetaD":
        self.centers, self.heights = self.centers.to(device, dtype), self.heights.to(device, dtype)
        return self

    def energy(self, s: torch.Tensor) -> torch.Tensor:
        """[S] eV: each system's bias from its own hills (or the shared ones)."""
        centers, heights = (self.centers, self.heights) if not self.shared else (self.centers[:1], self.heights[:1])
        d = s.unsqueeze(-1) - centers  # [S, H] (shared: broadcast of the one row)
        return (heights * torch.exp(-0.5 * (d / self.sigma) ** 2)).sum(-1)

    def due(self, step: int) -> bool:
        return step % self.pace == 0

    def after_step(self, step: int, s: torch.Tensor, time_fs: float) -> bool:
        if step % self.pace:
            return False
        per_deposit = self.n_systems if self.shared else 1
        if self.count + per_deposit > self.capacity:
            raise MLFFError(f"metad: the hill capacity ({self.capacity}) is full at step {step}; raise "
                            f"metad.capacity (needs steps/pace{' x systems' if self.shared else ''} hills)")
        with torch.no_grad():
            s = s.detach().to(self.centers.dtype)
            height = torch.full_like(s, self.height_eV)
            if self.well_tempered:
                delta_T = (self.biasfactor - 1.0) * self.temperature_K
                height = height * torch.exp(-self.energy(s) / (KB_EV_PER_K * delta_T))
            if self.shared:
                self.centers[0, self.count:self.count + per_deposit] = s
                self.heights[0, self.count:self.count + per_deposit] = height
            else:
                self.centers[:, self.count] = s
                self.heights[:, self.count] = height
        self.count += per_deposit
        self.times_fs.append(float(time_fs))
        return True

    def hills(self, start: int = 0) -> dict:
        """The hills deposited from slot ``start`` on as numpy arrays (BiasedRun.hills layout, heights eV as added)."""
        stop = self.count
        centers = self.centers[:, start:stop].detach().cpu().numpy()
        heights = self.heights[:, start:stop].detach().cpu().numpy()
        per = self.n_systems if self.shared else 1
        times = np.repeat(np.asarray(self.times_fs, dtype=np.float64), per)[start:stop]
        if self.shared:
            system = np.full(stop - start, -1)
            return {"time_fs": times, "center": centers[0], "sigma": np.full(stop - start, self.sigma),
                    "height_eV": heights[0], "system": system, "biasfactor": self.biasfactor}
        rows = centers.shape[0]
        return {"time_fs": np.tile(times, rows), "center": centers.reshape(-1),
                "sigma": np.full(centers.size, self.sigma), "height_eV": heights.reshape(-1),
                "system": np.repeat(np.arange(rows), stop - start), "biasfactor": self.biasfactor}

    def state_dict(self) -> dict:
        return {"centers": self.centers.cpu().clone(), "heights": self.heights.cpu().clone(), "count": self.count,
                "times_fs": torch.tensor(self.times_fs, dtype=torch.float64)}

    def load_state_dict(self, data: dict) -> None:
        if data["centers"].shape != self.centers.shape:
            raise MLFFError(f"metad checkpoint holds hills of shape {list(data['centers'].shape)}, this run has "
                            f"{list(self.centers.shape)} (capacity or systems changed)")
        self.centers.copy_(data["centers"].to(self.centers.device, self.centers.dtype))
        self.heights.copy_(data["heights"].to(self.heights.device, self.heights.dtype))
        self.count = int(data["count"])
        self.times_fs = data["times_fs"].tolist()

    def spec(self) -> dict:
        return {"kind": "metad", "sigma": self.sigma, "height_eV": self.height_eV, "pace": self.pace,
                "biasfactor": self.biasfactor, "temperature_K": self.temperature_K, "shared": self.shared,
                "capacity": self.capacity}
