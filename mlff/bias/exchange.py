"""Hamiltonian replica exchange between neighbouring umbrella windows, by swapping window labels.

Every ``every`` steps the pairs (w, w+1) of one parity are attempted together (even pairs 0-1, 2-3, ...; the
next attempt odd pairs 1-2, 3-4, ...). Systems i (carrying w) and j (carrying w+1) swap their labels with
probability min(1, exp(-beta [U_w(x_j) + U_w+1(x_i) - U_w(x_i) - U_w+1(x_j)])): the physical energy is the
same in both windows and cancels, so only the restraint energies enter. Coordinates and velocities stay
where they are (so nothing moves across the batch); the labels ``restraint.window`` change in place.

All on the device, no host sync: the random numbers come from the exchange's own ``torch.Generator``
(seeded, in the checkpoint), attempts and acceptances per pair are device counters read at the end.
"""

from __future__ import annotations

import torch
from ase import units

from mlff.bias.restraint import HarmonicRestraint
from mlff.errors import MLFFError

__all__ = ["ReplicaExchange"]


class ReplicaExchange:
    """Label exchange for a ``HarmonicRestraint`` with one window per system (W = S) at ``temperature_K``."""

    def __init__(self, restraint: HarmonicRestraint, *, every: int, temperature_K: float, seed: int = 0):
        if every < 1:
            raise MLFFError(f"exchange every must be >= 1 steps, got {every}")
        if not temperature_K > 0:
            raise MLFFError(f"replica exchange needs temperature_K > 0, got {temperature_K}")
        if restraint.n_windows != len(restraint.window):
            raise MLFFError(f"replica exchange needs one window per system: {restraint.n_windows} windows, "
                            f"{len(restraint.window)} systems")
        if restraint.n_windows < 2:
            raise MLFFError("replica exchange needs at least two windows")
        self.restraint, self.every, self.seed = restraint, int(every), int(seed)
        self.beta = 1.0 / (float(units.kB) * float(temperature_K))  # 1/eV
        self.rounds = 0  # attempts made so far (host): its parity picks even or odd pairs
        self.to(restraint.window.device)

    def to(self, device) -> "ReplicaExchange":
        """Counters and random stream on ``device`` (a fresh stream from ``seed``: call before the first attempt)."""
        device = torch.device(device)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(self.seed)
        n_pairs = self.restraint.n_windows - 1
        self.attempts = torch.zeros(n_pairs, dtype=torch.int64, device=device)  # [W-1] per pair (w, w+1)
        self.accepted = torch.zeros(n_pairs, dtype=torch.int64, device=device)  # [W-1]
        self._pairs = [torch.arange(p, n_pairs, 2, device=device) for p in (0, 1)]  # lower windows of each parity
        return self

    def attempt(self, s: torch.Tensor) -> torch.Tensor:
        """One round of attempts on CV values s [S]; returns the accepted mask [pairs of this parity]."""
        lower = self._pairs[self.rounds % 2]
        self.rounds += 1
        if len(lower) == 0:
            return torch.zeros(0, dtype=torch.bool, device=s.device)
        r = self.restraint
        holder = torch.argsort(r.window)  # [W] system carrying each window
        i, j = holder[lower], holder[lower + 1]
        upper = lower + 1
        delta = self.beta * (r.energy_in(s[j], lower) + r.energy_in(s[i], upper)
                             - r.energy_in(s[i], lower) - r.energy_in(s[j], upper))
        u = torch.rand(len(lower), generator=self.generator, dtype=s.dtype, device=s.device)
        accept = u < torch.exp(-delta)  # min(1, exp(-delta)): u < 1 always
        window = r.window.clone()
        window[i] = torch.where(accept, upper, lower)
        window[j] = torch.where(accept, lower, upper)
        r.window.copy_(window)
        self.attempts[lower] += 1
        self.accepted[lower] += accept.to(torch.int64)
        return accept

    def after_step(self, step: int, s: torch.Tensor) -> bool:
        if step % self.every:
            return False
        self.attempt(s.detach())
        return True

    def acceptance(self) -> list[float | None]:
        """Per pair (w, w+1): accepted / attempted (None before the first attempt)."""
        att, acc = self.attempts.cpu().tolist(), self.accepted.cpu().tolist()
        return [a / n if n else None for a, n in zip(acc, att)]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state().cpu(), "attempts": self.attempts.cpu().clone(),
                "accepted": self.accepted.cpu().clone(), "rounds": self.rounds}

    def load_state_dict(self, data: dict) -> None:
        self.generator.set_state(data["generator"])
        self.attempts.copy_(data["attempts"].to(self.attempts.device))
        self.accepted.copy_(data["accepted"].to(self.accepted.device))
        self.rounds = int(data["rounds"])

    def spec(self) -> dict:
        return {"kind": "exchange", "every": self.every, "beta_per_eV": self.beta}
