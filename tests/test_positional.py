import pytest
import torch

from axial_attention import AxialPositionalEmbedding


def explicit_embedding(module, sizes):
    """The embedding added at every position, computed position by position: (*sizes, dim)."""
    tables = [getattr(module, f"param_{i}").movedim(module.emb_dim_index, -1).flatten(0, -2) for i in range(module.num_axes)]
    out = torch.zeros(*sizes, module.dim)
    for index in torch.cartesian_prod(*[torch.arange(s) for s in sizes]).reshape(-1, len(sizes)):
        rows = [t[i] for t, i in zip(tables, index.tolist())]
        out[tuple(index.tolist())] = torch.cat(rows) if module.concatenate else sum(rows)
    return out


@pytest.mark.parametrize("emb_dim_index", [1, 2, -1])
@pytest.mark.parametrize("axial_dims", [None, (2, 3, 1)])
@pytest.mark.parametrize("sizes", [(3, 4, 5), (2, 1, 5)])  # full size, and a leading slice
def test_matches_explicit_per_position_embedding(emb_dim_index, axial_dims, sizes):
    module = AxialPositionalEmbedding(6, (3, 4, 5), emb_dim_index=emb_dim_index, axial_dims=axial_dims)
    shape = [2, *sizes]
    shape.insert(module.emb_dim_index, 6)
    x = torch.randn(shape)
    expected = x + explicit_embedding(module, sizes).movedim(-1, module.emb_dim_index - 1).unsqueeze(0)
    torch.testing.assert_close(module(x), expected)


def test_interpolation_is_opt_in_and_keeps_the_built_size_exact():
    module = AxialPositionalEmbedding(4, (3, 5), interpolate=True)
    x = torch.zeros(1, 4, 3, 5)
    plain = AxialPositionalEmbedding(4, (3, 5))
    plain.load_state_dict(module.state_dict())
    torch.testing.assert_close(module(x), plain(x))  # at the built size nothing is resampled
    big = module(torch.zeros(1, 4, 6, 10))
    assert big.shape == (1, 4, 6, 10)
    # linear resampling of a constant table is that constant
    with torch.no_grad():
        module.param_0.fill_(1.0)
        module.param_1.fill_(2.0)
    torch.testing.assert_close(module(torch.zeros(1, 4, 6, 10)), torch.full((1, 4, 6, 10), 3.0))


def test_embedding_is_what_forward_adds():
    module = AxialPositionalEmbedding(6, (3, 4), emb_dim_index=-1, axial_dims=(2, 4))
    x = torch.randn(2, 3, 2, 6)
    torch.testing.assert_close(module(x), x + module.embedding((3, 2)))
    assert module.embedding((3, 2)).shape == (1, 3, 2, 6)
