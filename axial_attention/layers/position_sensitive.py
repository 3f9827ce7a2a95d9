"""Position-sensitive axial attention: Wang et al., "Axial-DeepLab" (ECCV 2020, arXiv 2003.07853), Eq. 4.

    y_o = sum_{p in N(o)} softmax_p(q_o.k_p + q_o.r^q_{p-o} + k_p.r^k_{p-o}) (v_p + r^v_{p-o})

along one spatial axis of a (batch, channels, height, width) map, with the paper's batch norms on the
q/k/v projection, on each of the three similarity terms and on the two output terms.

This is the package's one attention that does NOT go through `attend_along_axis` (SDPA): it is the
separated explicit path ARCHITECTURE.md allows. The reason is the value term sum_p a_op r^v_{p-o}:
it needs every weight a_op, which SDPA does not return, and getting them through `need_weights` is a
second SDPA over L-wide one-hot values (L^3 work per line against the attention's own L^2 d, 7x more
at L = 56, d = 8). An additive bias into SDPA would carry the q.r^q and k.r^k terms but not this one.

With the weights materialised, the work is keeping every (L, L) pass cheap:
  * the relative logits are one small product per query position (q_o against r^q looked up by
    position) and per key position (k_p against r^k), so each writes L columns, not 2L - 1;
  * each similarity term's batch norm is a per-head scale (its shift cancels in the softmax); the
    scales fold into q and the tables, and in training their batch statistics come from (d, d)
    second moments, so (with a global span) no term is materialised on its own;
  * lines are attended in chunks whose (L, L) temporaries stay in cache, in buffers reused from
    chunk to chunk;
  * with autograd, the chunks run inside one autograd node whose backward walks the same chunks
    with the saved weights and writes the gradients of q, k and v in place (autograd through the
    chunks' slices zero-filled a full-size gradient per chunk), and the similarity statistics are
    another node with a closed-form backward.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..validation import (
    check_axial_lengths,
    check_bool,
    check_divisible,
    check_input,
    check_int,
    describe,
    spatial_axis,
)
from .position_sensitive_kernels import (
    PositionSensitiveAttentionFunction,
    SimilarityMoments,
    attend_lines,
    by_position,
    memory_format_of,
)


def local_window(length: int, span: int, device: Optional[torch.device] = None) -> Optional[Tensor]:
    """Bool (L, L), True where query o may attend to key p, or None when every key is in reach.

    Query o sees the `span` keys starting at clamp(o - (span - 1) // 2, 0, L - span): centred where it
    fits, shifted inwards at the borders so every query sees exactly `span` keys. Offsets p - o then
    stay within +-(span - 1), exactly the 2 * span - 1 entries of the relative tables.
    """
    if length <= span:
        return None
    pos = torch.arange(length, device=device)
    start = (pos - (span - 1) // 2).clamp(0, length - span)
    return (pos >= start[:, None]) & (pos < start[:, None] + span)


class PositionSensitiveAxialAttention(nn.Module):
    """Multi-head position-sensitive attention along the height or width of a feature map (Eq. 4).

    x: (batch, in_channels, height, width) -> (batch, out_channels, ceil(height / stride), ceil(width / stride)).
    With need_weights=True also returns the attention weights (batch, heads, height, width, L), L the
    attended axis' length (before any stride).

    heads: each head has value width out_channels // heads and query/key width half that, as in the
        paper's models; relative tables (2 * span - 1 entries) are shared by the heads.
    span: global (local=False): the longest axis the layer attends over in full; a longer input is
        an error. local=True: each query attends to a window of `span` keys around it (see
        `local_window`), so any length runs; up to `span` this is the same as global.
    stride: average-pool both spatial axes by this factor after attending, as the strided Axial-ResNet
        block does.

    Batch norms (the paper's, eps 1e-5, momentum 0.1): `bn_qkv` on the projection, one scale per term
    and head on the similarities, `bn_output` on q.v and the value-relative term before they are
    summed. The similarity norms keep only a scale and a running variance: their shift is the same
    for every key of a query, so it cancels in the softmax.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: Optional[int] = None,
        heads: int = 8,
        span: int = 56,
        axis: Union[str, int] = "height",
        local: bool = False,
        stride: int = 1,
    ) -> None:
        super().__init__()
        check_int("in_channels", in_channels)
        out_channels = in_channels if out_channels is None else out_channels
        check_int("out_channels", out_channels)
        check_int("heads", heads)
        self.span, self.stride = check_int("span", span), check_int("stride", stride)
        check_divisible("out_channels", out_channels, "heads", heads)
        dim_v = out_channels // heads
        if dim_v % 2 != 0:
            raise ValueError(
                f"out_channels // heads = {dim_v} must be even: each head's query/key width is half its value "
                f"width (got out_channels={out_channels}, heads={heads})"
            )
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        self.dim_qk, self.dim_v = dim_v // 2, dim_v
        self.axis, self.local = spatial_axis("axis", axis), check_bool("local", local)
        self.eps, self.momentum = 1e-5, 0.1

        group = 2 * self.dim_qk + self.dim_v
        self.qkv = nn.Conv2d(in_channels, heads * group, 1, bias=False)  # per head: [q | k | v]
        self.bn_qkv = nn.BatchNorm2d(heads * group)
        # Columns of `relative` are offsets p - o from -(span - 1) to span - 1; rows are r^q, r^k, r^v.
        self.relative = nn.Parameter(torch.empty(group, 2 * span - 1))
        self.similarity_weight = nn.Parameter(torch.ones(3, heads))  # q.k, q.r^q, k.r^k
        self.register_buffer("similarity_running_var", torch.ones(3, heads))
        self.bn_output = nn.BatchNorm1d(2 * out_channels)  # [q.v terms | value-relative terms]
        # Axial-DeepLab's initialisation: unit-variance logits at the start.
        nn.init.normal_(self.qkv.weight, 0.0, math.sqrt(1.0 / in_channels))
        nn.init.normal_(self.relative, 0.0, math.sqrt(1.0 / dim_v))

    @property
    def axis_name(self) -> str:
        return "height" if self.axis == 2 else "width"

    def extra_repr(self) -> str:
        axis = self.axis_name
        return (
            f"{self.in_channels}, {self.out_channels}, heads={self.heads}, span={self.span}, axis={axis!r}, "
            f"local={self.local}, stride={self.stride}"
        )

    def _tables(self, length: int) -> tuple[Tensor, Tensor, Tensor]:
        """r^q, r^k, r^v for offsets -(L-1)..L-1, each (width, 2L - 1); offsets beyond the span are zero."""
        extra = length - self.span
        # Beyond the span (local mode) the weights are zero anyway; zero columns keep one code path. A shorter
        # axis crops (a negative pad): a new tensor, where a view of the middle columns would leave torch.export
        # a guard on its contiguity (on 2L - 1 == 2 * span - 1) that fixes the length.
        table = F.pad(self.relative, (extra, extra))
        return table.split([self.dim_qk, self.dim_qk, self.dim_v], dim=0)

    def _similarity_scales(self, q: Tensor, k: Tensor, tq: Tensor, tk: Tensor, window: Optional[Tensor]) -> Tensor:
        """(3, heads) factors gamma / sqrt(var + eps) for q.k, q.r^q, k.r^k: batch statistics or running variance.

        The batch moments come from (d x d) second-moment matrices rather than the (L, L) terms, so
        training attends chunk by chunk like eval and no term is built only to be measured.
        """
        heads, rows, length, _ = q.shape
        if not self.training or rows == 0:  # an empty batch has no statistics: use (and keep) the running ones
            return self.similarity_weight * torch.rsqrt(self.similarity_running_var + self.eps)
        pairs = q.new_ones(length, length) if window is None else window.to(q.dtype)  # [o, p]: attended
        # Every query attends to all keys, or to exactly `span` of them in a window: an exact count,
        # with no reduction (a device sync on CUDA, and rounding in bf16).
        count = rows * length * (length if window is None else self.span)
        # Per position i, the table's sum over the attended pairs and its (d x d) second moment.
        rq, rk = by_position(tq).permute(1, 2, 0), by_position(tk).permute(2, 1, 0)
        first_q, first_k = torch.einsum("ij,ijc->ic", pairs, rq), torch.einsum("ji,ijc->ic", pairs, rk)
        second_q = torch.einsum("ij,ijc,ijd->icd", pairs, rq, rq)
        second_k = torch.einsum("ji,ijc,ijd->icd", pairs, rk, rk)
        sums, squares = SimilarityMoments.apply(q, k, first_q, second_q, first_k, second_k, window is None)
        if window is not None:  # windowed pair sums have no small closed form; measure the term itself
            scores = q @ k.mT
            qk = torch.stack(((scores * pairs).sum((1, 2, 3)), (scores.square() * pairs).sum((1, 2, 3))))
            sums, squares = sums + F.pad(qk[:1], (0, 0, 0, 2)), squares + F.pad(qk[1:], (0, 0, 0, 2))
        mean = sums / count
        var = (squares / count - mean.square()).clamp_min(0)
        with torch.no_grad():
            unbiased = var * (count / max(count - 1, 1))
            self.similarity_running_var.lerp_(unbiased.to(self.similarity_running_var.dtype), self.momentum)
        return self.similarity_weight * torch.rsqrt(var + self.eps)

    def _eval_projection(self) -> tuple[Tensor, Tensor]:
        """Weight and bias of the 1x1 projection with every eval-mode affine map that commutes with it folded in.

        bn_qkv folds into the projection. The q.v half of bn_output folds into v: its scale directly,
        and both halves' shifts because the weights of a query sum to one.
        """
        bn, out = self.bn_qkv, self.bn_output
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        out_scale = out.weight * torch.rsqrt(out.running_var + out.eps)
        out_shift = (out.bias - out.running_mean * out_scale).view(2, -1).sum(0).view(self.heads, -1)
        ones = scale.new_ones(self.heads, 2 * self.dim_qk)
        v_scale = torch.cat((ones, out_scale[: self.out_channels].view(self.heads, -1)), dim=1).flatten()
        v_shift = torch.cat((torch.zeros_like(ones), out_shift), dim=1).flatten()
        return self.qkv.weight * (scale * v_scale)[:, None, None, None], shift * v_scale + v_shift

    def forward(self, x: Tensor, need_weights: bool = False) -> Union[Tensor, tuple[Tensor, Tensor]]:
        check_input(
            x, name="x", owner=self, ndim=4, layout="batch, channels, height, width",
            dim_index=1, dim=self.in_channels,
        )
        check_axial_lengths(
            x, name="x", owner=self, axes={2: "height", 3: "width"},
            reason="its projection is a convolution",
        )
        length, heads = x.shape[self.axis], self.heads
        if not self.local and length > self.span:
            raise ValueError(
                f"x has {self.axis_name} {length}, but {describe(self)} attends globally over at most "
                f"span={self.span} positions; build it with span >= {length}, or with local=True to attend "
                f"within windows of {self.span}"
            )
        qkv = self.bn_qkv(self.qkv(x)) if self.training else F.conv2d(x, *self._eval_projection())
        # q, k and v each laid out (heads, batch * lines, L, width): one copy each, after which every product
        # reads its operands in place and the backward writes their gradients in place.
        to_lines = (1, 0, 4, 3, 2) if self.axis == 2 else (1, 0, 3, 4, 2)
        q, k, v = (
            t.permute(to_lines).contiguous().flatten(1, 2)
            for t in qkv.unflatten(1, (heads, -1)).split([self.dim_qk, self.dim_qk, self.dim_v], dim=2)
        )
        batch, lines = x.shape[0], x.shape[5 - self.axis]
        tq, tk, tv = self._tables(length)
        window = local_window(length, self.span, x.device)

        s = self._similarity_scales(q, k, tq, tk, window)
        # Each term's scale goes into a factor without an (L, L) size: the tables, looked up by position
        # and laid out for one product per position: r^q as (heads, o, dq, p), r^k as (heads, p, dq, o).
        rq = (by_position(tq) * s[1, :, None, None, None]).transpose(1, 2).contiguous()
        rk = (by_position(tk) * s[2, :, None, None, None]).permute(0, 3, 1, 2).contiguous()
        # In the projection's dtype: the products write into buffers of it (out= is outside autocast).
        tables = tuple(t.to(q.dtype) for t in (rq, rk, s[0], by_position(tv).permute(1, 2, 0).contiguous()))
        rel_scale = None
        if not self.training:  # the q.v half of bn_output is already in v (see _eval_projection)
            bn = self.bn_output
            rel_scale = (bn.weight * torch.rsqrt(bn.running_var + bn.eps))[self.out_channels :]
            rel_scale = rel_scale.view(heads, 1, 1, -1).to(q.dtype)
        if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, *tables)):
            # One autograd node for every chunk: autograd through the chunks' slices would give each
            # chunk a zero-filled gradient of the whole projection (most of a training step's time).
            terms, weights = PositionSensitiveAttentionFunction.apply(
                q, k, v, *tables, window, self.chunk_scores, need_weights
            )
            if rel_scale is not None:  # eval: add the terms here, where autograd sees it
                terms = torch.addcmul(terms[0].view(heads, -1, length, self.dim_v),
                                      terms[1].view(heads, -1, length, self.dim_v), rel_scale)
        else:  # without autograd, eval adds the value-relative term into the q.v term chunk by chunk
            terms, weights = attend_lines(q, k, v, *tables, window, self.chunk_scores, need_weights, rel_scale)

        # (heads, batch, lines, L, dv) -> (batch, heads, dv, height, width)
        order = (1, 0, 4, 3, 2) if self.axis == 2 else (1, 0, 4, 2, 3)
        if self.training:  # terms: (2, heads * batch * lines, L, dv) -> bn_output's (batch, 2 * channels, pixels)
            terms = terms.view(2, heads, batch, lines, length, self.dim_v)
            terms = terms.permute(order[0] + 1, 0, *(i + 1 for i in order[1:]))
            out = self.bn_output(terms.reshape(batch, 2 * self.out_channels, lines * length))
            out = out.view(batch, 2, self.out_channels, *x.shape[2:]).sum(1)
        else:  # the sum, laid out once, in x's memory format
            out = torch.empty((batch, self.out_channels, *x.shape[2:]), dtype=terms.dtype, device=terms.device,
                              memory_format=memory_format_of(x))
            out.view(batch, heads, self.dim_v, *x.shape[2:]).copy_(
                terms.view(heads, batch, lines, length, self.dim_v).permute(order))
        if self.stride > 1:
            # ceil_mode matches a stride-s 1x1 convolution's output size, so odd sizes meet the shortcut.
            out = F.avg_pool2d(out, self.stride, self.stride, ceil_mode=True)
        if not need_weights:
            return out
        weights = weights.view(heads, batch, lines, length, length)
        return out, weights.permute((1, 0, 3, 2, 4) if self.axis == 2 else (1, 0, 2, 3, 4))

    # Each chunk attends this many (query, key) scores: its (L, L) temporaries then stay in cache instead of
    # being allocated (and page-faulted) at full size. A chunk is some rows of one head, or whole heads.
    chunk_scores = 1 << 18
