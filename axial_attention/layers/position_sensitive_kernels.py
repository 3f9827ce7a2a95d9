"""The kernels of PositionSensitiveAxialAttention (position_sensitive.py, whose docstring says what each
saves): attention over lines in cache-sized chunks with reused buffers, an autograd node whose backward
walks the same chunks, and the similarity terms' batch statistics from second moments.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor


def _chunks(heads: int, rows: int, length: int, chunk_scores: int):
    """(head slice, row slice, flat slice) of each chunk of about `chunk_scores` (query, key) pairs.

    A chunk takes rows [r0, r1) of one head, or every row of heads [h0, h1): either way its (head, row)
    pairs are one contiguous range of the flattened index, so q, k and v of a chunk are contiguous views
    that the products read in place, and the products write straight into slices of the outputs. An
    empty batch gives one empty chunk, so that outputs stay connected to the inputs.
    """
    if torch.compiler.is_exporting():  # one chunk: a loop over shape-dependent counts would fix every size
        yield slice(0, heads), slice(0, rows), slice(0, heads * rows)
        return
    per_chunk = max(1, chunk_scores // (length * length))  # rows of one head
    head_step, row_step = (max(1, per_chunk // rows), rows) if per_chunk >= rows > 0 else (1, per_chunk)
    for h0 in range(0, heads, head_step):
        for r0 in range(0, max(rows, 1), row_step):
            hc, rc = min(head_step, heads - h0), min(row_step, rows - r0)
            yield slice(h0, h0 + hc), slice(r0, r0 + rc), slice(h0 * rows + r0, h0 * rows + r0 + hc * rc)


class _Workspace:
    """Buffers that every chunk of one call reuses, by name, grown when a chunk needs more.

    A fresh (L, L)-sized allocation per chunk can cost its page faults again each time: one 56-long
    chunk's forward took 1.8 ms with fresh tensors against 0.7 ms with these in a loop of its own, and
    the whole axial_resnet50s eval forward 8% less time.
    """

    def __init__(self, like: Tensor) -> None:
        self.like, self.buffers = like, {}

    def __call__(self, name: str, *shape: int) -> Tensor:
        size = math.prod(shape)
        buffer = self.buffers.get(name)
        if buffer is None or buffer.numel() < size:
            buffer = self.buffers[name] = self.like.new_empty(size)
        return buffer[:size].view(shape)


def _logits(qc: Tensor, kc: Tensor, rq: Tensor, rk: Tensor, s_qk: Tensor, window: Optional[Tensor],
            workspace: _Workspace) -> Tensor:
    """The chunk's (n, L, L) logits s_qk q.k + q.r^q + k.r^k, masked to the window (a workspace buffer).

    qc, kc: (hc, rc, L, dq); rq: (hc, o, dq, p) and rk: (hc, p, dq, o), scaled. The relative terms are one
    product per query o (per key p): q_o's rows against r^q's (dq, p) slice of o, written (o, rows, p),
    which adds to the logits with whole rows in place; k's term comes out (p, rows, o), the one
    transposed copy. (Either term read per position needs one: a product's rows are positions of
    the vector it multiplies, and the logits' rows are queries.)
    """
    hc, rc, length, dq = qc.shape
    n = hc * rc
    product, logits = workspace("product", hc, length, rc, length), workspace("logits", n, length, length)
    torch.matmul(kc.transpose(1, 2), rk, out=product)  # (hc, p, rc, o)
    logits.view(hc, rc, length, length).copy_(product.permute(0, 2, 3, 1))
    torch.matmul(qc.transpose(1, 2), rq, out=product)  # (hc, o, rc, p)
    logits.view(hc, rc, length, length).add_(product.transpose(1, 2))
    scaled_q = torch.mul(qc, s_qk[:, None, None, None], out=workspace("scaled_q", hc, rc, length, dq))
    logits.baddbmm_(scaled_q.view(n, length, dq), kc.reshape(n, length, dq).mT)
    if window is not None:
        logits.masked_fill_(~window, float("-inf"))
    return logits


def attend_lines(q, k, v, rq, rk, s_qk, tv_abs, window, chunk_scores, keep_weights, rel_scale=None):
    """Softmax attention of Eq. 4, without autograd -> (terms, weights (heads * rows, L, L) or None).

    q, k, v: (heads, rows, L, width) contiguous; rq, rk: scaled tables by position (see `_logits`);
    s_qk: (heads,) scale of q.k; tv_abs: (L, L, dv) r^v by position. terms: the q.v and value-relative
    terms (2, heads * rows, L, dv); with `rel_scale` (heads, 1, 1, dv), their sum q.v + rel_scale * value-relative
    (heads * rows, L, dv), added as each chunk ends. The products write through out= into the outputs
    and the workspace: a strided out= falls back to one GEMM per matrix, so every out= is contiguous.
    """
    heads, rows, length, dq = q.shape
    dv = v.shape[-1]
    weights = q.new_empty(heads * rows, length, length) if keep_weights else None
    if rel_scale is None:
        terms = q.new_empty(2, heads * rows, length, dv)
        sv, sve = terms.unbind()
    else:
        terms = sv = q.new_empty(heads * rows, length, dv)
        sve = None
    workspace = _Workspace(q)
    for hs, rs, flat in _chunks(heads, rows, length, chunk_scores):
        qc, kc, vc = q[hs, rs], k[hs, rs], v[hs, rs]
        hc, rc = qc.shape[:2]
        n = hc * rc
        logits = _logits(qc, kc, rq[hs], rk[hs], s_qk[hs], window, workspace)
        a = torch.softmax(logits, -1, out=weights[flat] if keep_weights else workspace("weights", n, length, length))
        torch.bmm(a, vc.reshape(n, length, dv), out=sv[flat])
        # sum_p a_op r^v_{p-o}: per query o, its weights of every row times the (L, dv) table slice of o.
        term = torch.bmm(a.transpose(0, 1), tv_abs, out=workspace("by_query", length, n, dv)).transpose(0, 1)
        if sve is not None:
            sve[flat] = term
        else:
            sv[flat].view(hc, rc, length, dv).addcmul_(term.view(hc, rc, length, dv), rel_scale[hs])
    return terms, weights


class PositionSensitiveAttentionFunction(torch.autograd.Function):
    """`attend_lines` as one autograd node whose backward walks the same chunks with the saved weights.

    Backward of a chunk, with a the weights and g the output gradients: dA = g_v v^T + (g_e by query) r^v^T,
    the softmax backward gives the logits' gradient G, and G flows to q and k through the q.k product
    and to q, k and the tables through the per-position products, G read by query and (one
    transposed copy) by key.
    """

    @staticmethod
    def forward(ctx, q, k, v, rq, rk, s_qk, tv_abs, window, chunk_scores, need_weights):
        terms, weights = attend_lines(q, k, v, rq, rk, s_qk, tv_abs, window, chunk_scores, keep_weights=True)
        ctx.save_for_backward(q, k, v, rq, rk, s_qk, tv_abs, weights)
        ctx.chunk_scores = chunk_scores
        ctx.mark_non_differentiable(weights)
        return terms, (weights if need_weights else None)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_terms, _):
        q, k, v, rq, rk, s_qk, tv_abs, weights = ctx.saved_tensors
        heads, rows, length, dq = q.shape
        dv = v.shape[-1]
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        grad_rq, grad_rk, grad_tv = torch.zeros_like(rq), torch.zeros_like(rk), torch.zeros_like(tv_abs)
        grad_s = torch.zeros_like(s_qk)
        workspace = _Workspace(q)
        for hs, rs, flat in _chunks(heads, rows, length, ctx.chunk_scores):
            qc, kc, vc = q[hs, rs], k[hs, rs], v[hs, rs]
            hc, rc = qc.shape[:2]
            n = hc * rc
            # The chunk's gradients, written in place: a chunk is a contiguous block of each.
            gq, gk, gv = grad_q[hs, rs], grad_k[hs, rs], grad_v[hs, rs]
            a, g_sv, g_sve = weights[flat], grad_terms[0, flat], grad_terms[1, flat]
            k2, v2 = kc.reshape(n, length, dq), vc.reshape(n, length, dv)
            grad_a = torch.bmm(g_sv, v2.mT, out=workspace("grad_a", n, length, length))
            by_query = torch.bmm(g_sve.transpose(0, 1), tv_abs.mT, out=workspace("product", length, n, length))
            grad_a += by_query.transpose(0, 1)
            grad_tv.baddbmm_(a.transpose(0, 1).mT, g_sve.transpose(0, 1))
            # softmax backward: G = a * (dA - sum_p dA a)
            grad_logits = grad_a.sub_(torch.linalg.vecdot(grad_a, a).unsqueeze(-1)).mul_(a)
            s = s_qk[hs].view(hc, 1, 1, 1)
            torch.bmm(grad_logits, k2, out=gq.view(n, length, dq))  # d(s q).k: s's gradient, then q's
            grad_s[hs] += (gq * qc).sum((1, 2, 3))
            gq.mul_(s)
            torch.bmm(grad_logits.mT, (qc * s).view(n, length, dq), out=gk.view(n, length, dq))
            # The relative terms, per query o (q's) and per key p (k's), as `_logits` forms them.
            grid = grad_logits.view(hc, rc, length, length)
            gq += torch.matmul(grid.transpose(1, 2), rq[hs].mT).transpose(1, 2)
            grad_rq[hs] += torch.matmul(qc.transpose(1, 2).mT, grid.transpose(1, 2))
            by_key = workspace("product", hc, length, rc, length).copy_(grid.permute(0, 3, 1, 2))  # (hc, p, rc, o)
            gk += torch.matmul(by_key, rk[hs].mT).transpose(1, 2)
            grad_rk[hs] += torch.matmul(kc.transpose(1, 2).mT, by_key)
            torch.bmm(a.mT, g_sv, out=gv.view(n, length, dv))
        return grad_q, grad_k, grad_v, grad_rq, grad_rk, grad_s, grad_tv, None, None, None


def memory_format_of(x: Tensor) -> torch.memory_format:
    """channels_last for a channels-last map (that is not also plainly contiguous), else contiguous."""
    if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
        return torch.contiguous_format
    return torch.channels_last


def by_position(table: Tensor) -> Tensor:
    """(..., d, 2L - 1) indexed by offset -> (..., d, L, L) indexed by position: out[..., o, p] = table[..., p - o]."""
    length = (table.shape[-1] + 1) // 2
    pos = torch.arange(length, device=table.device)
    offset = (pos - pos[:, None] + length - 1).flatten()  # [o, p] row-major
    return table[..., offset].unflatten(-1, (length, length))


class SimilarityMoments(torch.autograd.Function):
    """Per head, the sum and the sum of squares of q.r^q and k.r^k over the attended pairs, and of q.k
    over all pairs (with_qk; else zeros): (3, heads) each, rows q.k, q.r^q, k.r^k.

    With t a query or key vector, f_i and S_i a table's sum and (d x d) second moment over the pairs of
    position i: sum t_i . f_i and sum_i <S_i, sum_rows t_i t_i^T>; for q.k, per line, (sum_i q_i).(sum_j k_j)
    and <sum_i q_i q_i^T, sum_j k_j k_j^T>. Nothing of size (rows, L, L) is built, and the backward
    writes one gradient for q and one for k instead of autograd's one per term.
    """

    @staticmethod
    def forward(ctx, q, k, first_q, second_q, first_k, second_k, with_qk):
        by_position = [t.transpose(1, 2).contiguous() for t in (q, k)]  # (heads, L, rows, d)
        gram = [t.mT @ t for t in by_position]  # (heads, L, d, d): over rows, per position
        sums = [(t.sum(2) * f).sum((1, 2)) for t, f in zip(by_position, (first_q, first_k))]
        squares = [(g * m).sum((1, 2, 3)) for g, m in zip(gram, (second_q, second_k))]
        lines = ()
        if with_qk:
            lines = (q.sum(2), k.sum(2), q.mT @ q, k.mT @ k)  # per line, over L: sums and (d x d) moments
            qk = (lines[0] * lines[1]).sum((1, 2)), (lines[2] * lines[3]).sum((1, 2, 3))
        else:
            qk = (q.new_zeros(q.shape[0]),) * 2
        ctx.save_for_backward(q, k, first_q, second_q, first_k, second_k, *by_position, *gram, *lines)
        ctx.with_qk = with_qk
        return torch.stack((qk[0], *sums)), torch.stack((qk[1], *squares))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_sums, grad_squares):
        q, k, first_q, second_q, first_k, second_k, pos_q, pos_k, gram_q, gram_k, *lines = ctx.saved_tensors
        grad_t, grads = [], []
        per_table = ((pos_q, first_q, second_q, gram_q), (pos_k, first_k, second_k, gram_k))
        for i, (t, first, second, gram) in enumerate(per_table):
            g1, g2 = grad_sums[i + 1, :, None, None], grad_squares[i + 1, :, None, None, None]
            # d/dt of t . f and t^T S t (S symmetric): f and 2 S t; by position, back to by line.
            grad = torch.matmul(t, second * (2 * g2)).add_((first * g1)[:, :, None])
            grad_t.append(grad.transpose(1, 2).contiguous())
            grads += [(t.sum(2) * g1).sum(0), (gram * g2).sum(0)]
        if ctx.with_qk:
            sum_q, sum_k, line_q, line_k = lines
            g1, g2 = grad_sums[0, :, None, None], grad_squares[0, :, None, None, None]
            grad_t[0] += torch.matmul(q, line_k * (2 * g2)).add_((sum_k * g1)[:, :, None])
            grad_t[1] += torch.matmul(k, line_q * (2 * g2)).add_((sum_q * g1)[:, :, None])
        return *grad_t, *grads, None
