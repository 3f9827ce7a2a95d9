"""Every public constructor and forward names the argument, what was expected and what came."""
import pytest
import torch
from torch import nn

from axial_attention import (
    AxialAttention,
    AxialBlock,
    AxialImageTransformer,
    AxialPositionalEmbedding,
    AxialResNet,
    AxisAttention,
    PastNeighbourhoodAttention,
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


def _pair_of_linears():
    return [(nn.Linear(4, 4), nn.Linear(4, 4))]


@pytest.mark.parametrize(
    "build, error, words",
    [
        (lambda: AxisAttention(8, axis=0), ValueError, ["axis must be >= 1", "got 0"]),
        (lambda: AxisAttention(8, axis=1, causal=1), TypeError, ["causal must be a bool", "int"]),
        (lambda: AxialPositionalEmbedding(8, (4, 4), interpolate="yes"), TypeError, ["interpolate must be a bool"]),
        (lambda: AxialImageTransformer(8, 1, reversible=1), TypeError, ["reversible must be a bool", "int (1)"]),
        (lambda: ReversibleSequence(_pair_of_linears(), preserve_rng_state=None), TypeError,
         ["preserve_rng_state must be a bool", "NoneType"]),
        (lambda: PositionSensitiveAxialAttention(8, heads=2, local="no"), TypeError, ["local must be a bool", "str"]),
        (lambda: PositionSensitiveAxialAttention(8, heads=2, axis=True), ValueError,
         ["axis must be 'height' or 'width'", "True"]),
        (lambda: PositionSensitiveAxialAttention(8, heads=2, axis=1), ValueError, ["axis must be", "got 1"]),
        (lambda: AxialBlock(8, 4, span=(4,)), TypeError, ["span must be an int or a (height, width) pair", "(4,)"]),
        (lambda: AxialBlock(8, 4, span=(4, 0)), ValueError, ["span[1] must be >= 1", "got 0"]),
        (lambda: AxialResNet((1, 1, 1, 1), width_multiplier=0), ValueError, ["width_multiplier must be > 0", "0"]),
        (lambda: AxialResNet((1, 1, 1, 1), width_multiplier="half"), TypeError,
         ["width_multiplier must be a positive number", "str"]),
        (lambda: AxialResNet((1, 1, 1)), ValueError, ["layers must list 4 block counts", "(1, 1, 1)"]),
        (lambda: AxialResNet((1, 1, 1, 1), local=None), TypeError, ["local must be a bool"]),
    ],
)
def test_shared_argument_checks_name_the_argument(build, error, words):
    with pytest.raises(error) as info:
        build()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_errors_name_the_module_as_its_repr_does():
    attn = AxialAttention(8, 2, heads=2, causal=(True, False))
    with pytest.raises(ValueError) as info:
        attn(torch.randn(2, 4, 4, 6))
    assert "AxialAttention(dim=8, num_dimensions=2, heads=2, dim_heads=4, dim_index=3, sum_axial_out=True, " \
           "causal=(True, False), dropout=0.0) expects 8" in str(info.value)
    assert attn.extra_repr() in repr(attn)


# A dtype other than the module's, outside autocast: torch's own error ("expected m1 and m2 to have the same
# dtype") names neither the input nor the module.
DTYPE_CASES = {
    "AxialAttention": (lambda: AxialAttention(8, heads=2), (2, 3, 4, 8)),
    "AxisAttention": (lambda: AxisAttention(8, axis=1, heads=2), (2, 3, 4, 8)),
    "AxialPositionalEmbedding": (lambda: AxialPositionalEmbedding(8, (3, 4)), (2, 8, 3, 4)),
    "AxialImageTransformer": (lambda: AxialImageTransformer(8, 1, heads=2), (2, 8, 3, 4)),
    "PositionSensitiveAxialAttention": (lambda: PositionSensitiveAxialAttention(8, heads=2, span=4), (2, 8, 4, 4)),
    "PastNeighbourhoodAttention": (lambda: PastNeighbourhoodAttention(8, 2, window=3, heads=2), (2, 3, 4, 8)),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(DTYPE_CASES))
def test_an_input_of_another_dtype_names_both_dtypes(name, dtype):
    factory, shape = DTYPE_CASES[name]
    module = factory()
    with pytest.raises(TypeError) as info:
        module(torch.randn(shape, dtype=dtype))
    message = str(info.value)
    for word in (f"dtype {dtype}", f"{name}(", "torch.float32 parameters", "torch.autocast"):
        assert word in message, (word, message)
    module.to(dtype)(torch.randn(shape, dtype=dtype))  # the fix it names works
    with torch.autocast("cpu", torch.bfloat16):  # and under autocast a bf16 input runs on float32 weights
        factory()(torch.randn(shape, dtype=torch.bfloat16))


@pytest.mark.parametrize(
    "shape, error, words",
    [
        ((3, 4, 8), ValueError, ["pixels has 3 dims", "expects 4", "batch, 2 axes, embedding"]),
        ((2, 3, 4, 5, 8), ValueError, ["pixels has 5 dims", "expects 4"]),
        ((2, 3, 4, 6), ValueError, ["size 6", "embedding axis", "expects 8"]),
    ],
)
def test_past_neighbourhood_attention_forward(shape, error, words):
    with pytest.raises(error) as info:
        PastNeighbourhoodAttention(8, 2, window=3, heads=2)(torch.randn(shape))
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    with pytest.raises(TypeError, match="pixels must be a floating-point tensor"):
        PastNeighbourhoodAttention(8, 2, window=3, heads=2)(torch.zeros(2, 3, 4, 8, dtype=torch.long))
