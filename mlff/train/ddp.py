"""Data-parallel training over processes started by ``torchrun`` (nccl on GPUs, gloo on CPUs).

Every process holds the whole (small) dataset and the same model; each takes its share of every global
batch, and gradients are summed over processes in one flat all-reduce. The loss is normalised by the
global batch, so the summed gradient equals the single-process gradient of the same global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Dist", "setup", "teardown"]


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def allreduce_grads(self, params, extra: torch.Tensor) -> torch.Tensor:
        """Sum the gradients of ``params`` and the 1-element ``extra`` (the loss) over all processes, in one
        flat all-reduce; returns the summed ``extra``."""
        if self.world == 1:
            return extra
        import torch.distributed as dist

        params = [p for p in params if p.requires_grad]
        flat = torch.cat([extra.reshape(1).to(params[0].dtype)]
                         + [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        start = 1
        for p in params:
            n = p.numel()
            p.grad = flat[start:start + n].view_as(p).clone()
            start += n
        return flat[0]

    def any(self, flag: bool) -> bool:
        """True on every process if ``flag`` is true on any (e.g. a stop signal seen by one of them)."""
        if self.world == 1:
            return flag
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def sum(self, values: np.ndarray) -> np.ndarray:
        """``values`` (float64) summed over all processes."""
        if self.world == 1:
            return values
        import torch.distributed as dist

        t = torch.as_tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.cpu().numpy()

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def _device(requested: str, local_rank: int) -> torch.device:
    """The process's device: under torchrun, "cuda" (or "auto" on a GPU node) means GPU ``local_rank``."""
    from mlff.calculator import torch_device

    device = torch_device(requested)  # a clear error when CUDA is asked for and absent
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank)
    return device


def setup(device: str = "auto") -> Dist:
    """The process group from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); one process without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _device(device, local_rank)
    if world == 1:
        return Dist(0, 1, dev)
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
    return Dist(dist.get_rank(), dist.get_world_size(), dev)


def teardown(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
