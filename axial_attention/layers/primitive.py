"""The package's one primitive: multi-head attention along one axis of a channel-last tensor.

Attending along one axis folds the axes before it (with the batch) into SDPA's batch dimension and the
axes after it (with the heads) into SDPA's head dimension. For a contiguous channel-last tensor both
folds are views, so the only data movement is the one SDPA does itself; `scaled_dot_product_attention`
then picks its fused kernel (flash on CPU and CUDA, memory-efficient, or math). Key masks, causal
masks, local windows, additive biases and the attention weights all go through that call (a bias shared by
every line through one call per batch element or per line where folding it would copy it: `_bias_mask`).
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor


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
    window: Optional[int] = None,
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
    window: a query sees only the keys within `window` positions of its own along `axis` (with causal, the
        `window` before it and itself), positions aligned at the end as for causal.
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
    # bool(): with symbolic sizes (torch.export) `len_q == len_k` is a SymBool, which SDPA's is_causal refuses
    use_is_causal = bool(causal and allowed is None and attn_bias is None and window is None and len_q == len_k)
    band = None
    if causal and not use_is_causal and len_q > 1:
        band = torch.ones(len_q, len_k, dtype=torch.bool, device=q.device).tril(len_k - len_q)
    if window is not None:
        # key j against query i, both counted from the start of the keys: i sits at i + (Lk - Lq)
        offset = (torch.arange(len_k, device=q.device) - torch.arange(len_k - len_q, len_k, device=q.device)[:, None])
        near = offset.abs() <= window
        band = near if band is None else band & near
    if band is not None:
        allowed = band if allowed is None else allowed & band

    empty_rows = None
    if allowed is not None:
        empty_rows = ~allowed.any(dim=-1, keepdim=True)
        allowed = allowed | empty_rows
    mask, blocks = allowed, None
    if attn_bias is not None:
        mask, blocks = _bias_mask(attn_bias, allowed, q, axis, heads)

    def sdpa(values: Tensor, p: float) -> Tensor:
        out = _blocked_sdpa(qf, kf, values, mask, blocks, dropout_p=p, is_causal=use_is_causal, scale=scale)
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


# The most SDPA calls a shared bias is split into before it is copied per line instead: each call is a kernel
# launch on a GPU (not measured there; on CPU 2 calls cost less than the copy, which at L = 128, 32 channels a
# head, took longer than the attention itself).
MAX_SDPA_CALLS = 64


def _bias_mask(attn_bias: Tensor, allowed: Optional[Tensor], q: Tensor, axis: int,
               heads: int) -> tuple[Tensor, Optional[str]]:
    """SDPA's additive mask for attn_bias (batch, *axial without `axis`, heads, Lq, Lk; size-1 axes broadcast)
    with the `allowed` keys, and how to call SDPA with it: None (one call), "batch" or "line" (_blocked_sdpa).

    A bias shared by every line (AlphaFold's pair bias: size 1 on every axial axis) is never copied per line:
    SDPA reads a mask dim of stride 0 as broadcast, but folding the broadcast lines into the batch or head
    dim beside a dim the bias varies along is no view, and the copy (Lk / head width times q's size) cost
    more than the attention. So when it would be a copy, SDPA runs per batch element ("batch") or per line
    of the folded batch ("line": the axes after `axis` then make SDPA's batch, the heads stay its heads)."""
    bias = attn_bias.to(q.dtype)
    len_q, len_k = bias.shape[-2:]
    if allowed is not None and allowed.ndim == 2:  # a causal / window band, the same for every line
        bias, allowed = bias.masked_fill(~allowed, float("-inf")), None
    pre, post = math.prod(q.shape[1:axis]), math.prod(q.shape[axis + 1 : -1])
    shared = all(size == 1 for size in bias.shape[1:-3])
    # Under torch.export the sizes may be symbolic and the blocks are Python loops: the one-call form
    # (also for empty inputs, which have no blocks).
    if allowed is None and shared and q.numel() > 0 and not torch.compiler.is_exporting():
        small = bias.reshape(bias.shape[0], bias.shape[-3], len_q, len_k)  # (batch or 1, heads or 1, Lq, Lk)
        if small.shape[1] > 1 and post > 1:
            blocks, calls = "line", q.shape[0] * pre
        elif small.shape[0] > 1 and pre > 1:
            blocks, calls = "batch", small.shape[0]
        else:  # the fold of the broadcast is a view: one call
            return small.expand(q.shape[0] * pre, post * heads, len_q, len_k), None
        if calls <= MAX_SDPA_CALLS:
            return small, blocks
    full = _fold_per_query(bias.expand(*q.shape[:axis], *q.shape[axis + 1 : -1], heads, len_q, len_k), axis)
    return (full if allowed is None else full.masked_fill(~allowed, float("-inf"))), None


def _blocked_sdpa(qf: Tensor, kf: Tensor, vf: Tensor, mask: Optional[Tensor], blocks: Optional[str],
                  **kwargs) -> Tensor:
    """SDPA on the folded (batch_fold, head_fold, L, e) tensors, in the blocks _bias_mask chose, each with the
    mask as a stride-0 view; the result is the one call's, in its layout (batch_fold, head_fold, Lq, ev)."""
    if blocks is None:
        return F.scaled_dot_product_attention(qf, kf, vf, attn_mask=mask, **kwargs)
    batch_fold, head_fold = qf.shape[:2]
    per_batch = batch_fold // mask.shape[0]  # folded-batch entries per batch element (mask batch 1: all)
    if blocks == "batch":
        outs = [F.scaled_dot_product_attention(
            *(t[b * per_batch : (b + 1) * per_batch] for t in (qf, kf, vf)),
            attn_mask=mask[b : b + 1].expand(per_batch, *mask.shape[1:]), **kwargs) for b in range(mask.shape[0])]
        # joined in SDPA's output memory layout (batch, L, heads, e), so the caller's unfold stays a view
        return torch.cat([o.transpose(1, 2) for o in outs]).transpose(1, 2)
    heads = mask.shape[1]
    outs = [F.scaled_dot_product_attention(
        *(t[n].unflatten(0, (head_fold // heads, heads)) for t in (qf, kf, vf)),
        attn_mask=mask[n // per_batch].expand(head_fold // heads, *mask.shape[1:]), **kwargs)
        for n in range(batch_fold)]
    # each (post, heads, Lq, e) in the caller's layout (Lq, post, heads, e): one copy, then views
    return torch.stack([o.permute(2, 0, 1, 3) for o in outs]).flatten(2, 3).transpose(1, 2)
