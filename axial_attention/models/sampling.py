"""Sampling and completion for AutoregressiveAxialTransformer: the reference path and the cached path.

Both work on the model's token grid (batch, a_1, ..., a_{n-1}, a_n * channels), keep the first
`keep` slices of the first axis as given, and visit the other tokens in the model's order (raster
over the grid), drawing every token with `draw`, which consumes the generator the same way in both
paths, so for equal logits they return equal tensors. Sampling is completion with nothing kept.

The cached path never recomputes the past; it keeps one cache per decoder level. Level k advances
one slice of its axis at a time: when slice i - 1 is complete it runs once on that slice (the
unmasked attention along the later axes sees the whole, known slice; the masked attention along
a_k attends over the keys/values cached for the earlier slices), and its output is the context of
slice i. The kept prefix is run through level 1 in one pass, which fills its caches. The inner level
takes one token per step and attends over the keys/values cached along the row. Per token the work
is O(a_n * channels) for attention and O(1) otherwise, instead of a full forward pass.
"""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Optional

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from .autoregressive import AutoregressiveAxialTransformer


def draw(logits: Tensor, temperature: float, generator: Optional[torch.Generator]) -> Tensor:
    """One categorical draw per row of logits (batch, levels) by inverting the CDF with one uniform."""
    # float64 where the device has it (MPS does not), so the CDF of 256 levels is not rounded
    dtype = torch.float32 if logits.device.type == "mps" else torch.float64
    probs = torch.softmax(logits.to(dtype) / temperature, dim=-1)
    u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device, dtype=probs.dtype)
    index = (probs.cumsum(-1) < u).sum(-1)
    return index.clamp_(max=probs.shape[-1] - 1)


def kept_tokens(model: AutoregressiveAxialTransformer, keep: int) -> int:
    """Tokens kept along the grid's first axis: `keep` slices, or keep * channels for a sequence (C, L)."""
    return keep * model.image_shape[0] if model.num_axes == 1 else keep


def complete_reference(
    model: AutoregressiveAxialTransformer,
    tokens: Tensor,
    keep: int,
    labels: Optional[Tensor],
    temperature: float,
    generator: Optional[torch.Generator],
    slices: Optional[int] = None,
) -> Tensor:
    """Recompute the logits of every next token from the whole canvas: slow, obviously right.
    `slices` stops after that many sampled slices of the first axis (the rest stays 0): every step
    costs one full forward pass, so benchmarks time a few and scale."""
    canvas = tokens.clone()
    start = kept_tokens(model, keep)
    canvas[:, start:] = 0
    grid = canvas.shape[1:]
    stop = grid[0] if slices is None else min(grid[0], start + kept_tokens(model, slices))
    for position in itertools.product(range(start, stop), *map(range, grid[1:])):
        logits = model.token_logits(canvas, labels)[(slice(None), *position)]
        canvas[(slice(None), *position)] = draw(logits, temperature, generator)
    return canvas


def _at(t: Tensor, prefix: tuple[int, ...]) -> Tensor:
    """The view of t (batch, *grid, ...) at grid indices `prefix` along its first axes, sizes kept as 1."""
    for axis, i in enumerate(prefix, start=1):
        t = t.narrow(axis, i, 1)
    return t


def complete_cached(
    model: AutoregressiveAxialTransformer,
    tokens: Tensor,
    keep: int,
    labels: Optional[Tensor],
    temperature: float,
    generator: Optional[torch.Generator],
) -> Tensor:
    """Slice by slice per decoder level, token by token in the inner level, with key/value caches."""
    n = model.num_axes
    batch, *grid = tokens.shape
    tokens = tokens.clone()
    start = kept_tokens(model, keep)
    tokens[:, start:] = 0
    cond = model._conditioning(labels).expand(batch, *grid, -1)  # (batch, *grid, dim)
    past = None
    if model.past is not None:  # its output joins cond, position by position as they are drawn
        cond = cond.clone()
        past = PastSlices(model, tokens, start, cond)

    def slice_shape(k: int) -> Tensor:
        """A tensor shaped like the part of the grid level k works on: axes before k fixed."""
        return _at(cond, (0,) * (k - 1))

    layers = [model.outer] + list(model.middle)
    level_caches = {k: [masked.new_cache(slice_shape(k), grid[k - 1]) for *_, masked in layers[k - 1]]
                    for k in range(1, n)}
    token_shape = slice_shape(n).narrow(n, 0, 1)
    row_caches = [block.new_cache(token_shape, grid[-1]) for block in model.inner]

    def inner(prefix: tuple[int, ...], context: Tensor) -> None:
        """Draw the row at `prefix` (a_1 .. a_{n-1} fixed) token by token; context: (batch, 1.., L, dim)."""
        row, row_cond = _at(tokens, prefix), _at(cond, prefix)  # (batch, 1.., L), (batch, 1.., L, dim)
        first = start if n == 1 else 0
        previous = torch.zeros_like(token_shape)  # the shift right: the first token sees nothing
        if first > 0:  # a kept prefix of a sequence fills the row caches in one pass
            emb = model.token_emb(row.narrow(n, 0, first))
            h = torch.cat([previous, emb.narrow(n, 0, first - 1)], dim=n) + row_cond.narrow(n, 0, first)
            model.inner_layers(h + context.narrow(n, 0, first), row_caches, 0)
            previous = emb.narrow(n, first - 1, 1)
        channels = model.image_shape[0]
        for index in range(first, grid[-1]):
            pixel, channel = divmod(index, channels)
            if past is not None and channel == 0:
                past.enter(prefix, pixel)  # adds its output to row_cond (a view of cond)
            h = previous + row_cond.narrow(n, index, 1) + context.narrow(n, index, 1)
            logits = model.inner_layers(h, row_caches, index).flatten(0, -2)
            token = draw(logits, temperature, generator)
            row.narrow(n, index, 1).copy_(token.view(row.narrow(n, index, 1).shape))
            previous = model.token_emb(token).view(token_shape.shape)
            if past is not None and channel == channels - 1:
                past.leave(prefix, pixel, row)

    def level(k: int, prefix: tuple[int, ...], context: Tensor) -> None:
        """Fill the slice at `prefix` (axes before k fixed); context: the levels above, at that slice."""
        if k == n:
            inner(prefix, context)
            return
        part, part_cond, caches = _at(tokens, prefix), _at(cond, prefix), level_caches[k]

        def level_input(first: int, count: int) -> Tensor:
            return (model.token_emb(part.narrow(k, first, count)) + part_cond.narrow(k, first, count)
                    + context.narrow(k, first, count))

        first = start if k == 1 else 0
        own = torch.zeros_like(context.narrow(k, 0, 1))  # the first slice has no earlier one
        if first > 0:  # the kept slices fill this level's caches in one pass; the last one is the next's context
            own = model.level_layers(k, level_input(0, first), caches, 0).narrow(k, first - 1, 1)
        for i in range(first, grid[k - 1]):
            if i > first:
                if past is not None and k == 1:
                    past.slices_done(i - 1)  # the keys and values slice i looks back at
                own = model.level_layers(k, level_input(i - 1, 1), caches, i - 1)
            level(k + 1, (*prefix, i), context.narrow(k, i, 1) + own)

    level(1, (), torch.zeros_like(cond))
    return tokens


class PastSlices:
    """The past-slice attention (neighbourhood.py) during cached sampling: padded buffers of the pixel
    embeddings and of the keys and values of finished slices; the attention's output is added to the
    model's conditioning one position at a time. A position's output needs its own slice's positions
    before it (the pixel buffer, filled as each position's last channel is drawn) and the finished
    slices' keys and values (computed once per slice): O(window ** (axes - 1)) per position."""

    def __init__(self, model: AutoregressiveAxialTransformer, tokens: Tensor, keep: int, cond: Tensor) -> None:
        self.model, self.attention, self.cond = model, model.past, cond  # cond: (batch, *grid, dim)
        kept = model.pixel_embeddings(model.token_emb(tokens.narrow(1, 0, keep)))  # (batch, keep, *space, dim)
        space = tuple(kept.shape[2:-1])
        self.pixels = self.attention.pad(kept.new_zeros(tokens.shape[0], tokens.shape[1], *space, kept.shape[-1]))
        self.keys, self.values = (self.pixels.new_zeros(*self.pixels.shape[:-1], self.attention.kv_width)
                                  for _ in range(2))
        self.valid = self.attention.valid(space, kept.device)
        if keep > 0:  # the kept slices in one pass; their outputs feed the first level
            self.attention.inside(self.pixels).narrow(1, 0, keep).copy_(kept)
            self.slices_done(0, keep)
            self.cond.narrow(1, 0, keep).add_(model.on_grid(self.attention(kept)))

    def slices_done(self, first: int, count: int = 1) -> None:
        """Slices first .. first + count - 1 are complete: their keys and values (later slices attend to them)."""
        inside = [self.attention.inside(b).narrow(1, first, count) for b in (self.pixels, self.keys, self.values)]
        _, keys, values = self.attention.keys_values(inside[0])
        inside[1].copy_(keys)
        inside[2].copy_(values)

    def enter(self, prefix: tuple[int, ...], pixel: int) -> None:
        """Before the first channel of the position (*prefix, pixel) is drawn: its output, added to `cond`."""
        position = (*prefix[1:], pixel)
        out = self.attention.at(self.pixels, self.keys, self.values, prefix[0], position, self.valid)
        channels = self.model.image_shape[0]
        at = _at(self.cond, prefix).narrow(len(prefix) + 1, pixel * channels, channels)
        at.add_(out.view(out.shape[0], *(1,) * (at.ndim - 2), out.shape[-1]).expand_as(at))

    def leave(self, prefix: tuple[int, ...], pixel: int, row: Tensor) -> None:
        """After the last channel of (*prefix, pixel) is drawn (row: the tokens of its row): its embedding."""
        channels = self.model.image_shape[0]
        tokens = row.narrow(len(prefix) + 1, pixel * channels, channels)  # (batch, 1.., channels)
        emb = self.model.pixel_embeddings(self.model.token_emb(tokens))  # (batch, 1.., 1, dim)
        radius = self.attention.radius
        target = self.pixels.narrow(1, prefix[0], 1)
        for axis, index in enumerate((*prefix[1:], pixel), start=2):
            target = target.narrow(axis, index + radius, 1)
        target.copy_(emb.view(target.shape))
