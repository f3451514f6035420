"""Static biases on a CV: harmonic restraints (umbrella windows) and walls.

Conventions are PLUMED's: RESTRAINT E = kappa/2 (s - s0)^2; UPPER_WALLS E = kappa ((s - at)/eps)^exp for
s > at (LOWER_WALLS mirrored), kappa in eV per CV unit^exp (eV/Å² for exp 2). Every term maps the CV values
[S] of the batch to bias energies [S], differentiably; forces come from autograd in ``mlff.bias.model``.

A ``HarmonicRestraint`` holds W windows (centres, springs) and a label per system, ``window`` [S]: system s
feels window ``window[s]``. A whole umbrella ladder is one batch (W = S, window = 0..S-1); replica exchange
swaps labels (``mlff.bias.exchange``), never coordinates.
"""

from __future__ import annotations

import numpy as np
import torch

from mlff.errors import MLFFError

__all__ = ["BiasTerm", "HarmonicRestraint", "Wall"]


class BiasTerm:
    """The interface of a bias term: energy(s [S]) -> [S] eV; state for checkpoints; a JSON spec."""

    name = "bias"

    def energy(self, s: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to(self, device, dtype) -> "BiasTerm":
        return self

    def due(self, step: int) -> bool:
        """Whether ``after_step`` has work at ``step`` (then the CV is evaluated for it)."""
        return False

    def after_step(self, step: int, s: torch.Tensor, time_fs: float) -> bool:
        """Called after every MD step with the CV values [S] at the new positions; True when the bias changed."""
        return False

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, data: dict) -> None:
        pass

    def spec(self) -> dict:
        return {"kind": type(self).__name__}


class HarmonicRestraint(BiasTerm):
    """E_s = kappa[w]/2 (s - center[w])^2 with w = window[s]. centers [W] (CV unit), kappas [W] or one float
    (eV / CV unit²), window [S] int (default 0..W-1: one window per system)."""

    name = "restraint"

    def __init__(self, centers, kappas, window=None, *, device="cpu", dtype=torch.float64):
        centers = np.atleast_1d(np.asarray(centers, dtype=np.float64))
        kappas = np.broadcast_to(np.asarray(kappas, dtype=np.float64), centers.shape).copy()
        if centers.ndim != 1 or len(centers) == 0:
            raise MLFFError(f"restraint needs at least one window centre, got {centers.tolist()}")
        if not np.isfinite(centers).all() or not np.isfinite(kappas).all() or (kappas < 0).any():
            raise MLFFError(f"restraint springs must be finite and >= 0 eV/unit², got {kappas.tolist()}")
        self.centers = torch.as_tensor(centers, dtype=dtype, device=device)  # [W]
        self.kappas = torch.as_tensor(kappas, dtype=dtype, device=device)  # [W]
        window = np.arange(len(centers)) if window is None else np.asarray(window, dtype=np.int64).reshape(-1)
        if (window < 0).any() or (window >= len(centers)).any():
            raise MLFFError(f"restraint window labels must lie in 0..{len(centers) - 1}, got {window.tolist()}")
        self.window = torch.as_tensor(window, dtype=torch.int64, device=device)  # [S], swapped by exchanges

    @property
    def n_windows(self) -> int:
        return len(self.centers)

    def to(self, device, dtype) -> "HarmonicRestraint":
        self.centers, self.kappas = self.centers.to(device, dtype), self.kappas.to(device, dtype)
        self.window = self.window.to(device)
        return self

    def energy_in(self, s: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        """[len(s)] the energy of CV values s in windows ``window`` (same shape): the exchange's U_w(x)."""
        d = s - self.centers[window]
        return 0.5 * self.kappas[window] * d * d

    def energy(self, s: torch.Tensor) -> torch.Tensor:
        if len(s) != len(self.window):
            raise MLFFError(f"restraint has window labels for {len(self.window)} systems, the batch has {len(s)}")
        return self.energy_in(s, self.window)

    def state_dict(self) -> dict:
        return {"window": self.window.cpu().clone(), "centers": self.centers.cpu().clone()}

    def load_state_dict(self, data: dict) -> None:
        self.window.copy_(data["window"].to(self.window.device))
        self.centers.copy_(data["centers"].to(self.centers.device, self.centers.dtype))

    def spec(self) -> dict:
        return {"kind": "restraint", "centers": self.centers.tolist(), "kappas": self.kappas.tolist(),
                "window": self.window.tolist()}


class Wall(BiasTerm):
    """PLUMED's UPPER_WALLS / LOWER_WALLS: E = kappa ((s - at)/eps)^exp beyond ``at`` (side "upper": s > at;
    "lower": s < at), zero inside. kappa eV, at in the CV unit, the same for every system."""

    name = "wall"

    def __init__(self, at: float, kappa: float, *, side: str = "upper", exp: float = 2.0, eps: float = 1.0):
        if side not in ("upper", "lower"):
            raise MLFFError(f"wall side must be 'upper' or 'lower', got {side!r}")
        if not kappa > 0 or not eps > 0 or not exp >= 1:
            raise MLFFError(f"wall needs kappa > 0, eps > 0 and exp >= 1, got kappa={kappa}, eps={eps}, exp={exp}")
        self.at, self.kappa, self.side, self.exp, self.eps = float(at), float(kappa), side, float(exp), float(eps)
        self.name = f"{side}_wall"

    def energy(self, s: torch.Tensor) -> torch.Tensor:
        beyond = (s - self.at) if self.side == "upper" else (self.at - s)
        return self.kappa * (beyond.clamp(min=0.0) / self.eps) ** self.exp

    def spec(self) -> dict:
        return {"kind": "wall", "side": self.side, "at": self.at, "kappa": self.kappa, "exp": self.exp, "eps": self.eps}
