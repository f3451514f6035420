"""Checkpoints: everything a restart needs to continue a run exactly, written atomically.

A checkpoint is a ``torch.save`` file of tensors, strings and numbers only (loadable with
``weights_only=True``): positions, velocities, forces, energies, thermostat variables, the random
generator's state, the step counter, the neighbour list's reference positions, the config (JSON) and
its hash. It is written to a temporary file, fsynced and renamed over the old one, so a kill at any
moment leaves either the previous or the new checkpoint, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from mlff.errors import MLFFError
from mlff.md.state import MDState

__all__ = ["save_checkpoint", "load_checkpoint", "restore_state", "config_hash", "atomic_torch_save"]

_TENSORS = ("positions", "velocities", "cell", "forces", "energy", "temperature_K", "chain_positions", "chain_velocities",
            "chain_masses")
_SPREADS = ("energy_std", "forces_std")  # committee potentials only: [S] eV and [N] eV/Å at the checkpoint's step


RESUMABLE = ("steps", "out")  # a restart may ask for more steps, or run from a moved directory


def config_hash(config: dict) -> str:
    """sha256 of the config without the keys a restart may change (``RESUMABLE``)."""
    body = {k: v for k, v in config.items() if k not in RESUMABLE}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def atomic_torch_save(obj, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path


def save_checkpoint(path, state: MDState, *, config: dict, model_state: dict | None = None,
                    extra: dict | None = None, inputs: dict | None = None) -> Path:
    """Write ``state`` (and the model's neighbour-list state) to ``path`` atomically. ``inputs``: JSON-safe
    pins of the run's inputs (the potential's checksums), checked on resume."""
    data = {name: getattr(state, name).detach().cpu().clone() for name in _TENSORS}
    data.update({name: getattr(state, name).detach().cpu().clone() for name in _SPREADS
                 if getattr(state, name) is not None})
    data.update(step=int(state.step), generator_state=state.generator.get_state().cpu(),
                generator_device=str(state.generator.device), config_json=json.dumps(config, sort_keys=True, default=str),
                config_hash=config_hash(config), model_state=dict(model_state or {}), extra=dict(extra or {}),
                inputs_json=json.dumps(inputs or {}, sort_keys=True))
    return atomic_torch_save(data, path)


def load_checkpoint(path, *, config: dict | None = None) -> dict:
    """The checkpoint at ``path``; with ``config``, refuse one written for a different config (key named)."""
    path = Path(path)
    if not path.is_file():
        raise MLFFError(f"no checkpoint to resume from: {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is one user error
        raise MLFFError(f"checkpoint {path} is not readable ({type(err).__name__}: {err})") from err
    if config is not None and data["config_hash"] != config_hash(config):
        saved = json.loads(data["config_json"])
        keys = sorted(k for k in set(saved) | set(config) if k not in RESUMABLE and
                      json.dumps(saved.get(k), default=str) != json.dumps(config.get(k), default=str))
        raise MLFFError(f"checkpoint {path} was written with a different config (key {keys[0] if keys else '?'!r} "
                        "differs); only 'steps' and 'out' may change on --resume")
    return data


def restore_state(state: MDState, data: dict) -> MDState:
    """Copy a loaded checkpoint into ``state`` (built from the same structure and config)."""
    for name in _TENSORS:
        saved = data[name]
        current = getattr(state, name)
        if saved.shape != current.shape:
            if name.startswith("chain_"):
                setattr(state, name, saved.to(current.device, current.dtype))
                continue
            raise MLFFError(f"checkpoint field {name} has shape {list(saved.shape)}, the run has {list(current.shape)}")
        current.copy_(saved.to(current.device))
    for name in _SPREADS:
        if name in data:
            setattr(state, name, data[name].to(state.device, state.dtype))
    saved_device, device = data.get("generator_device", "cpu"), str(state.generator.device)
    if saved_device.split(":")[0] != device.split(":")[0]:
        raise MLFFError(f"the checkpoint was written by a run on {saved_device} and this run is on {device}: its random "
                        f"stream cannot continue there; resume with device: {saved_device.split(':')[0]}")
    state.step = int(data["step"])
    state.generator.set_state(data["generator_state"])
    return state
