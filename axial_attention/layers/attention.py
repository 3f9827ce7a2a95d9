"""The axis-attention primitive and the modules built on it.

Everything attends in a channel-last layout `(batch, *axial, channels)`: attending along one axis
folds the axes before it (with the batch) into SDPA's batch dimension and the axes after it (with
the heads) into SDPA's head dimension. For a contiguous channel-last tensor both folds are views, so
the only data movement is the one SDPA does itself; `scaled_dot_product_attention` then picks its
fused kernel (flash on CPU and CUDA, memory-efficient, or math).

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

import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..compat.lucidrains_state_dicts import convert_lucidrains_on_load, upgrade_lucidrains_pickle
from ..validation import (
    check_axial_input,
    check_axis_flags,
    check_bool,
    check_divisible,
    check_input,
    check_int,
    check_mask,
    check_probability,
    normalize_dim_index,
)


def _fold(t: Tensor, axis: int, heads: int) -> Tensor:
    """(batch, *pre, L, *post, heads * e) -> (batch * prod(pre), prod(post) * heads, L, e)."""
    prefix = math.prod(t.shape[:axis])
    suffix = math.prod(t.shape[axis + 1 : -1])
    return t.reshape(prefix, t.shape[axis], suffix * heads, t.shape[-1] // heads).transpose(1, 2)


def _fold_per_query(t: Tensor, axis: int) -> Tensor:
    """(batch, *others, heads, Lq, Lk) with `others` the axial axes but `axis` -> SDPA's 4-D layout."""
    # Sizes spelled out, never -1: with an empty batch or a zero-length axis -1 would be ambiguous.
    return t.reshape(math.prod(t.shape[:axis]), math.prod(t.shape[axis:-2]), *t.shape[-2:])


def attend_along_axis(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    axis: int,
    heads: int,
    *,
    key_mask: Optional[Tensor] = None,
    causal: bool = False,
    attn_bias: Optional[Tensor] = None,
    dropout_p: float = 0.0,
    scale: Optional[float] = None,
    need_weights: bool = False,
) -> Union[Tensor, tuple[Tensor, Tensor]]:
    """Multi-head attention along dimension `axis` of channel-last tensors: the package's one primitive.

    q: (batch, *axial_q, heads * dq); k: (batch, *axial_k, heads * dq); v: (batch, *axial_k, heads * dv).
    `axial_k` equals `axial_q` except along `axis`, where keys may be longer (a key/value cache).
    Returns (batch, *axial_q, heads * dv), and with `need_weights` also the attention weights
    (batch, heads, *axial_q, Lk).

    key_mask: bool (batch, *axial_k), True = may be attended to. A query with no key it may attend to
        gets a zero output (finite in forward and backward) instead of SDPA's NaN.
    causal: query i sees keys j <= i + (Lk - Lq), i.e. aligned at the end so the newest queries of a
        cache see every cached key (for Lq == Lk this is the usual lower triangle).
    attn_bias: float, broadcastable to (batch, *axial_q without `axis`, heads, Lq, Lk), added to the
        scores (for learned relative-position terms).
    """
    if not 1 <= axis <= q.ndim - 2:
        raise ValueError(f"axis must be an axial dimension of the {q.ndim}-dim input (1..{q.ndim - 2}), got {axis}")
    len_q, len_k = q.shape[axis], k.shape[axis]
    qf, kf, vf = (_fold(t, axis, heads) for t in (q, k, v))
    batch_fold, head_fold = qf.shape[:2]

    # Everything that restricts which keys a query sees, as one bool mask (None = all allowed).
    allowed = None
    if key_mask is not None:
        km = key_mask.movedim(axis, -1)  # (batch, *pre, *post, Lk)
        km = km.reshape(batch_fold, math.prod(km.shape[axis:-1]), 1, 1, len_k).expand(-1, -1, heads, -1, -1)
        allowed = km.reshape(batch_fold, head_fold, 1, len_k)
    use_is_causal = causal and allowed is None and attn_bias is None and len_q == len_k
    if causal and not use_is_causal and len_q > 1:
        lower = torch.ones(len_q, len_k, dtype=torch.bool, device=q.device).tril(len_k - len_q)
        allowed = lower if allowed is None else allowed & lower

    empty_rows = None
    if allowed is not None:
        empty_rows = ~allowed.any(dim=-1, keepdim=True)
        allowed = allowed | empty_rows
    mask = allowed
    if attn_bias is not None:
        bias = attn_bias.expand(*q.shape[:axis], *q.shape[axis + 1 : -1], heads, len_q, len_k)
        bias = _fold_per_query(bias, axis).to(q.dtype)
        mask = bias if allowed is None else bias.masked_fill(~allowed, float("-inf"))

    def sdpa(values: Tensor, p: float) -> Tensor:
        out = F.scaled_dot_product_attention(
            qf, kf, values, attn_mask=mask, dropout_p=p, is_causal=use_is_causal, scale=scale
        )
        if empty_rows is not None:
            out = out.masked_fill(empty_rows, 0.0)
        if attn_bias is not None and out.numel() == 0:
            # SDPA leaves an additive mask's gradient undefined for empty inputs: a zero that depends on it
            # gives a learned bias a zero gradient instead of none (DDP expects one for every parameter).
            out = out + mask.sum() * 0
        # (B, H, L, E) -> channel-last; SDPA's CPU/CUDA kernels return (B, L, H, E) memory, so a view.
        return out.transpose(1, 2).reshape(*q.shape[:-1], heads * values.shape[-1])

    out = sdpa(vf, dropout_p)
    if not need_weights:
        return out
    # Attending over one-hot values returns the attention weights themselves, through the very same
    # kernel and masks, so inspection cannot disagree with the forward's scores. They are the weights
    # before dropout: in training with dropout_p > 0 the forward applied a randomly thinned copy.
    eye = torch.eye(len_k, dtype=q.dtype, device=q.device).expand(batch_fold, head_fold, len_k, len_k)
    weights = sdpa(eye, 0.0).unflatten(-1, (heads, len_k)).movedim(-2, 1)
    return out, weights


class AxisAttention(nn.Module):
    """Multi-head self-attention along one axial dimension of a channel-last tensor.

    Input and output: (batch, *axial, dim); `axis` is the dimension attended along (1-based: 0 is
    the batch). With need_weights=True also returns the weights (batch, heads, *axial, L).
    `to_q`, `to_kv`, `to_out` carry the same names and layout as `axial-attention` 0.6.1.
    """

    def __init__(
        self,
        dim: int,
        axis: int,
        heads: int = 8,
        dim_heads: Optional[int] = None,
        causal: bool = False,
        dropout: float = 0.0,
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
        hidden = heads * dim_heads
        self.to_q = nn.Linear(dim, hidden, bias=False)
        self.to_kv = nn.Linear(dim, 2 * hidden, bias=False)
        self.to_out = nn.Linear(hidden, dim)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, axis={self.axis}, heads={self.heads}, dim_heads={self.dim_heads}, "
                f"causal={self.causal}, dropout={self.dropout}")

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of x (batch, *axial, dim), each (batch, *axial, heads * dim_heads): what a cache keeps."""
        # Two products with halves of the weight, not one split afterwards: each output is contiguous,
        # so attend_along_axis folds it with views, and backward needs no concatenation of the halves.
        w_k, w_v = self.to_kv.weight.chunk(2, dim=0)
        return F.linear(x, w_k), F.linear(x, w_v)

    def forward(
        self,
        x: Tensor,
        mask: Optional[Tensor] = None,
        *,
        kv: Optional[tuple[Tensor, Tensor]] = None,
        need_weights: bool = False,
    ) -> Union[Tensor, tuple[Tensor, Tensor]]:
        """x: (batch, *axial, dim) -> same shape. kv: precomputed keys/values (e.g. a cache) to attend
        over instead of x's own; `mask` then masks those keys. With need_weights also returns
        (batch, heads, *axial, L) attention weights."""
        check_input(
            x, name="x", owner=self, ndim=self.axis + 2, or_more=True,
            layout=f"channel-last: batch, *axial with at least {self.axis}, {self.dim}", dim_index=-1, dim=self.dim,
        )
        return self._project_out(self._attend(x, mask, kv=kv, need_weights=need_weights))

    def _attend(
        self, x: Tensor, mask: Optional[Tensor] = None, *, kv: Optional[tuple[Tensor, Tensor]] = None,
        need_weights: bool = False,
    ) -> Union[Tensor, tuple[Tensor, Tensor]]:
        """forward without the output projection: (batch, *axial, heads * dim_heads) (and the weights)."""
        k, v = self.project_kv(x) if kv is None else kv
        return attend_along_axis(
            self.to_q(x),
            k,
            v,
            self.axis,
            self.heads,
            key_mask=mask,
            causal=self.causal,
            dropout_p=self.dropout if self.training else 0.0,
            need_weights=need_weights,
        )

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
    forward(x, mask): mask is bool with x's shape minus the embedding axis, True = valid; invalid
        positions are never attended to. need_weights=True (or its earlier name return_attention=True)
        also returns, per axial axis, its weights (batch, heads, *axial, L_axis).
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
    ) -> None:
        super().__init__()
        check_int("num_dimensions", num_dimensions)
        self.dim, self.num_dimensions = check_int("dim", dim), num_dimensions
        self.dim_index = normalize_dim_index("dim_index", dim_index, num_dimensions)
        self.causal = check_axis_flags("causal", causal, num_dimensions)
        self.sum_axial_out = bool(sum_axial_out)  # any truthy value, as 0.6.1 (which only tests it with `if`)
        self.dropout = check_probability("dropout", dropout)
        # In the channel-last working layout the axial axes are dims 1..num_dimensions, in x's order.
        self.axial_attentions = nn.ModuleList(
            AxisAttention(dim, axis, heads, dim_heads, causal=axis_causal, dropout=dropout)
            for axis, axis_causal in zip(range(1, num_dimensions + 1), self.causal)
        )
        self.register_load_state_dict_pre_hook(convert_lucidrains_on_load)  # 0.6.1's state dicts load too

    def __setstate__(self, state: dict) -> None:
        if not upgrade_lucidrains_pickle(self, state):  # a whole AxialAttention pickled by 0.6.1
            super().__setstate__(state)

    @property
    def total_dimensions(self) -> int:
        """The number of dims of x (batch, embedding and the axial axes): 0.6.1's name for num_dimensions + 2."""
        return self.num_dimensions + 2

    def extra_repr(self) -> str:
        first = self.axial_attentions[0]
        return (f"dim={self.dim}, num_dimensions={self.num_dimensions}, heads={first.heads}, "
                f"dim_heads={first.dim_heads}, dim_index={self.dim_index}, sum_axial_out={self.sum_axial_out}, "
                f"causal={self.causal}, dropout={self.dropout}")

    def forward(
        self, x: Tensor, mask: Optional[Tensor] = None, need_weights: bool = False, *,
        return_attention: Optional[bool] = None,
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

        h = x.movedim(self.dim_index, -1)
        weights = []

        def attend(attn: AxisAttention, inp: Tensor) -> Tensor:
            if not need_weights:
                return attn._attend(inp, mask)
            out, w = attn._attend(inp, mask, need_weights=True)
            weights.append(w)
            return out

        if self.sum_axial_out:
            out = None
            for attn in self.axial_attentions:
                out = self._add_projected(out, attn, attend(attn, h))
            out = out.view(*h.shape[:-1], self.dim)
        else:
            out = h
            for attn in self.axial_attentions:
                out = attn.to_out(attend(attn, out))
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
