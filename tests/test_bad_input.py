"""Every public constructor and forward names the argument, what was expected and what came."""
import pytest
import torch
from torch import nn

import axial_attention
from axial_attention import (
    AutoregressiveAxialTransformer,
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
# lengths), how to call it (None: module(x); a dict: keyword arguments that also return attention weights; or
# a function of (module, x)), and what a zero-length axial axis does: "runs" (empty output of x's shape) or
# raises a ValueError whose message matches the given pattern.
NAMES_THE_AXIS = "length 0 on its (height|width|first axial|second axial) axis"
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
                              _channels_first(8), None, NAMES_THE_AXIS),
    "AxialImageTransformer(reversible=False)": (
        lambda: AxialImageTransformer(8, 1, heads=2, reversible=False), _channels_first(8), None, NAMES_THE_AXIS),
    "PositionSensitiveAxialAttention": (lambda: PositionSensitiveAxialAttention(8, heads=2, span=4),
                                        _channels_first(8), dict(need_weights=True), NAMES_THE_AXIS),
    "PositionSensitiveAxialAttention(local, stride)": (
        lambda: PositionSensitiveAxialAttention(8, heads=2, span=2, axis="width", local=True, stride=2),
        _channels_first(8), dict(need_weights=True), NAMES_THE_AXIS),
    "AxialBlock": (lambda: AxialBlock(8, 4, heads=2, span=4), _channels_first(8), None, NAMES_THE_AXIS),
    "AxialResNet": (lambda: AxialResNet((1, 1, 1, 1), 0.0625, 3, heads=2, image_size=4, stem="small"),
                    _channels_first(3), None, NAMES_THE_AXIS),
    # Integer images of a fixed image_shape: logits and log-likelihoods; other sizes are refused by shape.
    "AutoregressiveAxialTransformer": (
        lambda: AutoregressiveAxialTransformer((1, 4, 4), 4, dim=8, heads=2, depth=1),
        lambda batch, size: torch.randint(0, 4, (batch, 1, *size)), lambda m, x: (m(x), m.log_prob(x)),
        r"must have shape \(batch, channels, height, width\) = \(batch, 1, 4, 4\)"),
}


def test_every_public_module_is_listed():
    """A new public module must join PUBLIC_MODULES, so the degenerate sizes below cannot be forgotten."""
    public = {
        name for name in axial_attention.__all__
        if isinstance(getattr(axial_attention, name), type) and issubclass(getattr(axial_attention, name), nn.Module)
    }
    listed = {name.split("(")[0] for name in PUBLIC_MODULES}
    assert public <= listed, f"public modules missing from PUBLIC_MODULES: {sorted(public - listed)}"


def _call(module, x, call):
    result = module(x) if call is None else module(x, **call) if isinstance(call, dict) else call(module, x)
    return _flatten(list(result) if isinstance(result, tuple) else [result])


def _input(make, batch, size):
    x = make(batch, size)
    return x.requires_grad_(True) if x.is_floating_point() else x


def _flatten(tensors):
    return [t for item in tensors for t in (_flatten(item) if isinstance(item, (tuple, list)) else [item])]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_empty_batch_runs_forward_and_backward(name):
    """Batch 0 (an empty last shard): the empty result of the right shape, zero gradients, statistics untouched."""
    factory, make, call, _ = PUBLIC_MODULES[name]
    torch.manual_seed(0)
    module = factory()  # training mode: batch norms would use (and update) batch statistics
    with torch.no_grad():
        expected = [t.shape[1:] for t in _call(module, make(2, (4, 4)), call)]
    buffers = {k: v.clone() for k, v in module.named_buffers() if not k.endswith("num_batches_tracked")}
    x = _input(make, 0, (4, 4))
    outputs = _call(module, x, call)
    assert [t.shape for t in outputs] == [(0, *shape) for shape in expected]
    sum(t.float().sum() for t in outputs).backward()
    assert x.grad is None if not x.is_floating_point() else x.grad.shape == x.shape
    for param_name, p in module.named_parameters():
        assert p.grad is not None and not p.grad.any(), param_name
    for buffer_name, value in module.named_buffers():
        if buffer_name in buffers:
            torch.testing.assert_close(value, buffers[buffer_name], msg=f"{buffer_name} moved on an empty batch")


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_zero_length_axis_runs_or_names_the_axis(name, axis):
    factory, make, call, behaviour = PUBLIC_MODULES[name]
    module = factory()
    size = [4, 4]
    size[axis] = 0
    x = _input(make, 2, size)
    if behaviour != "runs":
        with pytest.raises(ValueError, match=behaviour):
            _call(module, x, call)
        return
    outputs = _call(module, x, call)
    assert outputs[0].shape == x.shape and all(t.numel() == 0 for t in outputs)
    sum(t.sum() for t in outputs).backward()
    assert x.grad.shape == x.shape
