"""Training checkpoints: tensors and JSON-safe values only, so they load with ``weights_only=True``.

A checkpoint holds the model, the EMA and best weights, optimizer and scheduler state, the position in
the run (epoch, step within it, stage, early-stopping counters, running sums), the log so far and the
RNG states of torch, numpy and Python. Writes are atomic (temporary file, then rename).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from mlff.errors import MLFFError

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state"]


def rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "python": {"version": version, "state": list(py_state), "gauss": py_gauss}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path, payload: dict) -> Path:
    """Write ``payload`` atomically (temporary file, fsync, rename): a kill leaves the old or the new one."""
    from mlff.md.checkpoint import atomic_torch_save

    return atomic_torch_save(payload, path)


def load_checkpoint(path) -> dict:
    """A checkpoint written by ``save_checkpoint``; nothing is unpickled beyond tensors and plain values."""
    path = Path(path)
    if not path.is_file():
        raise MLFFError(f"no checkpoint to resume from at {path} (run without --resume to start afresh)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise MLFFError(f"{path}: not a readable mlff checkpoint ({type(err).__name__}: {str(err).splitlines()[0]})") from None
