"""Launch the kernels of ``kernels.cu`` with CuPy on torch's current CUDA stream.

Torch tensors are passed by device pointer (no copies, no per-launch DLPack wrapping); CuPy is imported
only here, lazily, so the CPU path never needs it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from mlff.errors import MLFFError

__all__ = ["CupyLauncher", "cupy_available"]

THREADS_PER_BLOCK = 128


def cupy_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver or no device
        return False


@functools.lru_cache(maxsize=None)
def _module(device_index: int):
    try:
        import cupy
    except ImportError as err:
        raise MLFFError("the GPU neighbour list needs CuPy: pip install 'mlff[cuda12]' or 'mlff[cuda13]'") from err
    with cupy.cuda.Device(device_index):
        return cupy.RawModule(code=(Path(__file__).parent / "kernels.cu").read_text(), options=("-std=c++14",))


class CupyLauncher:
    """``launch(n_threads, *args)``: args are CUDA torch tensors and numpy scalars, in the kernel's order."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, n_threads: int, *args):
        import cupy

        device = next(a.device for a in args if isinstance(a, torch.Tensor))
        kernel = _module(device.index or 0).get_function(self.name)
        raw = tuple(np.uint64(a.data_ptr()) if isinstance(a, torch.Tensor) else a for a in args)
        blocks = (n_threads + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
        with cupy.cuda.Device(device.index or 0), cupy.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream):
            kernel((blocks,), (THREADS_PER_BLOCK,), raw)
