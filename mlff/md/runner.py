"""``run_md``: the MD runner. It owns all I/O: the H5MD trajectory, log.csv, checkpoints, monitors,
signals and progress; the engines only step.

Outputs in ``config.out``: trajectory.h5 (H5MD), log.csv (one row per system per frame), checkpoint.pt
(latest state), run.json (settings, speed, drift, status, provenance); stopped.pt when a monitor stopped
the run. SIGTERM / SIGUSR1 set a flag; the loop then writes a checkpoint and returns status "interrupted".

A fresh run writes a checkpoint at step 0, so a run killed at any moment can be resumed; a directory with
outputs but no checkpoint (killed while starting) is started again from step 0 by ``resume``. One process
writes a run directory at a time (lock file ``.lock``); a resume refuses a potential whose weights changed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from mlff.errors import MLFFError
from mlff.md.checkpoint import load_checkpoint, save_checkpoint
from mlff.md.config import MDConfig, load_md_config, read_structure
from mlff.md.monitors import EnergyDrift, Monitors, Thresholds
from mlff.md.runlog import CsvLog, Progress
from mlff.lock import WriterLock
from mlff.provenance import provenance
from mlff.signals import SignalFlag

__all__ = ["run_md", "make_potential"]

FILES = {"trajectory": "trajectory.h5", "log": "log.csv", "checkpoint": "checkpoint.pt", "run": "run.json",
         "stopped": "stopped.pt", "beads": "beads.h5"}


def make_potential(config: MDConfig, atoms):
    """The run's potential: a directory / shipped name, or an untrained MACE from a config dict (warned)."""
    import mlff

    if config.potential is None:
        raise MLFFError("potential: give a potential directory (or shipped name), or a model config mapping "
                        "for an untrained model (speed tests)")
    if isinstance(config.potential, dict):
        model = dict(config.potential)
        model.setdefault("species", sorted(set(atoms.get_chemical_symbols())))
        print("WARNING: untrained MACE model (random weights): this run measures speed, not chemistry",
              file=sys.stderr)
        return mlff.build_potential(model, seed=config.seed, dtype=config.dtype)
    return mlff.load_potential(str(config.potential), dtype=config.dtype)


def _view(engine):
    """The state the outputs and monitors see: the physical systems (path integrals: the centroids)."""
    output_state = getattr(engine, "output_state", None)
    return engine.state if output_state is None else output_state()


def _observables(engine, s=None) -> dict[str, torch.Tensor]:
    """Per-system scalars [S] of the current state (device tensors)."""
    s = _view(engine) if s is None else s
    kinetic = s.kinetic_energy()
    obs = {"potential_energy": s.energy, "kinetic_energy": kinetic, "total_energy": s.energy + kinetic,
           "temperature": s.temperature(),
           "max_force": torch.zeros_like(s.energy).scatter_reduce_(0, s.system_idx, s.forces.norm(dim=-1), "amax")}
    conserved = engine.conserved_energy()
    if conserved is not None:
        obs["conserved_energy"] = conserved
    if s.xi_atoms is not None:
        obs["xi"] = s.xi()
    if s.energy_std is not None:
        obs["energy_std"] = s.energy_std
        obs["max_force_std"] = torch.zeros_like(s.energy).scatter_reduce_(0, s.system_idx, s.forces_std, "amax")
    extra = getattr(engine, "observables", None)  # biased engines: cv, bias_energy, physical_energy, window
    if extra is not None:
        obs.update(extra())
    return obs


class _Outputs:
    """Trajectory writer and log, opened fresh or truncated after the checkpoint's step on resume."""

    def __init__(self, config: MDConfig, engine, out: Path, restart_step: int | None):
        self.config, self.engine = config, engine
        self.names = list(_observables(engine))
        self.log = CsvLog(out / FILES["log"], ["step", "time_fs", "system", *self.names], restart_step)
        self.writer = None
        if config.trajectory_every:
            from mlff.md.h5md import H5MDWriter

            s = _view(engine)
            groups = {f"system_{k:04d}": sl for k, sl in enumerate(s.atoms_slices())}
            self.writer = H5MDWriter(out / FILES["trajectory"], s.numbers.cpu().numpy(), s.masses.cpu().numpy(),
                                     s.pbc.cpu().numpy(), groups=groups, observables=self.names,
                                     every=config.trajectory_every, provenance=provenance(),
                                     metadata={"md_config": json.dumps(config.to_dict(), default=str)},
                                     restart_step=restart_step)
        self.beads = None
        ring = getattr(getattr(engine, "inner", engine), "ring", None)
        if config.trajectory_every and config.trajectory_beads and ring is not None:  # every bead, on request
            from mlff.md.h5md import H5MDWriter

            b = engine.state
            groups = {f"system_{k // ring.beads:04d}_bead_{k % ring.beads:02d}": sl
                      for k, sl in enumerate(b.atoms_slices())}
            self.beads = H5MDWriter(out / FILES["beads"], b.numbers.cpu().numpy(), b.masses.cpu().numpy(),
                                    b.pbc.cpu().numpy(), groups=groups, fields=("position", "force"),
                                    every=config.trajectory_every, provenance=provenance(),
                                    metadata={"md_config": json.dumps(config.to_dict(), default=str)},
                                    restart_step=restart_step)

    def record(self) -> dict[str, list[float]]:
        s = _view(self.engine)
        obs = _observables(self.engine, s)
        time_fs = s.step * self.config.timestep_fs
        if self.writer is not None:
            self.writer.write(s.step, time_fs, s.positions, s.cell, velocities=s.velocities, forces=s.forces,
                              observables=obs)
        if self.beads is not None:
            b = self.engine.state
            self.beads.write(b.step, time_fs, b.positions, b.cell, forces=b.forces)
        host = {k: v.detach().cpu().tolist() for k, v in obs.items()}
        for k in range(s.n_systems):
            self.log.add([s.step, time_fs, k, *(host[name][k] for name in self.names)])
        return host

    def flush(self) -> None:
        self.log.flush()
        for writer in (self.writer, self.beads):
            if writer is not None:
                writer.flush()
        flush_engine = getattr(self.engine, "flush_outputs", None)  # biased engines: COLVAR and HILLS files
        if flush_engine is not None:
            flush_engine()

    def close(self) -> None:
        self.log.flush()
        for writer in (self.writer, self.beads):
            if writer is not None:
                writer.close()
        flush_engine = getattr(self.engine, "flush_outputs", None)
        if flush_engine is not None:
            flush_engine()


SPEED = ("ms_per_step", "ns_per_day", "atom_steps_per_s", "drift_eV_per_atom_per_ps")  # kept by a resume that runs no step


def _checkpoint(path: Path, engine, config: MDConfig, pins: dict | None = None) -> Path:
    model_state, extra = engine.checkpoint_parts()
    return save_checkpoint(path, engine.state, config=config.to_dict(), model_state=model_state, extra=extra,
                           inputs=pins)


def potential_pins(config: MDConfig) -> dict:
    """What pins the run's potential: for a directory, the sha256 of every weights file (potential.json)."""
    if not isinstance(config.potential, (str, Path)):
        return {}  # an untrained config (in the config hash with its seed) or an object given by a script
    from mlff.models.store import weights_pins

    return weights_pins(config.potential)


def _check_pins(data: dict, pins: dict, out: Path) -> None:
    saved = json.loads(data.get("inputs_json", "{}"))
    before, now = saved.get("potential_sha256"), pins.get("potential_sha256")
    if before and now and before != now:
        raise MLFFError(f"cannot resume {out}: the potential at {pins['potential']} is not the one the run started "
                        f"with (weights sha256 {before[:16]} then, {now[:16]} now); resume with the original "
                        "potential, or start a new run in another out directory")


def _restartable(out: Path) -> bool:
    """No checkpoint but outputs (killed while starting): remove them so the run starts again from step 0."""
    partial = [out / FILES[k] for k in ("trajectory", "beads", "log", "run", "stopped") if (out / FILES[k]).exists()]
    if not partial:
        return False
    print(f"mlff: note: {out} holds no checkpoint (the run was stopped before writing one): starting it again "
          f"from step 0; the partial {', '.join(p.name for p in partial)} are replaced", file=sys.stderr)
    for path in partial:
        path.unlink()
    return True


def _prepare(config: MDConfig, engine, out: Path, resume: bool, pins: dict) -> int | None:
    """Restore from the checkpoint (resume) or evaluate the first forces; returns the restart step."""
    if resume and not (out / FILES["checkpoint"]).exists() and _restartable(out):
        resume = False
    if resume:
        data = load_checkpoint(out / FILES["checkpoint"], config=config.to_dict())
        _check_pins(data, pins, out)
        engine.restore(data)
        return engine.state.step
    existing = [out / FILES[k] for k in ("checkpoint", "trajectory", "beads") if (out / FILES[k]).exists()]
    if existing:
        raise MLFFError(f"{existing[0]} exists: continue that run with --resume, or choose another out directory")
    engine.start()
    return None


def _loop(config: MDConfig, engine, outputs: _Outputs, out: Path, flag: SignalFlag, progress: Progress,
          pins: dict) -> tuple:
    s = engine.state
    monitors = Monitors(Thresholds(config.max_force_eV_per_A, config.max_force_std_eV_per_A,
                                   config.max_energy_std_eV, config.max_temperature_K))
    drift = EnergyDrift()
    every, start_step = config.trajectory_every, s.step
    status, message = "finished", None
    while s.step < config.steps:
        engine.step()
        monitors.update(_view(engine))
        if every and s.step % every == 0:
            obs = outputs.record()
            if "conserved_energy" in obs:
                drift.add(s.step * config.timestep_fs, torch.tensor(obs["conserved_energy"], dtype=torch.float64))
        if s.step % config.monitor_every == 0 or s.step == config.steps:
            reason = monitors.check(s.step)
            progress.update(s.step)
            if reason is not None:
                outputs.flush()
                stopped = _checkpoint(out / FILES["stopped"], engine, config, pins)
                good = out / FILES["checkpoint"]
                last = f"last good checkpoint {good}" if good.exists() else "no earlier checkpoint"
                status, message = "stopped", f"MD stopped at step {s.step}: {reason}; state saved to {stopped}, {last}"
                break
        if flag.received:
            outputs.flush()
            path = _checkpoint(out / FILES["checkpoint"], engine, config, pins)
            status, message = "interrupted", (f"{flag.received} received at step {s.step}: checkpoint written to "
                                              f"{path}; continue with --resume")
            break
        if config.checkpoint_every and s.step % config.checkpoint_every == 0:
            outputs.flush()
            _checkpoint(out / FILES["checkpoint"], engine, config, pins)
    if status == "finished":
        outputs.flush()
        _checkpoint(out / FILES["checkpoint"], engine, config, pins)
    return status, message, s.step - start_step, drift


def run_md(config: MDConfig | dict | str | Path, *, resume: bool = False, atoms=None, potential=None,
           engine=None, show_progress: bool | None = None, pins: dict | None = None) -> dict:
    """Run (or resume) the MD of ``config``; returns the run summary (also written to run.json).

    ``atoms`` / ``potential`` / ``engine`` replace what the config names (tests, scripts). ``pins``: the weights
    a given engine runs (``potential_pins``), recorded and checked on resume as for a potential the config names."""
    if not isinstance(config, MDConfig):
        config = load_md_config(config)
    if engine is None:  # the structure and the potential the config names: refused before out is touched
        atoms = atoms if atoms is not None else read_structure(config.structure)
        if potential is None:
            _check_potential(config)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    with WriterLock(out / ".lock", f"MD run {out}"):
        return _run_md(config, out, resume, atoms, potential, engine, show_progress, pins)


def _check_potential(config: MDConfig) -> None:
    """A potential named by the config is a potential directory or shipped name (``load_potential``'s one-line
    error otherwise, raised before it reads any weights); the weights are loaded under the run's lock."""
    if config.potential is None or isinstance(config.potential, (str, Path)):
        from mlff.models.store import resolve_potential_path

        if config.potential is None or not (resolve_potential_path(config.potential) / "potential.json").is_file():
            make_potential(config, None)


def _run_md(config: MDConfig, out: Path, resume: bool, atoms, potential, engine, show_progress, pins) -> dict:
    from mlff.md.engines import AseEngine, BatchEngine

    if pins is None:
        pins = potential_pins(config) if potential is None and engine is None else {}
    if resume and pins and (out / FILES["checkpoint"]).exists():  # before loading a potential it would refuse
        _check_pins(load_checkpoint(out / FILES["checkpoint"], config=config.to_dict()), pins, out)
    if engine is None:
        atoms = atoms if atoms is not None else read_structure(config.structure)
        potential = potential if potential is not None else make_potential(config, atoms)
        engine = (BatchEngine if config.engine == "gpu" else AseEngine)(config, atoms, potential)
    restart_step = _prepare(config, engine, out, resume, pins)
    outputs = _Outputs(config, engine, out, restart_step)
    if restart_step is None:
        if config.trajectory_every:
            outputs.record()
        outputs.flush()
        _checkpoint(out / FILES["checkpoint"], engine, config, pins)  # resumable from the first moment on
    s = engine.state
    try:
        with SignalFlag() as flag, Progress(config.steps, s.step, config.timestep_fs, show_progress) as progress:
            status, message, done, drift = _loop(config, engine, outputs, out, flag, progress, pins)
            if s.device.type == "cuda":
                torch.cuda.synchronize(s.device)
            elapsed = progress.elapsed()
    finally:
        outputs.close()  # an exception still leaves every frame recorded so far on disk
    atoms_per_system = torch.bincount(s.system_idx.cpu(), minlength=s.n_systems)
    ms = 1e3 * elapsed / max(done, 1)
    summary = {"status": status, "message": message, "steps_done": done, "step": s.step, "systems": s.n_systems,
               "atoms": int(len(s.positions)), "ms_per_step": ms, "ns_per_day": config.timestep_fs * 86400e-6 / (ms * 1e-3),
               "atom_steps_per_s": len(s.positions) * 1e3 / ms, "device": str(s.device),
               "drift_eV_per_atom_per_ps": drift.per_atom_per_ps(atoms_per_system), "resumed": restart_step is not None,
               "config": config.to_dict(), "inputs": pins, "provenance": provenance()}
    if done == 0 and restart_step is not None and (out / FILES["run"]).is_file():
        previous = _previous_summary(out / FILES["run"])  # nothing ran: keep the speed measured before
        summary.update({k: previous[k] for k in SPEED if k in previous})
    tmp = out / (FILES["run"] + ".tmp")  # whole or not at all: readers (mlff learn, hpc status) never see half
    tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    tmp.replace(out / FILES["run"])
    return summary


def _previous_summary(path: Path) -> dict:
    """The run.json a resume replaces ({} when it is unreadable: it only lends its speed numbers)."""
    try:
        previous = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        print(f"mlff: note: {path} is unreadable (damaged); its speed numbers are not carried over", file=sys.stderr)
        return {}
    return previous if isinstance(previous, dict) else {}
