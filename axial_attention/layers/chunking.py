"""Bounded memory for attention along one axis: the positions in chunks, each recomputed in backward.

Attention along an axis is independent across the lines of that axis, so a layer's output is the
concatenation of its outputs on slices of any other axis. Run chunk by chunk under non-reentrant
activation checkpointing, a chunk's queries, keys, values, attention output and gate exist only while
that chunk is computed, in forward and again in backward: what the layer keeps for backward is its
input, and its peak is one chunk's activations instead of the whole tensor's (a (1, 32, 128, 128, 128)
volume's q, k, v and outputs alone are 1.3 GB per axis in float32). The arithmetic per line is the
same, so outputs and gradients equal the unchunked path's up to the products' summation order.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .rotary import Positions


def run_in_chunks(
    run: Callable[..., Union[Tensor, tuple[Tensor, Tensor]]],
    x: Tensor,
    axis: int,
    chunk_size: int,
    mask: Optional[Tensor],
    attn_bias: Optional[Tensor],
    positions: Positions,
) -> Union[Tensor, tuple[Tensor, Tensor]]:
    """run(x, mask, attn_bias, positions) for x (batch, *axial, dim) attending along `axis`, over slices of
    the longest other axis (the batch included) holding about `chunk_size` positions each (one slice at
    least). mask is (batch, *axial), attn_bias (batch, *axial without `axis`, heads, Lq, Lk) with size-1
    axes broadcast, positions (batch, L) split with the batch.

    Under torch.export with a dynamic size the chunks collapse into one call: a loop whose count depends on
    the sizes cannot stay symbolic (tracing it fixes every size), and the outputs are the same. At static
    sizes the exported program keeps the chunks."""
    if torch.compiler.is_exporting() and any(isinstance(s, torch.SymInt) for s in x.shape):
        return run(x, mask, attn_bias, positions)
    split = 0
    for d in range(1, x.ndim - 1):  # the longest dim but the attended one and the channels (a loop: compile-able)
        if d != axis and x.shape[d] > x.shape[split]:
            split = d
    per_slice = math.prod(x.shape[:-1]) // max(x.shape[split], 1)
    step = max(1, chunk_size // max(per_slice, 1))
    if step >= x.shape[split]:
        return run(x, mask, attn_bias, positions)
    bias_dim = split if split < axis else split - 1  # the bias has no attended axis

    def part(t: Optional[Tensor], dim: int, start: int, length: int) -> Optional[Tensor]:
        if not isinstance(t, Tensor) or t.shape[dim] == 1:
            return t
        return t.narrow(dim, start, length)

    outs, weights = [], []
    for start in range(0, x.shape[split], step):
        length = min(step, x.shape[split] - start)
        args = (x.narrow(split, start, length), part(mask, split, start, length),
                part(attn_bias, bias_dim, start, length),
                part(positions, 0, start, length) if split == 0 and isinstance(positions, Tensor)
                and positions.ndim == 2 else positions)
        if torch.is_grad_enabled():
            result = checkpoint(run, *args, use_reentrant=False)
        else:
            result = run(*args)
        if isinstance(result, tuple):
            result, w = result
            weights.append(w)
        outs.append(result)
    out = torch.cat(outs, dim=split)
    # the weights are (batch, heads, *axial, L): the split axis moves one place right past the heads
    return (out, torch.cat(weights, dim=split + (split > 0))) if weights else out
