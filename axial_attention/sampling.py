"""Sampling and completion for AutoregressiveAxialTransformer: the reference path and the cached path.

Both work on the model's token grid (batch, height, width * channels), keep the first `keep` rows as
given, and visit the other tokens in the model's order (rows top to bottom; inside a row, pixels
left to right with channels innermost), drawing every token with `draw`, which consumes the
generator the same way in both paths, so for equal logits they return equal images. Sampling is
completion with nothing kept.

The cached path never recomputes the past. It first runs the outer decoder once over the kept
rows, which fills its column caches and gives the context of the first row to sample. Per row it
runs the outer decoder once, on the row just finished (row attention is within that known row;
the masked column attention attends over the keys/values cached for the rows above, growing along
the height axis), which gives the context of the next row. Inside a row, the inner decoder takes one token per step and attends over the
keys/values cached along the row. Per token the work is O(width * channels) for attention and
O(1) otherwise, instead of a full forward pass over the image.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from .autoregressive import AutoregressiveAxialTransformer


def draw(logits: Tensor, temperature: float, generator: Optional[torch.Generator]) -> Tensor:
    """One categorical draw per row of logits (batch, levels) by inverting the CDF with one uniform."""
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device, dtype=probs.dtype)
    index = (probs.cumsum(-1) < u).sum(-1)
    return index.clamp_(max=probs.shape[-1] - 1)


def complete_reference(
    model: AutoregressiveAxialTransformer,
    tokens: Tensor,
    keep: int,
    labels: Optional[Tensor],
    temperature: float,
    generator: Optional[torch.Generator],
    rows: Optional[int] = None,
) -> Tensor:
    """Recompute the logits of every next token from the whole canvas: slow, obviously right.
    `rows` stops after that many sampled rows (the rest stays 0): every step costs one full forward
    pass, so benchmarks time a few rows and scale."""
    canvas = tokens.clone()
    canvas[:, keep:] = 0
    height, length = canvas.shape[1:]
    for row in range(keep, height if rows is None else min(height, keep + rows)):
        for index in range(length):
            logits = model.token_logits(canvas, labels)[:, row, index]
            canvas[:, row, index] = draw(logits, temperature, generator)
    return canvas


def complete_cached(
    model: AutoregressiveAxialTransformer,
    tokens: Tensor,
    keep: int,
    labels: Optional[Tensor],
    temperature: float,
    generator: Optional[torch.Generator],
) -> Tensor:
    """Row-by-row outer decoder and token-by-token inner decoder with key/value caches."""
    batch, height, length = tokens.shape
    tokens = tokens.clone()
    tokens[:, keep:] = 0
    cond = model._conditioning(labels).expand(batch, -1, -1, -1)  # (batch, height, length, dim)
    row_shape = cond[:, :1]  # (batch, 1, length, dim): the shape of one row
    column_caches = [column_block.new_cache(row_shape, height) for _, column_block in model.outer]
    token_shape = cond[:, :1, :1]
    row_caches = [block.new_cache(token_shape, length) for block in model.inner]
    context = torch.zeros_like(row_shape)  # the first row sees no row above
    if keep > 0:  # the kept rows fill the column caches in one pass; the last one is the next row's context
        done = model.token_emb(tokens[:, :keep]) + cond[:, :keep]
        context = model.outer_layers(done, column_caches, 0)[:, -1:]
    for row in range(keep, height):
        if row > keep:
            done = model.token_emb(tokens[:, row - 1 : row]) + cond[:, row - 1 : row]
            context = model.outer_layers(done, column_caches, row - 1)
        previous = torch.zeros_like(token_shape)  # the shift right: the first token sees nothing
        for index in range(length):
            h = previous + cond[:, row : row + 1, index : index + 1] + context[:, :, index : index + 1]
            logits = model.inner_layers(h, row_caches, index)[:, 0, 0]
            token = draw(logits, temperature, generator)
            tokens[:, row, index] = token
            previous = model.token_emb(token)[:, None, None]
    return tokens
