"""Every public constructor and forward names the argument, what was expected and what came."""
import pytest
import torch
from torch import nn

import axial_attention
from axial_attention import (
    AxialAttention,
    AxialBlock,
    AxialImageTransformer,
    AxialPositionalEmbedding,
    AxialResNet,
    AxisAttention,
    PositionSensitiveAxialAttention,
    ReversibleSequence,
)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(dim=10, heads=4), ValueError, ["dim (10)", "heads (4)", "dim_heads"]),
        (dict(dim=8, heads=0), ValueError, ["heads", ">= 1", "0"]),
        (dict(dim=8.0), TypeError, ["dim", "int", "float"]),
        (dict(dim=8, dim_index=4), ValueError, ["dim_index", "4-dim", "got 4"]),
        (dict(dim=8, dim_index=0), ValueError, ["dim_index", "non-batch", "got 0"]),
        (dict(dim=8, dim_index=-4), ValueError, ["dim_index", ">= -3", "-4"]),
        (dict(dim=8, num_dimensions=0), ValueError, ["num_dimensions", ">= 1", "0"]),
        (dict(dim=8, causal=(True,)), ValueError, ["causal", "one bool per axial dimension (2)", "got 1"]),
        (dict(dim=8, causal="yes"), TypeError, ["causal", "bool or a tuple of 2 bools", "yes"]),
        (dict(dim=8, dropout=1.5), ValueError, ["dropout", "[0, 1)", "1.5"]),
    ],
)
def test_axial_attention_constructor(kwargs, error, words):
    with pytest.raises(error) as info:
        AxialAttention(**kwargs)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_dim_heads_lifts_divisibility():
    # 0.6.1's README image example: dim=3, heads=1, dim_heads=32; and dim not divisible by heads
    assert AxialAttention(dim=10, heads=4, dim_heads=5)(torch.randn(1, 3, 3, 10)).shape == (1, 3, 3, 10)


@pytest.mark.parametrize(
    "x, mask, error, words",
    [
        (torch.randn(2, 4, 4), None, ValueError, ["x has 3 dims", "expects 4", "batch, 2 axial, embedding"]),
        (torch.randn(2, 4, 4, 6), None, ValueError, ["size 6", "embedding axis", "expects 8"]),
        (torch.zeros(2, 4, 4, 8, dtype=torch.long), None, TypeError, ["floating-point", "torch.int64"]),
        ([[1.0]], None, TypeError, ["x must be a torch.Tensor", "list"]),
        (torch.randn(2, 4, 4, 8), torch.ones(2, 4, 5, dtype=torch.bool), ValueError, ["mask", "(2, 4, 4)", "(2, 4, 5)"]),
        (torch.randn(2, 4, 4, 8), torch.ones(2, 4, 4), TypeError, ["mask", "torch.bool", "torch.float32"]),
        (torch.randn(2, 4, 4, 8), torch.ones(2, 4, 4, 8, dtype=torch.bool), ValueError, ["mask", "without the embedding axis"]),
    ],
)
def test_axial_attention_forward(x, mask, error, words):
    with pytest.raises(error) as info:
        AxialAttention(8, 2, heads=2)(x, mask)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(dim=8, shape=16), TypeError, ["shape", "sequence", "16"]),
        (dict(dim=8, shape=(4, 0)), ValueError, ["shape[1]", ">= 1", "0"]),
        (dict(dim=8, shape=(4, 4), axial_dims=(4, 3)), ValueError, ["axial_dims", "sum to dim (8)", "7"]),
        (dict(dim=8, shape=(4, 4), axial_dims=(8,)), ValueError, ["axial_dims", "one width per axis", "(8,)"]),
        (dict(dim=8, shape=(4, 4), emb_dim_index=4), ValueError, ["emb_dim_index", "got 4"]),
    ],
)
def test_positional_constructor(kwargs, error, words):
    with pytest.raises(error) as info:
        AxialPositionalEmbedding(**kwargs)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize(
    "x, words",
    [
        (torch.randn(1, 8, 4, 4, 4), ["x has 5 dims", "expects 4"]),
        (torch.randn(1, 6, 4, 4), ["size 6", "expects 8"]),
        (torch.randn(1, 8, 5, 4), ["length 5", "at most 4", "interpolate=True"]),
    ],
)
def test_positional_forward(x, words):
    with pytest.raises(ValueError) as info:
        AxialPositionalEmbedding(8, (4, 4))(x)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


# Degenerate sizes, for every public module. Each entry: a small instance, an input maker (batch, two axial
# lengths), keyword arguments that return attention weights (or None), and what a zero-length axial axis
# does: "runs" (empty output of x's shape) or "raises" (a ValueError naming the axis).
def _channels_first(channels):
    return lambda batch, size: torch.randn(batch, channels, *size)


def _channel_last(channels):
    return lambda batch, size: torch.randn(batch, *size, channels)


PUBLIC_MODULES = {
    "AxialAttention": (lambda: AxialAttention(8, heads=2, dim_index=1), _channels_first(8),
                       dict(return_attention=True), "runs"),
    "AxialAttention(sum_axial_out=False, causal)": (
        lambda: AxialAttention(8, heads=2, sum_axial_out=False, causal=True), _channel_last(8),
        dict(return_attention=True), "runs"),
    "AxisAttention": (lambda: AxisAttention(8, axis=1, heads=2, causal=True), _channel_last(8),
                      dict(need_weights=True), "runs"),
    "AxialPositionalEmbedding": (lambda: AxialPositionalEmbedding(8, (4, 4)), _channels_first(8), None, "runs"),
    "ReversibleSequence": (lambda: ReversibleSequence([(nn.Linear(8, 8), nn.Linear(8, 8))]), _channel_last(8),
                           None, "runs"),
    "AxialImageTransformer": (lambda: AxialImageTransformer(8, 1, heads=2, axial_pos_emb_shape=(4, 4)),
                              _channels_first(8), None, "raises"),
    "AxialImageTransformer(reversible=False)": (
        lambda: AxialImageTransformer(8, 1, heads=2, reversible=False), _channels_first(8), None, "raises"),
    "PositionSensitiveAxialAttention": (lambda: PositionSensitiveAxialAttention(8, heads=2, span=4),
                                        _channels_first(8), dict(need_weights=True), "raises"),
    "PositionSensitiveAxialAttention(local, stride)": (
        lambda: PositionSensitiveAxialAttention(8, heads=2, span=2, axis="width", local=True, stride=2),
        _channels_first(8), dict(need_weights=True), "raises"),
    "AxialBlock": (lambda: AxialBlock(8, 4, heads=2, span=4), _channels_first(8), None, "raises"),
    "AxialResNet": (lambda: AxialResNet((1, 1, 1, 1), 0.0625, 3, heads=2, image_size=4, stem="small"),
                    _channels_first(3), None, "raises"),
}
# Public modules whose degenerate sizes are tested elsewhere (the reason says where).
TESTED_ELSEWHERE = {
    "AutoregressiveAxialTransformer": "integer images and log_prob; its empty batch is not handled yet",
}


def test_every_public_module_is_listed():
    """A new public module must join PUBLIC_MODULES, so the degenerate sizes below cannot be forgotten."""
    public = {
        name for name in axial_attention.__all__
        if isinstance(getattr(axial_attention, name), type) and issubclass(getattr(axial_attention, name), nn.Module)
    }
    listed = {name.split("(")[0] for name in PUBLIC_MODULES} | set(TESTED_ELSEWHERE)
    assert public <= listed, f"public modules missing from PUBLIC_MODULES: {sorted(public - listed)}"


def _outputs(result):
    return list(result) if isinstance(result, tuple) else [result]


def _flatten(tensors):
    return [t for item in tensors for t in (_flatten(item) if isinstance(item, (tuple, list)) else [item])]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_empty_batch_runs_forward_and_backward(name):
    """Batch 0 (an empty last shard): the empty result of the right shape, zero gradients, statistics untouched."""
    factory, make, weights_kwargs, _ = PUBLIC_MODULES[name]
    torch.manual_seed(0)
    module = factory()  # training mode: batch norms would use (and update) batch statistics
    with torch.no_grad():
        expected = [t.shape[1:] for t in _flatten(_outputs(module(make(2, (4, 4)), **(weights_kwargs or {}))))]
    buffers = {k: v.clone() for k, v in module.named_buffers() if not k.endswith("num_batches_tracked")}
    x = make(0, (4, 4)).requires_grad_(True)
    outputs = _flatten(_outputs(module(x, **(weights_kwargs or {}))))
    assert [t.shape for t in outputs] == [(0, *shape) for shape in expected]
    sum(t.float().sum() for t in outputs).backward()
    assert x.grad.shape == x.shape
    for param_name, p in module.named_parameters():
        assert p.grad is not None and not p.grad.any(), param_name
    for buffer_name, value in module.named_buffers():
        if buffer_name in buffers:
            torch.testing.assert_close(value, buffers[buffer_name], msg=f"{buffer_name} moved on an empty batch")


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_zero_length_axis_runs_or_names_the_axis(name, axis):
    factory, make, weights_kwargs, behaviour = PUBLIC_MODULES[name]
    module = factory()
    size = [4, 4]
    size[axis] = 0
    x = make(2, size).requires_grad_(True)
    if behaviour == "raises":
        with pytest.raises(ValueError, match="length 0 on its (height|width|first axial|second axial) axis"):
            module(x)
        return
    outputs = _flatten(_outputs(module(x, **(weights_kwargs or {}))))
    assert outputs[0].shape == x.shape and all(t.numel() == 0 for t in outputs)
    sum(t.sum() for t in outputs).backward()
    assert x.grad.shape == x.shape
