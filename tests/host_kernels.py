"""Run the CUDA kernels of mlff on the CPU: the .cu source compiled as C++ with a small shim.

The shim maps the CUDA qualifiers away and makes the thread index a global that the launcher walks
through, one "thread" at a time. This tests the kernels' logic (indexing, images, offsets) without a GPU;
the gpu-marked tests check the real CuPy launch against the same references.
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

SHIM = """
#include <cmath>
struct Dim3 { long long x, y, z; };
static Dim3 blockIdx = {0, 0, 0}, blockDim = {1, 1, 1}, threadIdx = {0, 0, 0};
extern "C" void set_thread(long long i) { blockIdx.x = i; }
#define __global__
#define __device__ static inline
"""

_CTYPES = {np.int64: ctypes.c_longlong, np.int32: ctypes.c_int, np.float64: ctypes.c_double}


def have_compiler() -> bool:
    return shutil.which("g++") is not None


def compile_kernels(source: Path) -> ctypes.CDLL:
    code = SHIM + source.read_text()
    tag = hashlib.sha1(code.encode()).hexdigest()[:12]
    out = Path(tempfile.gettempdir()) / f"mlff_host_kernels_{tag}.so"
    if not out.exists():
        src = out.with_suffix(".cpp")
        src.write_text(code)
        subprocess.run(["g++", "-O2", "-shared", "-fPIC", "-o", str(out), str(src)], check=True)
    return ctypes.CDLL(str(out))


class HostLauncher:
    """``launch(n_threads, *args)`` with torch CPU tensors and numpy scalars, like the CuPy launcher."""

    def __init__(self, lib: ctypes.CDLL, name: str):
        self.kernel = getattr(lib, name)
        self.set_thread = lib.set_thread

    def __call__(self, n_threads: int, *args):
        cargs = []
        for a in args:
            if isinstance(a, torch.Tensor):
                assert a.device.type == "cpu" and (a.numel() == 0 or a.is_contiguous())
                cargs.append(ctypes.c_void_p(a.data_ptr()))
            else:
                cargs.append(_CTYPES[type(a)](a))
        for t in range(n_threads):
            self.set_thread(ctypes.c_longlong(t))
            self.kernel(*cargs)
