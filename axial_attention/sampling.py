"""Sampling from AutoregressiveAxialTransformer: the reference path and the cached path.

Both visit the tokens in the model's order (rows top to bottom; inside a row, pixels left to right
with channels innermost) and draw every token with `draw`, which consumes the generator the same way
in both paths, so for equal logits they return equal images.

The cached path never recomputes the past. Per row it runs the outer decoder once, on the row just
finished (row attention is within that known row; the masked column attention attends over the
keys/values cached for the rows above, growing along the height axis), which gives the context of
the next row. Inside a row, the inner decoder takes one token per step and attends over the
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


def sample_reference(
    model: AutoregressiveAxialTransformer,
    batch_size: int,
    labels: Optional[Tensor],
    temperature: float,
    generator: Optional[torch.Generator],
    rows: Optional[int] = None,
) -> Tensor:
    """Recompute the logits of every next token from the whole canvas: slow, obviously right.
    `rows` stops after that many rows (the rest stays 0): every step costs one full forward pass,
    so benchmarks time a few rows and scale."""
    channels, height, width = model.image_shape
    device = model.token_emb.weight.device
    canvas = torch.zeros(batch_size, channels, height, width, dtype=torch.long, device=device)
    for row in range(height if rows is None else rows):
        for col in range(width):
            for ch in range(channels):
                logits = model(canvas, labels)[:, :, ch, row, col]
                canvas[:, ch, row, col] = draw(logits, temperature, generator)
    return canvas


def sample_cached(
    model: AutoregressiveAxialTransformer,
    batch_size: int,
    labels: Optional[Tensor],
    temperature: float,
    generator: Optional[torch.Generator],
) -> Tensor:
    """Row-by-row outer decoder and token-by-token inner decoder with key/value caches."""
    channels, height, width = model.image_shape
    length = width * channels
    cond = model._conditioning(labels).expand(batch_size, -1, -1, -1)  # (batch, height, length, dim)
    row_shape = cond[:, :1]  # (batch, 1, length, dim): the shape of one row
    column_caches = [column_block.new_cache(row_shape, height) for _, column_block in model.outer]
    token_shape = cond[:, :1, :1]
    row_caches = [block.new_cache(token_shape, length) for block in model.inner]
    tokens = torch.zeros(batch_size, height, length, dtype=torch.long, device=cond.device)
    context = torch.zeros_like(row_shape)  # the first row sees no row above
    for row in range(height):
        if row > 0:
            done = model.token_emb(tokens[:, row - 1 : row]) + cond[:, row - 1 : row]
            context = model.outer_layers(done, column_caches, row - 1)
        previous = torch.zeros_like(token_shape)  # the shift right: the first token sees nothing
        for index in range(length):
            h = previous + cond[:, row : row + 1, index : index + 1] + context[:, :, index : index + 1]
            logits = model.inner_layers(h, row_caches, index)[:, 0, 0]
            token = draw(logits, temperature, generator)
            tokens[:, row, index] = token
            previous = model.token_emb(token)[:, None, None]
    return tokens.reshape(batch_size, height, width, channels).permute(0, 3, 1, 2).contiguous()
