"""The official Axial-DeepLab classifier (csrhddlam/axial-deeplab, lib/models/axialnet.py) computed from its
state dict alone, written independently of the package: its key names, its index conventions, every batch
norm applied as it is (shifts included), every score materialised. Slow by design; used only by the tests.

Conventions of the official layer, per line of length K (the layer's kernel_size; it runs at no other):
  * the 1x1 projection gives, per group, [q (gp / 2) | k (gp / 2) | v (gp)] channels, gp = out_planes / groups;
  * the relative table (2 gp, 2K - 1) has rows [r^q | r^k | r^v]; for query i and key j the query and value
    terms read column i - j + K - 1 and the key term reads column j - i + K - 1;
  * bn_similarity normalises 3 x groups channels: term t (q.k, q.r^q, k.r^k) of group g is channel t * groups + g;
  * bn_output normalises 2 x out_planes channels: output channel c's q.v term is channel 2c, its value term 2c + 1;
  * stride s average-pools (floor) after attending.

Also here: random state dicts with the official keys and shapes, for layers, blocks and whole networks.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

EPS, MOMENTUM = 1e-5, 0.1


# --------------------------------------------------------------------------- random official state dicts

def random_norm(prefix: str, channels: int, g: torch.Generator) -> dict:
    """A batch norm with non-trivial affine terms and running statistics (no norm is an identity by accident)."""
    return {
        f"{prefix}.weight": 0.5 + torch.rand(channels, generator=g),
        f"{prefix}.bias": 0.2 * torch.randn(channels, generator=g),
        f"{prefix}.running_mean": 0.2 * torch.randn(channels, generator=g),
        f"{prefix}.running_var": 0.5 + torch.rand(channels, generator=g),
        f"{prefix}.num_batches_tracked": torch.tensor(7),
    }


def random_layer(in_planes: int, out_planes: int, groups: int, kernel_size: int, g: torch.Generator,
                 prefix: str = "") -> dict:
    """An official AxialAttention(in_planes, out_planes, groups, kernel_size)'s state dict, random values."""
    gp = out_planes // groups
    query, key = torch.arange(kernel_size)[None, :], torch.arange(kernel_size)[:, None]
    state = {
        # Random tables: not symmetric in the offset, so reading one backwards changes the output.
        f"{prefix}relative": torch.randn(2 * gp, 2 * kernel_size - 1, generator=g) / math.sqrt(gp),
        f"{prefix}flatten_index": (key - query + kernel_size - 1).reshape(-1),
        f"{prefix}qkv_transform.weight": torch.randn(2 * out_planes, in_planes, 1, generator=g) / math.sqrt(in_planes),
    }
    state.update(random_norm(f"{prefix}bn_qkv", 2 * out_planes, g))
    state.update(random_norm(f"{prefix}bn_similarity", 3 * groups, g))
    state.update(random_norm(f"{prefix}bn_output", 2 * out_planes, g))
    return state


def _conv(out_c: int, in_c: int, size: int, g: torch.Generator) -> torch.Tensor:
    return torch.randn(out_c, in_c, size, size, generator=g) * math.sqrt(2.0 / (in_c * size * size))


def random_block(inplanes: int, planes: int, stride: int, groups: int, kernel_size: int, g: torch.Generator,
                 prefix: str = "", downsample: bool | None = None) -> dict:
    """An official AxialBlock's state dict (expansion 2, base width 64); a downsample when the shape changes."""
    width, out = planes, 2 * planes
    state = {f"{prefix}conv_down.weight": _conv(width, inplanes, 1, g)}
    state.update(random_norm(f"{prefix}bn1", width, g))
    state.update(random_layer(width, width, groups, kernel_size, g, f"{prefix}hight_block."))
    state.update(random_layer(width, width, groups, kernel_size, g, f"{prefix}width_block."))
    state[f"{prefix}conv_up.weight"] = _conv(out, width, 1, g)
    state.update(random_norm(f"{prefix}bn2", out, g))
    if downsample is None:
        downsample = stride != 1 or inplanes != out
    if downsample:
        state[f"{prefix}downsample.0.weight"] = _conv(out, inplanes, 1, g)
        state.update(random_norm(f"{prefix}downsample.1", out, g))
    return state


def random_network(layers: tuple, s: float, num_classes: int, g: torch.Generator, groups: int = 8) -> dict:
    """An official AxialAttentionNet(AxialBlock, layers, num_classes, s=s)'s state dict (its 224x224 spans)."""
    inplanes = int(64 * s)
    state = {"conv1.weight": _conv(inplanes, 3, 7, g)}
    state.update(random_norm("bn1", inplanes, g))
    kernel = 56  # the map after the stem at 224x224; a stage's first block still attends at its input size
    for stage, blocks in enumerate(layers):
        planes, stride = int(128 * 2**stage * s), 1 if stage == 0 else 2
        for j in range(blocks):
            state.update(random_block(inplanes, planes, stride if j == 0 else 1, groups, kernel, g,
                                      f"layer{stage + 1}.{j}."))
            inplanes = 2 * planes
            if j == 0 and stride == 2:
                kernel //= 2
    state["fc.weight"] = torch.randn(num_classes, inplanes, generator=g) / math.sqrt(inplanes)
    state["fc.bias"] = 0.1 * torch.randn(num_classes, generator=g)
    return state


# --------------------------------------------------------------------------- the official forward

def batch_norm(t: torch.Tensor, channel_dim: int, state: dict, prefix: str, training: bool) -> torch.Tensor:
    """Textbook batch norm of `t` over every dim but `channel_dim`. Training: batch statistics (biased
    variance), and the running statistics in `state` updated in place (unbiased variance)."""
    t = t.movedim(channel_dim, -1)
    if training:
        flat = t.reshape(-1, t.shape[-1])
        mean, var = flat.mean(0), flat.var(0, unbiased=False)
        n = flat.shape[0]
        with torch.no_grad():
            for field, batch in (("running_mean", mean), ("running_var", var * n / max(n - 1, 1))):
                state[f"{prefix}.{field}"] = (1 - MOMENTUM) * state[f"{prefix}.{field}"] + MOMENTUM * batch
            state[f"{prefix}.num_batches_tracked"] = state[f"{prefix}.num_batches_tracked"] + 1
    else:
        mean, var = state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"]
    out = (t - mean) / torch.sqrt(var + EPS) * state[f"{prefix}.weight"] + state[f"{prefix}.bias"]
    return out.movedim(-1, channel_dim)


def attention_layer(state: dict, x: torch.Tensor, *, width: bool = False, stride: int = 1,
                    training: bool = False, prefix: str = "") -> torch.Tensor:
    """The official AxialAttention: (N, C, H, W) -> (N, out_planes, H // stride, W // stride), along H
    (width=False) or W. Groups and sizes come from the state dict's shapes."""
    relative = state[f"{prefix}relative"]
    weight = state[f"{prefix}qkv_transform.weight"][:, :, 0]  # (2 out, in)
    groups = state[f"{prefix}bn_similarity.weight"].numel() // 3
    out_planes = weight.shape[0] // 2
    gp = out_planes // groups
    kernel = (relative.shape[1] + 1) // 2
    lines = x.permute(0, 2, 3, 1) if width else x.permute(0, 3, 2, 1)  # (N, lines, L, C)
    assert lines.shape[2] == kernel, "the official layer runs only at its kernel_size"

    qkv = batch_norm(lines @ weight.t(), -1, state, f"{prefix}bn_qkv", training)
    qkv = qkv.unflatten(-1, (groups, 2 * gp))  # (N, lines, L, groups, 2 gp)
    q, k, v = qkv[..., : gp // 2], qkv[..., gp // 2 : gp], qkv[..., gp:]

    i = torch.arange(kernel)[:, None]  # query
    j = torch.arange(kernel)[None, :]  # key
    query_minus_key = relative[:, i - j + kernel - 1]  # (2 gp, i, j)
    key_minus_query = relative[:, j - i + kernel - 1]
    rq, rv = query_minus_key[: gp // 2], query_minus_key[gp:]
    rk = key_minus_query[gp // 2 : gp]

    qk = torch.einsum("nligc,nljgc->nlgij", q, k)
    qr = torch.einsum("nligc,cij->nlgij", q, rq)
    kr = torch.einsum("nljgc,cij->nlgij", k, rk)
    terms = torch.cat((qk, qr, kr), dim=2)  # channel t * groups + g
    terms = batch_norm(terms, 2, state, f"{prefix}bn_similarity", training)
    weights = terms.unflatten(2, (3, groups)).sum(2).softmax(-1)  # (N, lines, groups, i, j)

    sv = torch.einsum("nlgij,nljgc->nligc", weights, v)
    sve = torch.einsum("nlgij,cij->nligc", weights, rv)
    stacked = torch.stack((sv, sve), dim=-1).flatten(-3)  # channel 2 (g gp + c) + term
    out = batch_norm(stacked, -1, state, f"{prefix}bn_output", training)
    out = out.unflatten(-1, (out_planes, 2)).sum(-1)  # (N, lines, L, out)
    out = out.permute(0, 3, 1, 2) if width else out.permute(0, 3, 2, 1)
    return F.avg_pool2d(out, stride) if stride > 1 else out


def block(state: dict, x: torch.Tensor, prefix: str = "", stride: int = 1, training: bool = False) -> torch.Tensor:
    """The official AxialBlock (its stride is not in the state dict: the width attention pools by it)."""
    down = state.get(f"{prefix}downsample.0.weight")
    out = F.relu(batch_norm(F.conv2d(x, state[f"{prefix}conv_down.weight"]), 1, state, f"{prefix}bn1", training))
    out = attention_layer(state, out, prefix=f"{prefix}hight_block.", training=training)
    out = attention_layer(state, out, width=True, stride=stride, prefix=f"{prefix}width_block.", training=training)
    out = batch_norm(F.conv2d(F.relu(out), state[f"{prefix}conv_up.weight"]), 1, state, f"{prefix}bn2", training)
    if down is not None:
        x = batch_norm(F.conv2d(x, down, stride=stride), 1, state, f"{prefix}downsample.1", training)
    return F.relu(out + x)


def network(state: dict, x: torch.Tensor, training: bool = False) -> torch.Tensor:
    """The official AxialAttentionNet: (N, 3, 224, 224) -> logits (N, num_classes)."""
    x = F.relu(batch_norm(F.conv2d(x, state["conv1.weight"], stride=2, padding=3), 1, state, "bn1", training))
    x = F.max_pool2d(x, 3, stride=2, padding=1)
    stage = 1
    while f"layer{stage}.0.conv_down.weight" in state:
        j = 0
        while f"layer{stage}.{j}.conv_down.weight" in state:
            x = block(state, x, f"layer{stage}.{j}.", stride=2 if stage > 1 and j == 0 else 1, training=training)
            j += 1
        stage += 1
    return x.mean((2, 3)) @ state["fc.weight"].t() + state["fc.bias"]


def calibrate(state: dict, x: torch.Tensor) -> None:
    """Set every running statistic of a random network to the statistics of its training-mode forward on x.

    Random weights with arbitrary running statistics let activations grow from block to block until the
    attention logits are in the thousands and the softmax amplifies rounding; calibrated, every norm sees
    roughly standardised inputs (the statistics still differ per channel and from the textbook 0 / 1),
    as in a trained network.
    """
    before = {k: v.clone() for k, v in state.items() if "running" in k}
    with torch.no_grad():
        network(state, x, training=True)
    for k, old in before.items():  # undo the momentum: running = 0.9 old + 0.1 batch
        state[k] = (state[k] - (1 - MOMENTUM) * old) / MOMENTUM
