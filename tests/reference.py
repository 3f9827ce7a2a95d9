"""Obviously-correct references, written independently of the package: materialised scores,
explicit masks, explicit permutations. Slow by design; used only by the tests."""
from __future__ import annotations

import torch


def naive_attention(q, k, v, allowed):
    """q (..., Lq, d), k (..., Lk, d), v (..., Lk, e), allowed bool broadcastable to (..., Lq, Lk).
    A query allowed no key outputs zeros."""
    scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    weights = torch.where(allowed.any(-1, keepdim=True), weights, torch.zeros_like(weights))
    return weights @ v, weights


def _axis_reference(attn, x, axis, emb, mask, causal):
    """One AxisAttention module's computation along tensor dim `axis` of x (embedding at dim `emb`)."""
    others = [d for d in range(x.ndim) if d not in (axis, emb)]
    perm = others + [axis, emb]
    inverse = [perm.index(d) for d in range(x.ndim)]
    xp = x.permute(perm)  # (*others, L, dim)
    heads, dh = attn.heads, attn.dim_heads
    wq = attn.to_q.weight
    wk, wv = attn.to_kv.weight.chunk(2, dim=0)

    def split(t):  # (*others, L, heads*dh) -> (*others, heads, L, dh)
        return t.reshape(*t.shape[:-1], heads, dh).transpose(-2, -3)

    q, k, v = split(xp @ wq.T), split(xp @ wk.T), split(xp @ wv.T)
    length = x.shape[axis]
    allowed = torch.ones(length, length, dtype=torch.bool)
    if causal:
        allowed = torch.tril(allowed)
    if mask is not None:
        mask_perm = [d if d < emb else d - 1 for d in others] + [axis if axis < emb else axis - 1]
        key_valid = mask.permute(mask_perm)  # (*others, L)
        allowed = allowed & key_valid[..., None, None, :]  # (*others, 1 head, Lq, Lk)
    out, weights = naive_attention(q, k, v, allowed)
    out = out.transpose(-2, -3).reshape(*xp.shape[:-1], heads * dh)
    out = out @ attn.to_out.weight.T + attn.to_out.bias
    return out.permute(inverse), weights


def reference_axial_attention(module, x, mask=None):
    """What AxialAttention(module's config) must compute on x, from its weights alone."""
    emb = module.dim_index
    axes = [d for d in range(1, x.ndim) if d != emb]
    if module.sum_axial_out:
        return sum(
            _axis_reference(attn, x, axis, emb, mask, causal)[0]
            for attn, axis, causal in zip(module.axial_attentions, axes, module.causal)
        )
    out = x
    for attn, axis, causal in zip(module.axial_attentions, axes, module.causal):
        out = _axis_reference(attn, out, axis, emb, mask, causal)[0]
    return out


def reference_attention_weights(module, x, mask=None):
    """Per-axis weights (batch, heads, *axial, L) for sum_axial_out=True, from the reference."""
    emb = module.dim_index
    axes = [d for d in range(1, x.ndim) if d != emb]
    result = []
    for attn, axis, causal in zip(module.axial_attentions, axes, module.causal):
        _, w = _axis_reference(attn, x, axis, emb, mask, causal)  # (*others, heads, Lq, Lk)
        # others are x's dims without axis/emb in order: batch first, then the remaining axial dims
        others = [d for d in range(x.ndim) if d not in (axis, emb)]
        n = len(others)
        # -> (batch, heads, *other axial, Lq, Lk) then move Lq to its place among the axial dims
        w = w.movedim(n, 1)
        axial_order = [d for d in range(1, x.ndim) if d != emb]
        lq_position = 2 + axial_order.index(axis)
        result.append(w.movedim(-2, lq_position))
    return result
