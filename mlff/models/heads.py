"""Heads of a MACE model: the same trunk (embeddings, interactions, products) with one readout, scale/shift
and set of E0s per head, e.g. a DFT head and an xTB head trained side by side so that replayed xTB data keeps
the trunk's short-range physics while the DFT head learns the scarce labels (MACE's multi-head fine-tuning).

``transfer_heads`` copies a trained model into one with other heads: the trunk as it is, and each new head's
readout, scale/shift and E0s from a head of the source (the one of the same name, else the source's evaluation
head), so that every new head starts out predicting exactly what its source head predicted.
"""

from __future__ import annotations

import math

import torch

from mlff.errors import MLFFError

__all__ = ["transfer_heads", "source_heads_for"]


def source_heads_for(target_heads: list[str], source_heads: list[str], source_head: str) -> list[int]:
    """For each target head, the index of the source head it starts from: the same name, else ``source_head``."""
    if source_head not in source_heads:
        raise MLFFError(f"head {source_head!r} is not among the source model's heads {source_heads}")
    return [source_heads.index(h) if h in source_heads else source_heads.index(source_head) for h in target_heads]


def _columns(src: torch.Tensor, n_src: int, pick: list[int], block: int) -> torch.Tensor:
    """Weights of an e3nn Linear [mul_in x (heads*block)] (one 0e->0e path, head-major output blocks, as mace's
    readouts are): the heads' blocks picked; the fan-in, and so e3nn's normalisation, is unchanged."""
    return src.reshape(-1, n_src, block)[:, pick, :].reshape(-1)


def _readout_out(src: torch.Tensor, dst: torch.Tensor, n_src: int, n_dst: int, pick: list[int]) -> torch.Tensor:
    """The last linear of a non-linear readout, [heads*M x heads]: head h reads only its own M hidden channels
    (mace masks the others), so the block (h, h) is copied from (s, s); e3nn divides by sqrt(fan-in) =
    sqrt(heads*M), hence the factor sqrt(n_dst / n_src)."""
    m = src.numel() // (n_src * n_src)
    if m * n_src * n_src != src.numel() or m * n_dst * n_dst != dst.numel():
        raise MLFFError("unexpected layout of a non-linear readout's output weights")
    w_src = src.reshape(n_src, m, n_src)
    out = torch.zeros(n_dst, m, n_dst, dtype=src.dtype, device=src.device)
    for h, s in enumerate(pick):
        out[h, :, h] = w_src[s, :, s] * math.sqrt(n_dst / n_src)
    return out.reshape(-1)


def transfer_heads(source: torch.nn.Module, source_heads: list[str], source_head: str, target: torch.nn.Module,
                   target_heads: list[str]) -> None:
    """Load ``source``'s weights into ``target`` (same architecture, heads ``target_heads``), in place."""
    pick = source_heads_for(target_heads, source_heads, source_head)
    n_src, n_dst = len(source_heads), len(target_heads)
    src_state, dst_state = source.state_dict(), target.state_dict()
    new = {}
    for key, dst in dst_state.items():
        if key not in src_state:
            raise MLFFError(f"the source model has no {key}: only the heads may differ")
        src = src_state[key].to(dst.dtype)
        if key.endswith("output_mask"):
            new[key] = dst  # e3nn bookkeeping of the target's own shape
        elif key.startswith("readouts.") and key.endswith((".linear.weight", ".linear_1.weight")):
            block = dst_state[key.replace(".weight", ".output_mask")].numel() // n_dst  # output channels per head
            new[key] = _columns(src, n_src, pick, block)
        elif key.startswith("readouts.") and key.endswith(".linear_2.weight"):
            new[key] = _readout_out(src, dst, n_src, n_dst, pick)
        elif key in ("scale_shift.scale", "scale_shift.shift") and src.numel() in (1, n_src):
            values = torch.atleast_1d(src).expand(n_src)[pick]
            if dst.numel() == 1 and not bool((values == values[0]).all()):
                raise MLFFError(f"{key}: the target model has one value for all heads, the source heads differ: "
                                "give the target atomic_inter_scale/shift per head")
            new[key] = values[:1].reshape(dst.shape) if dst.numel() == 1 else values.reshape(dst.shape)
        elif key == "atomic_energies_fn.atomic_energies":
            new[key] = src.reshape(n_src, -1)[pick].reshape(dst.shape)
        elif src.shape == dst.shape:
            new[key] = src
        else:
            raise MLFFError(f"cannot transfer {key} between models with different heads: only readouts, "
                            "scale/shift and E0s may depend on the head")
        if new[key].shape != dst.shape:
            raise MLFFError(f"cannot transfer {key}: shape {tuple(new[key].shape)}, expected {tuple(dst.shape)}")
    target.load_state_dict(new)
