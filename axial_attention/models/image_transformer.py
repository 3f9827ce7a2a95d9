"""AxialImageTransformer: axial attention + convolutional feed-forward blocks over feature maps.

Inside, the residual stream is channel-last `(batch, *axial, dim)` and contiguous, so attention along
any axis folds without copying and the convolutions see a `channels_last` tensor (one layout, no
permute-copies between sublayers). Each layer is the sublayers [attention along axis 1, ..., along
axis N, feed-forward, feed-forward], as in `axial-attention` 0.6.1; consecutive sublayers are paired
into (f, g) blocks, which are run as a plain residual stack or as a ReversibleSequence.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..compat.lucidrains_state_dicts import convert_lucidrains_on_load, upgrade_lucidrains_pickle
from ..layers.attention import AxisAttention
from ..layers.positional import AxialPositionalEmbedding
from ..layers.reversible import CouplingBlock, ReversibleSequence
from ..validation import (
    check_axial_input,
    check_axial_lengths,
    check_axis_flags,
    check_bool,
    check_choice,
    check_int,
    check_probability,
    check_shape,
    normalize_dim_index,
)

_CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def _var_mean(x: Tensor) -> tuple[Tensor, Tensor]:
    """Biased variance and mean over the last axis; an empty batch gets empty statistics without var_mean's
    degrees-of-freedom warning (it counts the elements of the whole, empty, input)."""
    if x.numel() == 0:
        empty = x.new_empty(*x.shape[:-1], 1)
        return empty, empty
    return torch.var_mean(x, dim=-1, unbiased=False, keepdim=True)


class _ChanNorm(torch.autograd.Function):
    """w * (x - mean) / (std + eps) + b over the last axis, keeping only x (which the residual stream
    holds anyway) for backward: autograd's op-by-op version keeps two more activation-sized tensors
    per feed-forward, 10% of a reversible step's peak at the benchmark's size."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
        var, mean = _var_mean(x)
        ctx.save_for_backward(x, weight)
        ctx.eps = eps
        return torch.addcmul(bias, (x - mean) / (var.sqrt() + eps), weight)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        # Statistics recomputed from x (small) rather than saved, so that double backward sees their graph.
        var, mean = _var_mean(x)
        std = var.sqrt()
        denom = std + ctx.eps
        centred = x - mean
        normed = centred / denom
        reduce = tuple(range(x.ndim - 1))
        grad_weight = (grad * normed).sum(reduce) if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(reduce) if ctx.needs_input_grad[2] else None
        g = grad * weight
        # d/dx of (x - mean) / (std + eps): centring, plus std's dependence on x (std' = centred / (N std)).
        grad_x = (g - g.mean(-1, keepdim=True)) / denom - centred * (
            (g * centred).mean(-1, keepdim=True) / (std * denom * denom)
        )
        return grad_x, grad_weight, grad_bias, None


class _ChanLayerNorm(nn.Module):
    """0.6.1's feed-forward norm on the last axis: (x - mean) / (std + eps), not LayerNorm's sqrt(var + eps),
    so converted checkpoints give the same outputs."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        return _ChanNorm.apply(x, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


class _PreNormAttention(nn.Module):
    def __init__(self, dim: int, axis: int, heads: int, dim_heads: Optional[int], causal: bool, dropout: float,
                 rotary: bool = False):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = AxisAttention(dim, axis, heads, dim_heads, causal=causal, dropout=dropout, rotary=rotary)

    def forward(self, x: Tensor) -> Tensor:
        return self.attn(self.norm(x))


class _ConvFeedForward(nn.Module):
    """norm -> 3^N conv to 4*dim -> LeakyReLU -> dropout -> 3^N conv back, on (batch, *axial, dim).

    Along a causal axis both convolutions are shifted (padded by 2 before, none after) so that index i
    sees only indices <= i, with the same kernel shape as the centred convolution.
    """

    def __init__(self, dim: int, causal: tuple[bool, ...], dropout: float, mult: int = 4) -> None:
        super().__init__()
        conv = _CONVS[len(causal)]
        # F.pad lists the last axis first.
        self.pad = tuple(p for c in reversed(causal) for p in ((2, 0) if c else (1, 1))) if any(causal) else None
        padding = 0 if self.pad else 1
        self.norm = _ChanLayerNorm(dim)
        self.proj_in = conv(dim, dim * mult, 3, padding=padding)
        self.act = nn.LeakyReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.proj_out = conv(dim * mult, dim, 3, padding=padding)

    def _shifted(self, x: Tensor) -> Tensor:
        return x if self.pad is None else F.pad(x, self.pad)

    def forward(self, x: Tensor) -> Tensor:
        # A view: channel-last memory read as (batch, dim, *axial) is what the channels_last kernels want.
        h = self.norm(x).movedim(-1, 1)
        h = self.dropout(self.act(self.proj_in(self._shifted(h))))
        return self.proj_out(self._shifted(h)).movedim(1, -1)


class _ResidualSequence(nn.Module):
    """The blocks run as a plain pre-norm residual stack: x += f(x); x += g(x) (0.6.1's reversible=False)."""

    def __init__(self, blocks: Sequence[CouplingBlock]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = x + block.f(x)
            if block.g is not None:
                x = x + block.g(x)
        return x


class AxialImageTransformer(nn.Module):
    """A stack of axial attention and convolutional feed-forward blocks over image (or video) features.

    x: (batch, dim, height, width) with the default dim_index=1; in general `num_dimensions` axial axes
    with the embedding (size `dim`) at `dim_index`. Returns a tensor of x's shape.

    Each of the `depth` layers runs pre-norm attention along every axial axis in turn, then two
    convolutional feed-forwards (LayerNorm, 3x3 conv to 4*dim, LeakyReLU, 3x3 conv back), each
    added to the residual stream.
    reversible=True runs the sublayers as a two-stream ReversibleSequence (activations recomputed in
    backward; training memory flat in depth; output = mean of the streams, as 0.6.1), False as a plain
    residual stack (faster: no recomputation, but memory grows with depth).
    axial_pos_emb_shape: axial lengths to add a learned AxialPositionalEmbedding for (None: none).
    causal: per axis, as in AxialAttention: output at index i depends only on indices <= i along it
        (the feed-forward convolutions are shifted accordingly).
    dropout: on attention weights and after the feed-forward activation.
    num_dimensions: 2 for images, 3 for video (batch, dim, frames, height, width), 1 for sequences.
    rotary: rotary positions in every attention (relative, any size at any time), instead of or besides the
        learned embedding.
    The arguments up to axial_pos_emb_shape are those of `axial-attention` 0.6.1, with its defaults.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int = 8,
        dim_heads: Optional[int] = None,
        dim_index: int = 1,
        reversible: bool = True,
        axial_pos_emb_shape: Optional[Sequence[int]] = None,
        causal: Union[bool, Sequence[bool]] = False,
        dropout: float = 0.0,
        num_dimensions: int = 2,
        rotary: bool = False,
    ) -> None:
        super().__init__()
        self.dim, self.depth = check_int("dim", dim), check_int("depth", depth)
        check_int("num_dimensions", num_dimensions)
        check_choice("num_dimensions", num_dimensions, tuple(_CONVS))  # the feed-forward is a 3^N convolution
        self.num_dimensions, self.reversible = num_dimensions, check_bool("reversible", reversible)
        self.heads, self.dim_heads = heads, dim_heads  # checked by AxisAttention
        self.dim_index = normalize_dim_index("dim_index", dim_index, num_dimensions)
        self.causal = check_axis_flags("causal", causal, num_dimensions)
        self.dropout = check_probability("dropout", dropout)
        if axial_pos_emb_shape is not None:
            axial_pos_emb_shape = check_shape("axial_pos_emb_shape", axial_pos_emb_shape, num_dimensions)
        self.axial_pos_emb_shape = axial_pos_emb_shape
        self.rotary = check_bool("rotary", rotary)

        self.pos_emb = (
            AxialPositionalEmbedding(dim, axial_pos_emb_shape, emb_dim_index=self.dim_index)
            if axial_pos_emb_shape is not None
            else nn.Identity()
        )
        sublayers: list[nn.Module] = []
        for _ in range(depth):
            # In the channel-last working layout the axial axes are dims 1..N, in x's order.
            sublayers += [
                _PreNormAttention(dim, axis, heads, dim_heads, axis_causal, dropout, rotary)
                for axis, axis_causal in enumerate(self.causal, start=1)
            ]
            sublayers += [_ConvFeedForward(dim, self.causal, dropout) for _ in range(2)]
        # An odd number of sublayers (odd N and depth) leaves the last block with f only.
        blocks = [CouplingBlock(*sublayers[i : i + 2]) for i in range(0, len(sublayers), 2)]
        self.layers = ReversibleSequence(blocks) if reversible else _ResidualSequence(blocks)
        self.register_load_state_dict_pre_hook(convert_lucidrains_on_load)  # 0.6.1's state dicts load too

    def __setstate__(self, state: dict) -> None:
        if not upgrade_lucidrains_pickle(self, state):  # a whole AxialImageTransformer pickled by 0.6.1
            state.setdefault("rotary", False)  # pickled before the option existed
            super().__setstate__(state)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, depth={self.depth}, heads={self.heads}, dim_heads={self.dim_heads}, "
                f"dim_index={self.dim_index}, reversible={self.reversible}, "
                f"axial_pos_emb_shape={self.axial_pos_emb_shape}, causal={self.causal}, dropout={self.dropout}, "
                f"num_dimensions={self.num_dimensions}" + (", rotary=True" if self.rotary else ""))

    def _axial_dims(self) -> list[int]:
        return [d for d in range(1, self.num_dimensions + 2) if d != self.dim_index]

    def forward(self, x: Tensor) -> Tensor:
        check_axial_input(x, self, self.num_dimensions, self.dim_index, self.dim)
        check_axial_lengths(
            x, name="x", owner=self,
            axes=dict(zip(self._axial_dims(), ("first axial", "second axial", "third axial"))),
            reason="its feed-forwards are 3^N convolutions",
        )
        h = self.pos_emb(x).movedim(self.dim_index, -1)
        was_channel_last = h.is_contiguous()
        out = self.layers(h.contiguous()).movedim(-1, self.dim_index)
        # Hand back the layout that came in: 0.6.1's users get a contiguous (batch, dim, H, W) tensor.
        return out if was_channel_last else out.contiguous()
