"""Attention from every position into a window of the previous slices of the first axis: how a video
model sees where things were in the frames before.

Why the Axial Transformer needs it. Its frames level hands position (t, h, w) what frame t - 1 held at
the *same* (h, w) only; a digit moving by (dy, dx) was at (h - dy, w - dx). To use it, the levels must
infer the velocity and move content by a 2-D offset through single-axis hops with absolute positions,
which they do not learn at small budgets (test bits per frame stay flat across frames 1..8, issue 18).
This block moves content directly, as neighbourhood attention (Hassani et al. 2023, NATTEN) restricted
to the past along the first axis:

- a *causal feature* f(t, p) of every position: a masked convolution (PixelCNN's mask A, van den Oord
  et al. 2016) over the positions of slice t strictly before p in raster order, inside a
  window x ... x window neighbourhood — the part of slice t around p that is known when p is drawn;
- the query at (t, p) is f(t, p); the keys are the same feature at every p' of the window around p
  in each of the slices t - 1 .. t - past_slices, plus a learned bias per head, slice and offset; the
  values are those positions' own pixels (embedded). The query finds where the pattern just before p
  in slice t sat in slice t - 1, and reads the pixel that followed it there.

The output at (t, p) depends on slices t - past_slices .. t - 1 and on the positions of slice t before p
only, so it may be added to the input of every decoder level (see autoregressive.py). The attention
itself runs on the package's primitive: each query attends along a window axis of S * K gathered keys
(S past slices, K = window ** (number of later axes) offsets) with a key mask for the window positions
that fall outside the tensor. The other way onto the primitive, SDPA over the whole previous slice with
the window as a band mask, scores every key of the slice and needs the bias as a float mask with a
gradient, which SDPA runs unfused: measured against it (benchmarks/neighbourhood.py), the gather is
2.9x faster at 32x32 slices and 16x at 64x64 (its cost is linear in the slice, the band's quadratic),
and 0.7x at 16x16, where the band's 256 keys a query are still cheap.
"""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..validation import check_divisible, check_input, check_int, check_odd
from .primitive import attend_along_axis


def gather_windows(t: Tensor, radius: int) -> Tensor:
    """For every position of t (batch, *lead, *space, dim), the window of offsets in [-radius, radius]
    along the space axes, zero outside: (batch, *lead, *space, K, dim), K = (2 radius + 1) ** len(space),
    offsets in raster order (so the first K // 2 are the positions before the centre). `space` is all the
    axes from 2 on (axis 1 is the leading, slice axis)."""
    return _gather(t, radius, past=0)


def window_at(padded: Tensor, position: tuple[int, ...], radius: int) -> Tensor:
    """The window around `position` (indices along the space axes) of a padded slice (batch, *space + 2r, dim),
    in gather_windows' order: (batch, K, dim). Cached sampling reads one position's window this way."""
    for axis, index in enumerate(position, start=1):
        padded = padded.narrow(axis, index, 2 * radius + 1)
    return padded.flatten(1, -2)


class PastNeighbourhoodAttention(nn.Module):
    """Causal neighbourhood attention into the previous slices of the first axis.

    forward(pixels) with pixels (batch, a_1, ..., a_n, dim) -> (batch, a_1, ..., a_n, dim): at (t, p),
    attention from the causal feature of slice t at p into a `window`-wide neighbourhood of p (along
    a_2 .. a_n) in each of the slices t - 1 .. t - past_slices. Needs at least two axes (a slice with
    positions). Slice 0 has no past: its attention output is zero, so it gets the output projection's
    bias (`to_out.bias`).
    """

    def __init__(self, dim: int, num_axes: int, window: int = 5, past_slices: int = 1, heads: int = 4) -> None:
        super().__init__()
        check_odd("window", window)
        if num_axes < 2:
            raise ValueError(f"past-slice attention needs at least two axes (slices with positions), got "
                             f"num_axes={num_axes}")
        check_int("past_slices", past_slices)
        check_int("heads", heads)
        check_divisible("dim", dim, "heads", heads)
        self.dim, self.num_axes, self.window, self.past_slices, self.heads = dim, num_axes, window, past_slices, heads
        self.radius = window // 2
        self.offsets = window ** (num_axes - 1)  # K
        before = self.offsets // 2  # the window's positions before its centre in raster order
        self.causal_feature = nn.Sequential(nn.Flatten(-2), nn.Linear(before * dim, dim), nn.LayerNorm(dim))
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.offset_bias = nn.Parameter(torch.zeros(heads, past_slices * self.offsets))
        self.to_out = nn.Linear(dim, dim)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_axes={self.num_axes}, window={self.window}, past_slices={self.past_slices}, "
                f"heads={self.heads}")

    # -- the pieces, shared by the parallel path and cached sampling ----------------------------
    def feature(self, windows: Tensor) -> Tensor:
        """Causal features from gathered windows (..., K, dim): a masked convolution, the positions
        before each centre only -> (..., dim)."""
        return self.causal_feature(windows[..., : self.offsets // 2, :])

    def features(self, pixels: Tensor) -> Tensor:
        """`feature` at every position of pixels (batch, slices, *space, dim), as a convolution: the input moved
        by each offset of the causal half-window, through that offset's (dim -> dim) part of the weights,
        summed. The same arithmetic as gathering windows, without a window-wide copy of the input (whose
        backward would fill a window-wide gradient per offset)."""
        linear, norm = self.causal_feature[1], self.causal_feature[2]
        before = self.offsets // 2
        weights = rearrange(linear.weight, "out (offset inp) -> out offset inp", offset=before)  # one per offset
        padded = self.pad(pixels)
        space = pixels.shape[2:-1]
        out = linear.bias
        offsets = itertools.product(range(self.window), repeat=len(space))  # raster order, as gather_windows
        for j, offset in zip(range(before), offsets):
            moved = padded
            for axis, (start, size) in enumerate(zip(offset, space), start=2):
                moved = moved.narrow(axis, start, size)  # position p reads p + offset - radius
            out = out + F.linear(moved, weights[:, j])
        return norm(out)

    def keys_values(self, pixels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Causal features, keys and values of whole slices: pixels (batch, slices, *space, dim) -> the features
        (same shape) and keys and values (batch, slices, *space, heads * (dim_heads + 1)), each head with one
        more channel: zero here, the offset bias's place in a key once gathered (see `attend`)."""
        f = self.features(pixels)
        return f, self._one_more(self.to_k(f), 0.0), self._one_more(self.to_v(pixels), 0.0)

    @property
    def kv_width(self) -> int:
        """Channels of a key or value: heads * (dim_heads + 1)."""
        return self.dim + self.heads

    def _one_more(self, t: Tensor, value: float) -> Tensor:
        """(..., heads * e) -> (..., heads * (e + 1)), each head's extra channel set to `value`."""
        return F.pad(t.unflatten(-1, (self.heads, t.shape[-1] // self.heads)), (0, 1), value=value).flatten(-2)

    def valid(self, space: tuple[int, ...], device: torch.device) -> Tensor:
        """Which window positions lie inside a slice of shape `space`: bool (*space, K)."""
        ones = torch.ones(1, 1, *space, 1, device=device)
        return gather_windows(ones, self.radius)[0, 0, ..., 0] > 0

    def attend(self, feature: Tensor, keys: Tensor, values: Tensor, key_mask: Tensor) -> Tensor:
        """feature (batch, *q, dim): the queries' causal features; keys, values (batch, *q, S * K, kv_width)
        gathered from the past slices' `keys_values`; key_mask bool, broadcastable to (batch, *q, S * K)
        -> (batch, *q, dim).

        The learned offset bias enters as one more channel per head, not as SDPA's float mask: each key
        carries its offset's bias there and each query sqrt(dim_heads), so with the scale 1/sqrt(dim_heads)
        the score is q.k/sqrt(dim_heads) + bias. A float mask that needs a gradient would send SDPA to its
        unfused path (3x slower here); this way it runs fused, with the window's validity as a bool mask."""
        e = self.dim // self.heads
        q = self._one_more(self.to_q(feature), math.sqrt(e)).unsqueeze(-2)  # a window axis of length 1
        bias = F.pad(self.offset_bias.t()[..., None], (e, 0)).flatten(-2)  # (S * K, heads * (e + 1))
        out = attend_along_axis(q, keys + bias, values, q.ndim - 2, self.heads, scale=1 / math.sqrt(e),
                                key_mask=key_mask.expand(keys.shape[:-1]))
        out = out.squeeze(-2).unflatten(-1, (self.heads, e + 1))[..., :e]  # the values' extra channel is zero
        return self.to_out(out.flatten(-2))

    # -- the parallel path ----------------------------------------------------------------------
    def forward(self, pixels: Tensor) -> Tensor:
        check_input(pixels, name="pixels", owner=self, ndim=self.num_axes + 2, dim_index=-1, dim=self.dim,
                    layout=f"batch, {self.num_axes} axes, embedding")
        slices, space = pixels.shape[1], tuple(pixels.shape[2:-1])
        f, k, v = self.keys_values(pixels)
        exists = torch.arange(slices, device=pixels.device)[:, None] - self.past_slices + torch.arange(
            self.past_slices, device=pixels.device) >= 0  # (slices, S): slice i - S + j exists
        exists = exists.view(slices, *(1,) * len(space), self.past_slices, 1)
        mask = self.valid(space, pixels.device).unsqueeze(-2) & exists
        return self.attend(f, gather_past_windows(k, self.past_slices, self.radius),
                           gather_past_windows(v, self.past_slices, self.radius), mask.flatten(-2))

    # -- one position at a time (cached sampling) -------------------------------------------------
    def at(self, pixels_padded: Tensor, keys_padded: Tensor, values_padded: Tensor, t: int,
           position: tuple[int, ...], valid: Tensor) -> Tensor:
        """The output at (t, position) from padded buffers (batch, a_1, *space + 2 radius, dim) of the pixel
        embeddings (slice t filled before `position`), and of the keys and values of the slices before t;
        valid: `self.valid(space)`. Returns (batch, dim)."""
        feature = self.feature(window_at(pixels_padded[:, t], position, self.radius))
        keys, values, masks = [], [], []
        for s in range(self.past_slices, 0, -1):  # oldest first, as gather_past_windows
            source = max(t - s, 0)  # a slice before 0 is masked out below; slice 0 stands in for it
            keys.append(window_at(keys_padded[:, source], position, self.radius))
            values.append(window_at(values_padded[:, source], position, self.radius))
            masks.append(valid[position] & (t - s >= 0))
        return self.attend(feature, torch.cat(keys, -2), torch.cat(values, -2), torch.cat(masks, -1))

    def pad(self, t: Tensor) -> Tensor:
        """Zeros around the space axes of (batch, a_1, *space, dim), as gather_windows pads."""
        return F.pad(t, (0, 0) + (self.radius, self.radius) * (t.ndim - 3))

    def inside(self, padded: Tensor) -> Tensor:
        """The inside of a padded buffer (what `pad` padded), as a view."""
        for axis in range(2, padded.ndim - 1):
            padded = padded.narrow(axis, self.radius, padded.shape[axis] - 2 * self.radius)
        return padded


def gather_past_windows(t: Tensor, past: int, radius: int) -> Tensor:
    """For every position (i, p) of t (batch, slices, *space, dim), the windows around p (as gather_windows)
    in slices i - past .. i - 1, oldest first, zero outside the tensor: (batch, slices, *space, past * K, dim)."""
    return _gather(t, radius, past)


def _gather(t: Tensor, radius: int, past: int) -> Tensor:
    """Windows of t (batch, slices, *space, dim): of each position's own slice (past=0), or of the `past`
    slices before it (oldest first). One indexed read of the zero-padded input: the indices are the padded
    positions' own numbers unfolded into windows (an integer tensor, no gradient). Unfolding the input
    itself is as fast eagerly, but its backward under torch.compile (2.13) returns wrong gradients for
    overlapping windows."""
    space, slices = t.ndim - 3, t.shape[1]
    if 0 in t.shape[1:-1]:  # no positions, no windows
        return t.new_zeros(*t.shape[:-1], max(past, 1) * (2 * radius + 1) ** space, t.shape[-1])
    padded = F.pad(t, (0, 0) + (radius, radius) * space + (past, 0))  # `past` zero slices before the first
    ids = torch.arange(math.prod(padded.shape[1:-1]), device=t.device).view(padded.shape[1:-1])
    if past:  # slice i reads padded slices i .. i + past - 1
        windows = ids.narrow(0, 0, slices + past - 1).unfold(0, past, 1)
    else:
        windows = ids.unsqueeze(-1)
    for axis in range(1, 1 + space):
        windows = windows.unfold(axis, 2 * radius + 1, 1)  # (slices, *space, past or 1, k, k, ...)
    return padded.flatten(1, -2)[:, windows.reshape(*t.shape[1:-1], -1)]
