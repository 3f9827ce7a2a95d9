"""Rotary positions along one axis (RoFormer, Su et al. 2021, arXiv:2104.09864).

Queries and keys are rotated, pair of channels by pair of channels, by angles proportional to their
position, so a score q_i . k_j depends on the positions only through i - j. Along one axis of axial
attention only the positions on that axis differ between a query and its keys, so a 1-D rotation per
attended axis is the whole of N-D rotary attention (RoPE for ViT, Heo et al. 2024, splits the channels
over the axes because it attends over all of them at once). No parameters: any length at any time.

Channels are paired neighbour with neighbour within each head (x_2m with x_2m+1, RoFormer's layout, so a
pair is one complex number and the turn one complex product), the first `rotated` channels of each head
rotate and the rest pass through; pair m turns at frequency theta^(-2m / rotated).
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor

Positions = Union[None, int, Tensor]


def rotary_positions(positions: Positions, length: int, batch: int, device: torch.device) -> Tensor:
    """The coordinates of `length` positions along an axis: (length,) or (batch, length).

    None: 0 .. length - 1; an int: that offset plus 0 .. length - 1 (the new positions of a cache);
    a tensor of shape (length,) or (batch, length): the coordinates themselves (crops, frames of a longer
    video, fractional positions). Checked here, so a wrong shape names the argument."""
    if positions is None or isinstance(positions, int) and not isinstance(positions, bool):
        return torch.arange(length, device=device) + (positions or 0)
    if not isinstance(positions, Tensor):
        raise TypeError(f"positions must be None, an int offset or a tensor of coordinates, got "
                        f"{type(positions).__name__} ({positions!r})")
    if positions.is_complex() or positions.dtype == torch.bool:
        raise TypeError(f"positions must be a real tensor of coordinates, got dtype {positions.dtype}")
    if positions.shape not in ((length,), (batch, length)):
        raise ValueError(f"positions must have shape ({length},) or ({batch}, {length}) (the attended axis' length, "
                         f"optionally per batch element), got {tuple(positions.shape)}")
    return positions.to(device)


def rotate(t: Tensor, axis: int, heads: int, rotated: int, theta: float, positions: Tensor) -> Tensor:
    """Rotate the first `rotated` channels of each head of t (batch, *axial, heads * width) by its
    positions along `axis` ((L,) or (batch, L), as `rotary_positions` returns)."""
    width = t.shape[-1] // heads
    half = rotated // 2
    # Angles in float32 at least (float64 inputs keep float64): bf16 positions x frequencies lose the phase.
    work = torch.float64 if t.dtype == torch.float64 else torch.float32
    freqs = theta ** (-torch.arange(half, device=t.device, dtype=work) / half)
    angles = positions.to(work)[..., None] * freqs  # (L, half) or (batch, L, half)
    later_axes = t.ndim - 2 - axis  # axial axes after `axis`, which share the angles
    shape = (*angles.shape[:-1], *(1,) * later_axes, 1, half)  # ..., L, *later, heads, half
    if angles.ndim == 3:  # per batch element: the axes between the batch and `axis` share them too
        shape = (angles.shape[0], *(1,) * (axis - 1), *shape[1:])
    angles = angles.reshape(shape)
    per_head = t.unflatten(-1, (heads, width))
    pairs = per_head[..., :rotated].to(work).unflatten(-1, (half, 2))  # (x_2m, x_2m+1) per pair m
    if torch.compiler.is_exporting():
        # Exported programs (and ONNX) have no complex tensors: the same turn in real arithmetic. Not under
        # torch.compile: Inductor runs complex products as eager kernels (warning that it cannot generate
        # code for them), and that measured 0.98x the plain layer's forward where its code for this form,
        # recomputing cos and sin at every element, measured 1.5x ((2, 128, 128, 128), 4 heads, CPU).
        cos, sin = torch.cos(angles), torch.sin(angles)
        x, y = pairs.unbind(-1)
        turned = torch.stack([x * cos - y * sin, x * sin + y * cos], dim=-1)
    else:
        # A pair as a complex number times e^(i angle): one pass over the tensor, where the real form's
        # products, sums and stacking make several (measured on CPU: 3.4x the time; the layer's forward
        # 1.19x the plain layer's against 1.09x).
        turns = torch.polar(torch.ones_like(angles), angles)
        turned = torch.view_as_real(torch.view_as_complex(pairs.contiguous()) * turns)
    out = turned.flatten(-2)
    if rotated < width:
        out = torch.cat([out, per_head[..., rotated:].to(work)], dim=-1)
    return out.to(t.dtype).flatten(-2)


def rotated_width(dim_heads: int, fraction: float) -> int:
    """How many channels of each head rotate: dim_heads * fraction, which must be a positive even integer."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise TypeError(f"rotary_fraction must be a number in (0, 1], got {type(fraction).__name__} ({fraction!r})")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"rotary_fraction must be in (0, 1], got {fraction}")
    width = dim_heads * fraction
    rounded = round(width)
    if not math.isclose(width, rounded, abs_tol=1e-9) or rounded % 2:
        raise ValueError(f"rotary_fraction * dim_heads must be an even number of channels (they rotate in pairs); "
                         f"{fraction} * {dim_heads} = {width:g}")
    return rounded


def check_theta(theta: float) -> float:
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not theta > 1.0:
        raise ValueError(f"rotary_theta must be a number > 1 (the base of the rotation periods), got {theta!r}")
    return float(theta)


def describe_rotary(rotary: bool, theta: float, rotated: Optional[int]) -> str:
    """The extra_repr entry: nothing when off."""
    return f", rotary=True, rotary_theta={theta:g}, rotated={rotated}" if rotary else ""
