"""``BiasedEngine``: either MD engine with biases, driven by ``mlff.md.run_md`` like any engine.

- batched engine: its force model becomes ``BiasedModel(model, biases)`` (all windows in one force call);
- ASE engine: its calculator becomes ``BiasCalculator(biases, calculator)`` (one system).

After every step the CV sample is taken (when a COLVAR row or a trajectory frame is due). The hills and
exchanges due at that step act at the start of the next one, before its first half-kick: when the bias
changed, the state's forces are refreshed from the last physical forces plus the new bias, so the half-kick
uses the current Hamiltonian. So every sample (``window``, ``bias_energy``, ``potential_energy``) belongs to
the bias that generated it, and a checkpoint holds the state before the pending update (a restart applies
it first, exactly as the uninterrupted run does).

Extra H5MD observables per system: ``cv``, ``bias_energy``, ``physical_energy`` (eV; ``potential_energy``
stays the energy the integrator sees, physical + bias) and ``window`` (restraints). The bias state (labels,
hills, exchange counters and random state) is in the checkpoint's ``extra["bias"]``; COLVAR and HILLS files
are flushed with the trajectory and cut back to the checkpoint's step on resume.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mlff.bias.io import COLVAR, ColvarWriter, write_hills
from mlff.bias.metad import MetaD
from mlff.bias.model import BiasCalculator, BiasedModel, Biases

__all__ = ["BiasedEngine"]


class BiasedEngine:
    """Wrap ``engine`` (a BatchEngine or AseEngine, before ``start``) with ``biases``. ``out``: where COLVAR
    and HILLS go (None: no files); ``colvar_every``: steps between COLVAR rows (0: none)."""

    def __init__(self, engine, biases: Biases, *, out=None, colvar_every: int = 0):
        from mlff.md.engines import AseEngine

        self.inner, self.biases, self.config = engine, biases, engine.config
        state = engine.state
        counts = torch.bincount(state.system_idx.cpu(), minlength=state.n_systems).tolist()
        ring = getattr(engine, "ring", None)  # path integrals: biases act on each ring polymer's centroid
        beads = 1 if ring is None else ring.beads
        biases.bind(counts[::beads], state.device, state.dtype, beads=beads)
        self.n_systems = len(counts) // beads  # physical systems: COLVAR rows, windows
        self.ase = isinstance(engine, AseEngine)
        if self.ase:
            engine.atoms.calc = BiasCalculator(biases, engine.atoms.calc)
        else:
            engine.model = BiasedModel(engine.model, biases)
        self.colvar_every = int(colvar_every)
        self.out = None if out is None else Path(out)
        self.colvar = None
        self._hills_written = [0 for _ in self._metads()]
        self._sample: dict[str, torch.Tensor] | None = None
        self.report_progress = False  # run_umbrella: one line per flush with the mean CV of each window

    @property
    def state(self):
        return self.inner.state

    def _metads(self) -> list[MetaD]:
        return [t for t in self.biases.terms if isinstance(t, MetaD)]

    def open_files(self, restart_step: int | None) -> None:
        """Open COLVAR: fresh (``start``), or cut back to ``restart_step`` (``restore``)."""
        if self.out is None or not self.colvar_every:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        self.colvar = ColvarWriter(self.out / COLVAR, self.biases.cv.name, self.n_systems,
                                   windows=self.biases.restraint is not None, restart_step=restart_step)

    # -- the engine interface ---------------------------------------------------------------------------
    def start(self) -> None:
        self.open_files(None)
        self.inner.start()
        self._sample = self._observe()
        if self.colvar is not None:
            self._record(self._sample)

    def step(self) -> None:
        s = self.state
        # the updates due at the last completed step (hills, exchanges) act now, before the first half-kick:
        # the samples recorded at that step (COLVAR, trajectory) are all of the bias that generated them
        if self.biases.after_step(s.step, s.positions, s.step * self.config.timestep_fs):
            self._refresh()
        self.inner.step()
        every = self.config.trajectory_every
        colvar_due = self.colvar is not None and s.step % self.colvar_every == 0
        if colvar_due or (every and s.step % every == 0):
            self._sample = self._observe()
            if colvar_due:
                self._record(self._sample)

    def conserved_energy(self):
        return self.inner.conserved_energy()

    def output_state(self):
        """What the runner records: the inner engine's physical systems (ring-polymer centroids with beads)."""
        output_state = getattr(self.inner, "output_state", None)
        return self.state if output_state is None else output_state()

    def observables(self) -> dict[str, torch.Tensor]:
        """Per-system values [S] of the last sample (the runner adds them to the trajectory's observables)."""
        if self._sample is None:
            self._sample = self._observe()
        return dict(self._sample)

    def checkpoint_parts(self) -> tuple[dict, dict]:
        model, extra = self.inner.checkpoint_parts()
        return model, {**extra, "bias": self.biases.state_dict()}

    def restore(self, data: dict) -> None:
        extra = dict(data["extra"])
        self.biases.load_state_dict(extra.pop("bias"))  # first: the ASE engine evaluates its calculator on restore
        self.inner.restore({**data, "extra": extra})
        self._hills_written = [m.count for m in self._metads()]
        self._truncate_hills()
        self.open_files(self.state.step)
        self._sample = self._observe()

    def flush_outputs(self) -> None:
        """Write the buffered COLVAR rows and the hills deposited since the last flush (and, with
        ``report_progress``, one line of the mean CV per window over those rows)."""
        if self.colvar is not None:
            rows = self.colvar.flush()
            if rows is not None and self.report_progress:
                self._report(rows)
        if self.out is None:
            return
        for k, metad in enumerate(self._metads()):
            start = self._hills_written[k]
            if metad.count > start:
                self._write_hills(metad, start)
                self._hills_written[k] = metad.count

    # -- helpers ----------------------------------------------------------------------------------------
    def _report(self, rows: dict) -> None:
        import sys

        import numpy as np

        cv, window = rows["cv"], rows["window"]
        n = cv.shape[1]
        if window is None:  # metaD: per system
            means = cv.mean(0)
        else:
            means = np.array([cv[window == w].mean() if (window == w).any() else np.nan for w in range(n)])
        label = "window" if window is not None else "system"
        print(f"{self.biases.cv.name} per {label} (mean of steps {rows['step'][0]}-{rows['step'][-1]} of "
              f"{self.config.steps}): " + " ".join(f"{m:+.2f}" for m in means), file=sys.stderr, flush=True)

    def _observe(self) -> dict[str, torch.Tensor]:
        s = self.state
        cv, bias = self.biases.observe(s.positions)
        energy = self.output_state().energy  # per physical system (with beads: the bead mean of V_j + U)
        obs = {"cv": cv.to(s.dtype), "bias_energy": bias.to(s.dtype), "physical_energy": energy - bias.to(s.dtype)}
        extra = getattr(self.inner, "observables", None)  # path integrals: the quantum kinetic-energy estimators
        if extra is not None:
            obs.update(extra())
        restraint = self.biases.restraint
        if restraint is not None:
            obs["window"] = restraint.window.to(s.dtype).clone()
        return obs

    def _record(self, sample: dict) -> None:
        window = self.biases.restraint.window if self.biases.restraint is not None else None
        self.colvar.add(self.state.step, self.state.step * self.config.timestep_fs, sample["cv"],
                        None if window is None else sample["window"].to(torch.int64), sample["bias_energy"])

    def _refresh(self) -> None:
        if self.ase:
            self.inner.atoms.calc.results = {}  # the physical calculator keeps its own results for these positions
            self.inner._mirror()
        else:
            self.inner.model.refresh(self.state)

    def hills_files(self) -> list[str]:
        metads = self._metads()
        if not metads:
            return []
        m = metads[0]
        return ["HILLS"] if m.shared else [f"HILLS.{s}" for s in range(m.n_systems)]

    def _write_hills(self, metad: MetaD, start: int) -> None:
        hills = metad.hills(start)
        names = self.hills_files()
        if metad.shared:
            write_hills(self.out / names[0], hills, self.biases.cv.name, append=start > 0)
            return
        for s, name in enumerate(names):
            mine = {k: (v[hills["system"] == s] if k != "biasfactor" else v) for k, v in hills.items()}
            write_hills(self.out / name, mine, self.biases.cv.name, append=start > 0)

    def _truncate_hills(self) -> None:
        """Cut HILLS files back to the hills the restored checkpoint holds."""
        if self.out is None:
            return
        for k, metad in enumerate(self._metads()):
            if metad.count == 0:
                for name in self.hills_files():
                    (self.out / name).unlink(missing_ok=True)
                continue
            self._hills_written[k] = 0
            self._write_hills(metad, 0)  # rewrite from the checkpoint's own hills: exactly what it holds
            self._hills_written[k] = metad.count
