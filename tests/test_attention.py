"""AxialAttention against the independent reference in tests/reference.py, plus semantics by perturbation."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import reference_attention_weights, reference_axial_attention

from axial_attention import AxialAttention


@st.composite
def configs(draw):
    num_dimensions = draw(st.integers(1, 4))
    total = num_dimensions + 2
    dim_index = draw(st.sampled_from([i for i in range(-(total - 1), total) if i % total != 0]))
    heads = draw(st.integers(1, 3))
    dim_heads = draw(st.sampled_from([None, 3]))
    dim = heads * draw(st.integers(1, 3)) if dim_heads is None else draw(st.integers(1, 7))
    max_len = 5 if num_dimensions <= 2 else 3
    # 0 included on purpose: an empty batch (an empty last shard) and a zero-length axis are ordinary inputs.
    axial = draw(st.lists(st.integers(0, max_len), min_size=num_dimensions, max_size=num_dimensions))
    batch = draw(st.integers(0, 2))
    causal = tuple(draw(st.lists(st.booleans(), min_size=num_dimensions, max_size=num_dimensions)))
    return dict(
        kwargs=dict(dim=dim, num_dimensions=num_dimensions, heads=heads, dim_heads=dim_heads, dim_index=dim_index,
                    sum_axial_out=draw(st.booleans()), causal=causal),
        batch=batch, axial=axial, with_mask=draw(st.booleans()), seed=draw(st.integers(0, 2**16)),
    )


def make_input(cfg, dtype=torch.float64):
    gen = torch.Generator().manual_seed(cfg["seed"])
    module = AxialAttention(**cfg["kwargs"]).to(dtype)
    shape = [cfg["batch"], *cfg["axial"]]
    dim_index = module.dim_index
    shape.insert(dim_index, cfg["kwargs"]["dim"])
    x = torch.randn(shape, generator=gen, dtype=dtype)
    mask = None
    if cfg["with_mask"]:
        mask_shape = shape[:dim_index] + shape[dim_index + 1 :]
        mask = torch.rand(mask_shape, generator=gen) > 0.35
    return module, x, mask


@settings(max_examples=150, deadline=None)
@given(configs())
def test_matches_naive_reference(cfg):
    module, x, mask = make_input(cfg)
    expected = reference_axial_attention(module, x, mask)
    torch.testing.assert_close(module(x, mask), expected, rtol=1e-9, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(configs(), st.data())
def test_empty_inputs_run_forward_and_backward(cfg, data):
    """With an empty batch or a zero-length axis the output is empty and of x's shape, the attention maps
    are empty and of their documented shape, and backward gives every parameter a zero gradient."""
    axes = cfg["kwargs"]["num_dimensions"]
    emptied = data.draw(st.integers(0, axes), label="emptied dim (0 = batch)")
    if emptied == 0:
        cfg["batch"] = 0
    else:
        cfg["axial"][emptied - 1] = 0
    module, x, mask = make_input(cfg)
    x.requires_grad_(True)
    out, weights = module(x, mask, need_weights=True)
    assert out.shape == x.shape and out.numel() == 0
    shape = (cfg["batch"], module.axial_attentions[0].heads, *cfg["axial"])
    assert [w.shape for w in weights] == [(*shape, length) for length in cfg["axial"]]
    (out.sum() + sum(w.sum() for w in weights)).backward()
    assert x.grad.shape == x.shape
    for name, p in module.named_parameters():
        assert p.grad is not None and not p.grad.any(), name


@settings(max_examples=40, deadline=None)
@given(configs())
def test_attention_weights_match_reference(cfg):
    cfg["kwargs"]["sum_axial_out"] = True
    module, x, mask = make_input(cfg)
    out, weights = module(x, mask, need_weights=True)
    torch.testing.assert_close(out, module(x, mask))
    expected = reference_attention_weights(module, x, mask)
    assert len(weights) == len(expected) == module.num_dimensions
    for got, want in zip(weights, expected):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    # The same layout one level down: each AxisAttention, on the channel-last input, with its own weights.
    h = x.movedim(module.dim_index, -1)
    for attn, want in zip(module.axial_attentions, expected):
        torch.testing.assert_close(attn(h, mask, need_weights=True)[1], want, rtol=1e-9, atol=1e-9)


def test_return_attention_is_the_earlier_name_of_need_weights():
    module = AxialAttention(8, 2, heads=2, dim_index=1).double()
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    new, old, positional = module(x, need_weights=True), module(x, return_attention=True), module(x, None, True)
    for a, b in ((new, old), (new, positional)):
        torch.testing.assert_close(a[0], b[0])
        for w_a, w_b in zip(a[1], b[1]):
            torch.testing.assert_close(w_a, w_b)
    assert isinstance(module(x, return_attention=False), torch.Tensor)
    with pytest.raises(ValueError, match="need_weights=True and return_attention=False disagree"):
        module(x, need_weights=True, return_attention=False)


@pytest.mark.parametrize("sum_axial_out", [True, False])
@pytest.mark.parametrize(
    "shape, dim_index, causal",
    [
        ((2, 6, 4, 5, 8), -1, (True, False, False)),  # video, causal in time only
        ((2, 6, 8, 4, 5), 2, (True, False, False)),  # embedding between time and space
        ((1, 8, 5, 6), 1, (False, True)),  # image, causal along width only
        ((1, 7, 4, 3, 2, 8), -1, (True, True, False, True)),  # 4 axial dims
    ],
)
def test_causality_by_perturbation(shape, dim_index, causal, sum_axial_out):
    torch.manual_seed(0)
    module = AxialAttention(shape[dim_index], len(shape) - 2, heads=2, dim_index=dim_index, causal=causal,
                            sum_axial_out=sum_axial_out).double()
    x = torch.randn(shape, dtype=torch.float64)
    base = module(x)
    axial_dims = [d for d in range(1, len(shape)) if d % len(shape) != module.dim_index]
    for dim, is_causal in zip(axial_dims, causal):
        if not is_causal:
            continue
        for cut in range(1, shape[dim]):
            perturbed = x.clone()
            perturbed.narrow(dim, cut, shape[dim] - cut).add_(torch.randn_like(perturbed.narrow(dim, cut, shape[dim] - cut)))
            out = module(perturbed)
            torch.testing.assert_close(out.narrow(dim, 0, cut), base.narrow(dim, 0, cut), rtol=0, atol=1e-12)
            # and the future does move: the test could fail
            assert not torch.allclose(out.narrow(dim, cut, 1), base.narrow(dim, cut, 1))


@pytest.mark.parametrize("sum_axial_out", [True, False])
def test_masked_positions_are_never_attended(sum_axial_out):
    torch.manual_seed(0)
    module = AxialAttention(8, 2, heads=2, dim_index=1, sum_axial_out=sum_axial_out).double()
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    mask = torch.rand(2, 5, 6) > 0.4
    base = module(x, mask)
    noise = torch.randn_like(x) * (~mask).unsqueeze(1)  # change only the invalid positions
    out = module(x + noise, mask)
    valid = mask.unsqueeze(1).expand_as(out)
    torch.testing.assert_close(out[valid], base[valid], rtol=0, atol=1e-12)
    assert not torch.allclose(module(x + noise), module(x))  # without the mask the change is seen


@pytest.mark.parametrize("causal", [False, True])
def test_nothing_valid_to_attend_is_finite_in_forward_and_backward(causal):
    module = AxialAttention(8, 2, heads=2, causal=causal)
    x = torch.randn(2, 4, 5, 8, requires_grad=True)
    mask = torch.ones(2, 4, 5, dtype=torch.bool)
    mask[0] = False  # a whole example padded away
    mask[1, :, 0] = False  # with causal, query 0 along width sees only an invalid key
    out = module(x, mask)
    out.square().sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    for p in module.parameters():
        assert torch.isfinite(p.grad).all()


def test_dropout_only_in_training():
    torch.manual_seed(0)
    module = AxialAttention(8, 2, heads=2, dropout=0.5)
    x = torch.randn(1, 6, 6, 8)
    module.eval()
    torch.testing.assert_close(module(x), module(x))
    module.train()
    assert not torch.allclose(module(x), module(x))


def test_axis_of_length_one():
    module = AxialAttention(8, 3, heads=2, causal=True).double()
    x = torch.randn(2, 1, 3, 1, 8, dtype=torch.float64)
    torch.testing.assert_close(module(x), reference_axial_attention(module, x))


def test_bf16_autocast_tracks_float32():
    torch.manual_seed(0)
    module = AxialAttention(32, 2, heads=4)
    x = torch.randn(2, 9, 10, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = module(x).float()
    high = module(x)
    assert (low - high).abs().max() < 0.05 * high.abs().max()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("axis", [1, 2, 3])
def test_primitive_with_bias_scale_mask_and_longer_keys_matches_explicit_scores(axis, causal):
    """attend_along_axis with everything at once: keys longer than queries along the axis (a cache,
    causal then end-aligned), a key mask, an additive bias and a custom scale."""
    from axial_attention import attend_along_axis

    gen = torch.Generator().manual_seed(axis)
    heads, dq, dv = 2, 3, 4
    shape_q = [2, 3, 4, 5]
    shape_k = list(shape_q)
    shape_k[axis] += 2
    q = torch.randn(*shape_q, heads * dq, generator=gen, dtype=torch.float64)
    k = torch.randn(*shape_k, heads * dq, generator=gen, dtype=torch.float64)
    v = torch.randn(*shape_k, heads * dv, generator=gen, dtype=torch.float64)
    len_q, len_k = shape_q[axis], shape_k[axis]
    others = shape_q[:axis] + shape_q[axis + 1 :]
    bias = torch.randn(*others, heads, len_q, len_k, generator=gen, dtype=torch.float64)
    key_mask = torch.rand(shape_k, generator=gen) > 0.3
    out = attend_along_axis(q, k, v, axis, heads, key_mask=key_mask, causal=causal, attn_bias=bias, scale=0.7)

    def heads_first(t, width):  # (..., L at axis, ..., heads*width) -> (*others, heads, L, width)
        return t.movedim(axis, -2).unflatten(-1, (heads, width)).transpose(-2, -3)

    scores = heads_first(q, dq) @ heads_first(k, dq).transpose(-1, -2) * 0.7 + bias
    allowed = key_mask.movedim(axis, -1)[..., None, None, :].expand(*others, heads, len_q, len_k).clone()
    if causal:
        allowed &= torch.ones(len_q, len_k, dtype=torch.bool).tril(len_k - len_q)
    weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1).nan_to_num(0.0)
    expected = (weights @ heads_first(v, dv)).transpose(-2, -3).flatten(-2).movedim(-2, axis)
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)


def test_axis_attention_names_a_wrong_input():
    from axial_attention import AxisAttention

    with pytest.raises(ValueError, match=r"size 6 on its embedding axis.*AxisAttention\(dim=8, axis=1.*expects 8"):
        AxisAttention(8, axis=1)(torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match=r"x has 3 dims; AxisAttention\(dim=8, axis=2.*expects at least 4 \(channel"):
        AxisAttention(8, axis=2)(torch.randn(2, 5, 8))


@pytest.mark.parametrize("shape", [(0, 3, 4), (2, 0, 4), (2, 3, 0)])
@pytest.mark.parametrize("axis", [1, 2])
def test_primitive_with_empty_inputs_and_every_option(shape, axis):
    """An empty batch or axis through the bias, key-mask, causal and weights paths: empty results of the
    documented shapes, not a reshape error."""
    from axial_attention import attend_along_axis

    heads, width = 2, 3
    q, k, v = (torch.randn(*shape, heads * width, requires_grad=True) for _ in range(3))
    others = shape[:axis] + shape[axis + 1 :]
    bias = torch.randn(*others, heads, shape[axis], shape[axis])
    out, weights = attend_along_axis(q, k, v, axis, heads, key_mask=torch.ones(shape, dtype=torch.bool),
                                     causal=True, attn_bias=bias, need_weights=True)
    assert out.shape == q.shape and weights.shape == (shape[0], heads, *shape[1:], shape[axis])
    (out.sum() + weights.sum()).backward()
    assert q.grad.shape == q.shape and v.grad.shape == v.shape
