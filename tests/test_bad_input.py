"""Every public constructor and forward names the argument, what was expected and what came."""
import pytest
import torch

from axial_attention import AxialAttention, AxialPositionalEmbedding


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
