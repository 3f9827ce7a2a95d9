"""The attention modules: AxisAttention along one axis, AxialAttention along every axis of an N-D tensor.

Both run on the primitive (primitive.py, `attend_along_axis`, imported here under its earlier path too)
in a channel-last layout `(batch, *axial, channels)`, with their options beside it: rotary positions
(rotary.py), gating, local windows and the bounded-memory chunks (chunking.py).

Axes, one convention for the package. An axis is a dim of the tensor it applies to, counted as
torch counts them, with the batch at 0 (never an axial axis):
- the modules users call take the embedding's dim of *their* tensor, negative numbers counting from
  the end: AxialAttention and AxialImageTransformer `dim_index` (1 for (batch, dim, H, W), -1 for
  channel-last), and AxialPositionalEmbedding `emb_dim_index` (a second name only because 0.6.1
  chose it: its users' code and checkpoints keep working). The axial axes are the other dims, in order, and every
  per-axis argument or result (`causal`, `mask`, the tuple of weights) follows that order;
- the building blocks work channel-last, (batch, *axial, dim), and take the axial axis itself, from 1:
  `attend_along_axis(axis=1)` and `AxisAttention(axis=1)` attend along the first axial axis;
- PositionSensitiveAxialAttention works on NCHW maps and takes axis "height" (dim 2) or "width" (3).

Attention weights, one name and one layout: attend_along_axis, AxisAttention, AxialAttention and
PositionSensitiveAxialAttention return them when asked with `need_weights=True`, as
(batch, heads, *axial, L): for each query position (the input's axial positions, in its order) and
head, the distribution over the L keys along the attended axis.
AxialAttention returns a tuple of them, one per axial axis (L that axis' length);
`return_attention=True` is kept as AxialAttention's earlier name for the same request.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..compat.lucidrains_state_dicts import convert_lucidrains_on_load, upgrade_lucidrains_pickle
from ..validation import (
    check_attn_bias,
    check_axial_input,
    check_axis_flags,
    check_axis_windows,
    check_bool,
    check_chunk_size,
    check_divisible,
    check_input,
    check_int,
    check_mask,
    check_probability,
    check_window,
    describe,
    normalize_dim_index,
)
from .chunking import run_in_chunks
from .primitive import attend_along_axis  # noqa: F401  (also served at this path)
from .rotary import Positions, check_theta, describe_rotary, rotary_positions, rotate, rotated_width


class AxisAttention(nn.Module):
    """Multi-head self-attention along one axial dimension of a channel-last tensor.

    Input and output: (batch, *axial, dim); `axis` is the dimension attended along (1-based: 0 is
    the batch). With need_weights=True also returns the weights (batch, heads, *axial, L).
    `to_q`, `to_kv`, `to_out` carry the same names and layout as `axial-attention` 0.6.1.

    Options, all off by default:
    rotary: rotary positions along the axis (rotary.py): queries and keys rotated by their coordinates,
        `rotary_fraction` of each head's channels at frequencies theta^(-2m / rotated), `rotary_theta` = theta.
    gating: a sigmoid gate per head and channel, computed from the input, on the attention's output before
        the output projection (AlphaFold 2's gated attention, as OpenFold writes it: starts open, at 0.73).
    window: a query attends only to keys within `window` positions along the axis (with causal: the
        `window` before it and itself).
    chunk_size: bound training memory: the positions are processed in chunks of at most about
        `chunk_size` positions (whole slices of the largest other axis), each recomputed in backward, so
        activations of the whole tensor are never held; the same outputs and gradients.
    forward(x, mask, attn_bias=..., positions=...): attn_bias (batch, heads, L, L) shared by every line or
    (batch, *other axes, heads, L, L), added to the scores; positions the rotary coordinates (an int offset,
    or (L,) / (batch, L) coordinates; default 0..L-1).
    """

    # Class-level defaults: modules pickled before these options existed (by 0.6.1 or 0.2.0) lack them.
    rotary, rotary_theta, rotated, gating, window, chunk_size = False, 10000.0, None, False, None, None

    def __init__(
        self,
        dim: int,
        axis: int,
        heads: int = 8,
        dim_heads: Optional[int] = None,
        causal: bool = False,
        dropout: float = 0.0,
        *,
        rotary: bool = False,
        rotary_theta: float = 10000.0,
        rotary_fraction: float = 1.0,
        gating: bool = False,
        window: Optional[int] = None,
        chunk_size: Optional[int] = None,
    ) -> None:
        super().__init__()
        check_int("dim", dim)
        check_int("axis", axis)
        check_int("heads", heads)
        if dim_heads is None:
            check_divisible("dim", dim, "heads", heads, " when dim_heads is not given; pass dim_heads to choose the "
                            "per-head width")
            dim_heads = dim // heads
        check_int("dim_heads", dim_heads)
        self.dim, self.axis, self.heads, self.dim_heads = dim, axis, heads, dim_heads
        self.causal = check_bool("causal", causal)
        self.dropout = check_probability("dropout", dropout)
        self.rotary = check_bool("rotary", rotary)
        if rotary:
            self.rotary_theta, self.rotated = check_theta(rotary_theta), rotated_width(dim_heads, rotary_fraction)
        self.gating = check_bool("gating", gating)
        self.window = check_window("window", window)
        self.chunk_size = check_chunk_size("chunk_size", chunk_size)
        hidden = heads * dim_heads
        self.to_q = nn.Linear(dim, hidden, bias=False)
        self.to_kv = nn.Linear(dim, 2 * hidden, bias=False)
        if gating:  # OpenFold's initialisation: weights 0, bias 1, so every gate starts at sigmoid(1)
            self.to_gate = nn.Linear(dim, hidden)
            nn.init.zeros_(self.to_gate.weight)
            nn.init.ones_(self.to_gate.bias)
        self.to_out = nn.Linear(hidden, dim)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, axis={self.axis}, heads={self.heads}, dim_heads={self.dim_heads}, "
                f"causal={self.causal}, dropout={self.dropout}" + self._options_repr())

    def _options_repr(self) -> str:
        """The options that are on, for extra_repr (nothing for a plain layer)."""
        return (describe_rotary(self.rotary, self.rotary_theta, self.rotated)
                + (", gating=True" if self.gating else "")
                + (f", window={self.window}" if self.window is not None else "")
                + (f", chunk_size={self.chunk_size}" if self.chunk_size is not None else ""))

    def project_kv(self, x: Tensor, positions: Positions = None) -> tuple[Tensor, Tensor]:
        """Keys and values of x (batch, *axial, dim), each (batch, *axial, heads * dim_heads): what a cache keeps.
        With rotary positions the keys come rotated by `positions` (default 0..L-1 along the axis)."""
        # Two products with halves of the weight, not one split afterwards: each output is contiguous,
        # so attend_along_axis folds it with views, and backward needs no concatenation of the halves.
        w_k, w_v = self.to_kv.weight.chunk(2, dim=0)
        k, v = F.linear(x, w_k), F.linear(x, w_v)
        return (self._rotate(k, positions), v) if self.rotary else (k, v)

    def _rotate(self, t: Tensor, positions: Positions) -> Tensor:
        coords = rotary_positions(positions, t.shape[self.axis], t.shape[0], t.device)
        return rotate(t, self.axis, self.heads, self.rotated, self.rotary_theta, coords)

    def forward(
        self,
        x: Tensor,
        mask: Optional[Tensor] = None,
        *,
        kv: Optional[tuple[Tensor, Tensor]] = None,
        need_weights: bool = False,
        attn_bias: Optional[Tensor] = None,
        positions: Positions = None,
    ) -> Union[Tensor, tuple[Tensor, Tensor]]:
        """x: (batch, *axial, dim) -> same shape. kv: precomputed keys/values (e.g. a cache, from `project_kv`)
        to attend over instead of x's own; `mask` then masks those keys, and `positions` (rotary) are the
        queries' only. With need_weights also returns (batch, heads, *axial, L) attention weights."""
        check_input(
            x, name="x", owner=self, ndim=self.axis + 2, or_more=True,
            layout=f"channel-last: batch, *axial with at least {self.axis}, {self.dim}", dim_index=-1, dim=self.dim,
        )
        return self.attend_and_project(x, mask, kv=kv, need_weights=need_weights, attn_bias=attn_bias,
                                       positions=positions)

    def attend_and_project(
        self, x: Tensor, mask: Optional[Tensor] = None, *, kv: Optional[tuple[Tensor, Tensor]] = None,
        need_weights: bool = False, attn_bias: Optional[Tensor] = None, positions: Positions = None,
    ) -> Union[Tensor, tuple[Tensor, Tensor]]:
        """forward without the input check (its callers checked x), in chunks when chunk_size is set."""
        if attn_bias is not None:
            len_k = x.shape[self.axis] if kv is None else kv[0].shape[self.axis]
            attn_bias = check_attn_bias(attn_bias, name="attn_bias", owner=self, axis=self.axis,
                                        query_shape=x.shape, heads=self.heads, len_k=len_k)

        def run(x: Tensor, mask: Optional[Tensor], attn_bias: Optional[Tensor], positions: Positions):
            return self._project_out(self._attend(x, mask, kv=kv, need_weights=need_weights, attn_bias=attn_bias,
                                                  positions=positions))

        if self.chunk_size is None or kv is not None:
            return run(x, mask, attn_bias, positions)
        return run_in_chunks(run, x, self.axis, self.chunk_size, mask, attn_bias, positions)

    def _attend(
        self, x: Tensor, mask: Optional[Tensor] = None, *, kv: Optional[tuple[Tensor, Tensor]] = None,
        need_weights: bool = False, attn_bias: Optional[Tensor] = None, positions: Positions = None,
    ) -> Union[Tensor, tuple[Tensor, Tensor]]:
        """forward without the output projection: (batch, *axial, heads * dim_heads) (and the weights).
        attn_bias is in check_attn_bias's full form."""
        if positions is not None and not self.rotary:
            raise ValueError(f"positions were given but {describe(self)} has no rotary positions; build it with "
                             f"rotary=True")
        k, v = self.project_kv(x, positions) if kv is None else kv
        q = self.to_q(x)
        if self.rotary:
            q = self._rotate(q, positions)
        result = attend_along_axis(
            q, k, v, self.axis, self.heads, key_mask=mask, causal=self.causal, attn_bias=attn_bias,
            dropout_p=self.dropout if self.training else 0.0, need_weights=need_weights, window=self.window,
        )
        if not self.gating:
            return result
        gate = torch.sigmoid(self.to_gate(x))
        return (result[0] * gate, result[1]) if need_weights else result * gate

    def _project_out(self, result: Union[Tensor, tuple[Tensor, Tensor]]) -> Union[Tensor, tuple[Tensor, Tensor]]:
        if isinstance(result, tuple):
            return self.to_out(result[0]), result[1]
        return self.to_out(result)


class AxialAttention(nn.Module):
    """Attention along every axial dimension of an N-dimensional tensor.

    x: (batch, ...) with `num_dimensions` axial axes and the embedding (size `dim`) at `dim_index`,
    e.g. (batch, dim, height, width) with dim_index=1, or (batch, frames, height, width, dim) with
    num_dimensions=3. Returns a tensor of x's shape.

    sum_axial_out: sum the per-axis attentions of x (True) or apply them one after another (False).
    causal: True/False for every axis, or one bool per axial axis in the order they appear in x;
        causal along an axis means the output at index i depends only on indices <= i along it.
    rotary, rotary_theta, rotary_fraction, gating, chunk_size: as AxisAttention's, for every axis;
        window: None or an int for every axis, or one (None or int) per axial axis.
    forward(x, mask): mask is bool with x's shape minus the embedding axis, True = valid; invalid
        positions are never attended to. need_weights=True (or its earlier name return_attention=True)
        also returns, per axial axis, its weights (batch, heads, *axial, L_axis).
        attn_bias: one additive bias (or None) per axial axis, each (batch, heads, L, L) shared by every
        line along that axis or (batch, *the other axial axes, heads, L, L), broadcastable.
        positions: rotary coordinates, one entry (None, an int offset, or (L,) / (batch, L)) per axial axis.
    """

    def __init__(
        self,
        dim: int,
        num_dimensions: int = 2,
        heads: int = 8,
        dim_heads: Optional[int] = None,
        dim_index: int = -1,
        sum_axial_out: bool = True,
        causal: Union[bool, Sequence[bool]] = False,
        dropout: float = 0.0,
        *,
        rotary: bool = False,
        rotary_theta: float = 10000.0,
        rotary_fraction: float = 1.0,
        gating: bool = False,
        window: Union[None, int, Sequence[Optional[int]]] = None,
        chunk_size: Optional[int] = None,
    ) -> None:
        super().__init__()
        check_int("num_dimensions", num_dimensions)
        self.dim, self.num_dimensions = check_int("dim", dim), num_dimensions
        self.dim_index = normalize_dim_index("dim_index", dim_index, num_dimensions)
        self.causal = check_axis_flags("causal", causal, num_dimensions)
        self.sum_axial_out = bool(sum_axial_out)  # any truthy value, as 0.6.1 (which only tests it with `if`)
        self.dropout = check_probability("dropout", dropout)
        self.window = check_axis_windows("window", window, num_dimensions)
        self.chunk_size = check_chunk_size("chunk_size", chunk_size)
        # In the channel-last working layout the axial axes are dims 1..num_dimensions, in x's order.
        self.axial_attentions = nn.ModuleList(
            AxisAttention(dim, axis, heads, dim_heads, causal=axis_causal, dropout=dropout, rotary=rotary,
                          rotary_theta=rotary_theta, rotary_fraction=rotary_fraction, gating=gating,
                          window=axis_window, chunk_size=chunk_size)
            for axis, axis_causal, axis_window in zip(range(1, num_dimensions + 1), self.causal, self.window)
        )
        self.register_load_state_dict_pre_hook(convert_lucidrains_on_load)  # 0.6.1's state dicts load too

    def __setstate__(self, state: dict) -> None:
        if not upgrade_lucidrains_pickle(self, state):  # a whole AxialAttention pickled by 0.6.1
            state.setdefault("window", (None,) * state["num_dimensions"])  # pickled before windows existed
            state.setdefault("chunk_size", None)
            super().__setstate__(state)

    @property
    def total_dimensions(self) -> int:
        """The number of dims of x (batch, embedding and the axial axes): 0.6.1's name for num_dimensions + 2."""
        return self.num_dimensions + 2

    def extra_repr(self) -> str:
        first = self.axial_attentions[0]
        options = (describe_rotary(first.rotary, first.rotary_theta, first.rotated)
                   + (", gating=True" if first.gating else "")
                   + (f", window={self.window}" if any(w is not None for w in self.window) else "")
                   + (f", chunk_size={self.chunk_size}" if self.chunk_size is not None else ""))
        return (f"dim={self.dim}, num_dimensions={self.num_dimensions}, heads={first.heads}, "
                f"dim_heads={first.dim_heads}, dim_index={self.dim_index}, sum_axial_out={self.sum_axial_out}, "
                f"causal={self.causal}, dropout={self.dropout}" + options)

    def _per_axis(self, name: str, value: Any) -> tuple:
        """attn_bias / positions: None, or one entry per axial axis (a bare entry when there is one axis)."""
        if value is None:
            return (None,) * self.num_dimensions
        if self.num_dimensions == 1 and not isinstance(value, (tuple, list)):
            return (value,)
        if not isinstance(value, (tuple, list)) or len(value) != self.num_dimensions:
            got = f"{len(value)} entries" if isinstance(value, (tuple, list)) else type(value).__name__
            raise ValueError(f"{name} must be a tuple with one entry (or None) per axial axis "
                             f"({self.num_dimensions}) of {describe(self)}, got {got}")
        return tuple(value)

    def forward(
        self, x: Tensor, mask: Optional[Tensor] = None, need_weights: bool = False, *,
        return_attention: Optional[bool] = None,
        attn_bias: Optional[Sequence[Optional[Tensor]]] = None,
        positions: Optional[Sequence[Positions]] = None,
    ) -> Union[Tensor, tuple[Tensor, tuple[Tensor, ...]]]:
        if return_attention is not None:  # the earlier name of need_weights, kept for code written against it
            if need_weights and not return_attention:
                raise ValueError("need_weights=True and return_attention=False disagree; return_attention is the "
                                 "earlier name of need_weights: pass one of them")
            need_weights = bool(return_attention)
        check_axial_input(x, self, self.num_dimensions, self.dim_index, self.dim)
        if mask is not None:
            expected = x.shape[: self.dim_index] + x.shape[self.dim_index + 1 :]
            check_mask(mask, expected, f"x of shape {tuple(x.shape)} with dim_index={self.dim_index}")
        biases, coords = self._per_axis("attn_bias", attn_bias), self._per_axis("positions", positions)

        h = x.movedim(self.dim_index, -1)
        weights = []

        def keep(result: Union[Tensor, tuple[Tensor, Tensor]]) -> Tensor:
            if not need_weights:
                return result
            weights.append(result[1])
            return result[0]

        axes = list(zip(self.axial_attentions, biases, coords))
        if self.sum_axial_out and self.chunk_size is None:
            out = None
            for attn, bias, pos in axes:
                if bias is not None:
                    bias = check_attn_bias(bias, name="attn_bias", owner=attn, axis=attn.axis, query_shape=h.shape,
                                           heads=attn.heads, len_k=h.shape[attn.axis])
                o = keep(attn._attend(h, mask, need_weights=need_weights, attn_bias=bias, positions=pos))
                out = self._add_projected(out, attn, o)
            out = out.view(*h.shape[:-1], self.dim)
        elif self.sum_axial_out:  # chunked: each axis projected inside its chunks, then summed
            out = 0
            for attn, bias, pos in axes:
                out = out + keep(attn.attend_and_project(h, mask, need_weights=need_weights, attn_bias=bias,
                                                         positions=pos))
        else:
            out = h
            for attn, bias, pos in axes:
                out = keep(attn.attend_and_project(out, mask, need_weights=need_weights, attn_bias=bias,
                                                   positions=pos))
        out = out.movedim(-1, self.dim_index)
        return (out, tuple(weights)) if need_weights else out

    def _add_projected(self, out: Optional[Tensor], attn: AxisAttention, o: Tensor) -> Tensor:
        """out + attn.to_out(o) on (positions, dim) rows, written into `out`; out=None starts the buffer with
        every axis' bias, summed. Over the axes this is sum_i to_out_i(o_i): the arithmetic of one product
        of the concatenated o_i with the stacked weights, without the concatenation, per-axis outputs or a
        separate sum, and each o_i can be freed as soon as it is projected."""
        rows = o.reshape(-1, o.shape[-1])
        if out is None:
            bias = torch.stack([a.to_out.bias for a in self.axial_attentions]).sum(0)
            return torch.addmm(bias, rows, attn.to_out.weight.t())
        # Under autocast addmm ran in the low precision; in-place ops are not autocast, so cast their operands.
        return out.addmm_(rows.to(out.dtype), attn.to_out.weight.t().to(out.dtype))
