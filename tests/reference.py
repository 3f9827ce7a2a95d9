"""Obviously-correct references, written independently of the package: materialised scores,
explicit masks, explicit permutations. Slow by design. The tests check the package against them, and
the benchmarks time the package against them (`python -m benchmarks.deeplab` against `naive_eq4`), so
a speed-up is always stated against the same code the tests trust."""
from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-5  # the eps of every batch norm in PositionSensitiveAxialAttention


def naive_attention(q, k, v, allowed):
    """q (..., Lq, d), k (..., Lk, d), v (..., Lk, e), allowed bool broadcastable to (..., Lq, Lk).
    A query allowed no key outputs zeros."""
    scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    weights = torch.where(allowed.any(-1, keepdim=True), weights, torch.zeros_like(weights))
    return weights @ v, weights


def rotation_matrices(coords, rotated, theta, width, dtype):
    """(..., width, width) block rotation per coordinate: channel pair (2m, 2m + 1) turned by
    coords * theta^(-2m / rotated), channels from `rotated` on left alone; built entry by entry."""
    half = rotated // 2
    coords = torch.as_tensor(coords, dtype=dtype)
    r = torch.zeros(*coords.shape, width, width, dtype=dtype)
    for c in range(width):
        r[..., c, c] = 1.0
    for m in range(half):
        angle = coords * theta ** (-2.0 * m / rotated)
        c, s = torch.cos(angle), torch.sin(angle)
        a, b = 2 * m, 2 * m + 1
        r[..., a, a], r[..., a, b] = c, -s
        r[..., b, a], r[..., b, b] = s, c
    return r


def _axis_reference(attn, x, axis, emb, mask, causal, bias=None, positions=None):
    """One AxisAttention module's computation along tensor dim `axis` of x (embedding at dim `emb`), with its
    options read from the module: rotary positions, gate, window; `bias` (batch, heads, L, L) or
    (batch, *other axial, heads, L, L) added to the scores; rotary `positions` None, an int or a tensor."""
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
    if getattr(attn, "rotary", False):
        if positions is None or isinstance(positions, int):
            coords = torch.arange(length, dtype=x.dtype) + (positions or 0)
        else:
            coords = positions.to(x.dtype)
        rot = rotation_matrices(coords, attn.rotated, attn.rotary_theta, dh, x.dtype)  # (L | batch L, dh, dh)
        if rot.ndim == 4:  # per batch element: (batch, 1 .. for the other dims, 1 head, L, dh, dh)
            rot = rot.reshape(rot.shape[0], *(1,) * (len(others) - 1), 1, *rot.shape[1:])
        q, k = ((rot @ t.unsqueeze(-1)).squeeze(-1) for t in (q, k))
    allowed = torch.ones(length, length, dtype=torch.bool)
    if causal:
        allowed = torch.tril(allowed)
    window = getattr(attn, "window", None)
    if window is not None:
        for i in range(length):
            for j in range(length):
                if abs(i - j) > window:
                    allowed[i, j] = False
    if mask is not None:
        mask_perm = [d if d < emb else d - 1 for d in others] + [axis if axis < emb else axis - 1]
        key_valid = mask.permute(mask_perm)  # (*others, L)
        allowed = allowed & key_valid[..., None, None, :]  # (*others, 1 head, Lq, Lk)
    scores = (q @ k.transpose(-1, -2)) / dh ** 0.5
    if bias is not None:
        if bias.ndim == 4 and len(others) > 1:  # shared by every line: one size-1 dim per other axial axis
            bias = bias.reshape(bias.shape[0], *(1,) * (len(others) - 1), *bias.shape[1:])
        scores = scores + bias
    scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    weights = torch.where(allowed.any(-1, keepdim=True), weights, torch.zeros_like(weights))
    out = (weights @ v).transpose(-2, -3).reshape(*xp.shape[:-1], heads * dh)
    if getattr(attn, "gating", False):
        out = out * torch.sigmoid(xp @ attn.to_gate.weight.T + attn.to_gate.bias)
    out = out @ attn.to_out.weight.T + attn.to_out.bias
    return out.permute(inverse), weights


def reference_axial_attention(module, x, mask=None, biases=None, positions=None):
    """What AxialAttention(module's config) must compute on x, from its weights alone; `biases` and
    `positions`: one entry (or None) per axial axis."""
    emb = module.dim_index
    axes = [d for d in range(1, x.ndim) if d != emb]
    biases = biases or (None,) * len(axes)
    positions = positions or (None,) * len(axes)
    per_axis = list(zip(module.axial_attentions, axes, module.causal, biases, positions))
    if module.sum_axial_out:
        return sum(_axis_reference(attn, x, axis, emb, mask, causal, bias, pos)[0]
                   for attn, axis, causal, bias, pos in per_axis)
    out = x
    for attn, axis, causal, bias, pos in per_axis:
        out = _axis_reference(attn, out, axis, emb, mask, causal, bias, pos)[0]
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


def window_mask(length: int, span: int) -> torch.Tensor:
    """Query o sees `span` keys starting at clamp(o - (span - 1) // 2, 0, L - span); all keys if L <= span."""
    allowed = torch.zeros(length, length, dtype=torch.bool)
    for o in range(length):
        if length <= span:
            allowed[o] = True
            continue
        start = min(max(o - (span - 1) // 2, 0), length - span)
        allowed[o, start : start + span] = True
    return allowed


def batch_norm(t: torch.Tensor, channel_dim: int, bn, training: bool, shift: float = 0.0) -> torch.Tensor:
    """Textbook batch norm over every dim but `channel_dim` (biased variance), or the running statistics."""
    t = t.movedim(channel_dim, -1)
    if training:
        flat = t.reshape(-1, t.shape[-1])
        mean, var = flat.mean(0), flat.var(0, unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    return ((t - mean) / torch.sqrt(var + EPS) * bn.weight + bn.bias + shift).movedim(-1, channel_dim)


def naive_eq4(layer, x: torch.Tensor):
    """PositionSensitiveAxialAttention `layer` on x, as Axial-DeepLab's Eq. 4 reads:
    y_o = sum_p softmax_p(BN(q_o.k_p) + BN(q_o.r^q_{p-o}) + BN(k_p.r^k_{p-o})) (v_p + r^v_{p-o}), then BN, sum.

    Every score is materialised as (batch, lines, heads, o, p); relative embeddings are looked up by
    the explicit offset p - o. Returns (output, weights (batch, lines, heads, o, p), term variances).
    """
    training, heads, dq, dv, m = layer.training, layer.heads, layer.dim_qk, layer.dim_v, layer.span
    seq = x.permute(0, 3, 2, 1) if layer.axis == 2 else x.permute(0, 2, 3, 1)  # (batch, lines, L, C)
    length = seq.shape[2]
    qkv = batch_norm(seq @ layer.qkv.weight.flatten(1).t(), -1, layer.bn_qkv, training)
    qkv = qkv.reshape(*qkv.shape[:3], heads, 2 * dq + dv)
    q, k, v = qkv[..., :dq], qkv[..., dq : 2 * dq], qkv[..., 2 * dq :]

    allowed = window_mask(length, m)
    offsets = torch.arange(length)[None, :] - torch.arange(length)[:, None]  # [o, p] = p - o
    column = (offsets + m - 1).clamp(0, 2 * m - 2)  # out-of-window pairs: any column, masked below
    emb = layer.relative[:, column]  # (channels, o, p)
    rq, rk, rv = emb[:dq], emb[dq : 2 * dq], emb[2 * dq :]

    terms = (
        torch.einsum("bwohc,bwphc->bwhop", q, k),
        torch.einsum("bwohc,cop->bwhop", q, rq),
        torch.einsum("bwphc,cop->bwhop", k, rk),
    )
    logits, variances = 0, []
    for i, term in enumerate(terms):
        gamma = layer.similarity_weight[i][:, None, None]
        if training:
            picked = term.movedim(2, 0)[:, :, :, allowed]  # (heads, batch, lines, allowed pairs)
            mean = picked.reshape(heads, -1).mean(1)[:, None, None]
            var = picked.reshape(heads, -1).var(1, unbiased=False)
            variances.append(var)
            var = var[:, None, None]
        else:
            mean, var = 0.37 * (i + 1), layer.similarity_running_var[i][:, None, None]  # any shift cancels
        logits = logits + gamma * (term - mean) / torch.sqrt(var + EPS) + 0.5 * i
    logits = logits.masked_fill(~allowed, float("-inf"))
    weights = logits.softmax(-1)
    sv = torch.einsum("bwhop,bwphc->bwohc", weights, v)
    sve = torch.einsum("bwhop,cop->bwohc", weights, rv)
    stacked = torch.stack((sv, sve), dim=3).flatten(3)  # (batch, lines, L, 2 * heads * dv)
    out = batch_norm(stacked, -1, layer.bn_output, training).unflatten(-1, (2, -1)).sum(-2)
    out = out.permute(0, 3, 2, 1) if layer.axis == 2 else out.permute(0, 3, 1, 2)
    if layer.stride > 1:
        out = F.avg_pool2d(out, layer.stride, ceil_mode=True)
    return out, weights, variances
