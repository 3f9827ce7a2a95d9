"""AxialAttention's options (rotary positions, attention bias, gating, local windows, bounded memory) against
the independent reference in tests/reference.py (scores built explicitly, rotation matrices from cos/sin of
the positions, the window as a mask, the bias added, the gate applied), outputs and gradients."""
import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import reference_axial_attention

from axial_attention import AxialAttention, AxialImageTransformer, AxisAttention, attend_along_axis

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py


@st.composite
def configs(draw):
    num_dimensions = draw(st.integers(1, 4))
    total = num_dimensions + 2
    dim_index = draw(st.sampled_from([i for i in range(-(total - 1), total) if i % total != 0]))
    heads = draw(st.integers(1, 3))
    dim_heads = draw(st.sampled_from([2, 4, 6]))
    rotary = draw(st.booleans())
    fraction = draw(st.sampled_from([f for f in (1.0, 0.5, 1 / 3, 2 / 3) if round(dim_heads * f) % 2 == 0
                                     and abs(dim_heads * f - round(dim_heads * f)) < 1e-9 and dim_heads * f > 0]))
    max_len = 5 if num_dimensions <= 2 else 3
    axial = draw(st.lists(st.integers(1, max_len), min_size=num_dimensions, max_size=num_dimensions))
    return dict(
        kwargs=dict(dim=draw(st.integers(1, 7)), num_dimensions=num_dimensions, heads=heads, dim_heads=dim_heads,
                    dim_index=dim_index, sum_axial_out=draw(st.booleans()),
                    causal=tuple(draw(st.lists(st.booleans(), min_size=num_dimensions, max_size=num_dimensions))),
                    rotary=rotary, rotary_fraction=fraction, rotary_theta=draw(st.sampled_from([10000.0, 7.0])),
                    gating=draw(st.booleans()),
                    window=tuple(draw(st.lists(st.sampled_from([None, 1, 2]), min_size=num_dimensions,
                                               max_size=num_dimensions))),
                    chunk_size=draw(st.sampled_from([None, 1, 7]))),
        batch=draw(st.integers(1, 2)), axial=axial, with_mask=draw(st.booleans()),
        biases=tuple(draw(st.lists(st.sampled_from([None, "shared", "full", "broadcast"]), min_size=num_dimensions,
                                   max_size=num_dimensions))),
        positions=tuple(draw(st.lists(st.sampled_from([None, "offset", "coords", "per batch"]),
                                      min_size=num_dimensions, max_size=num_dimensions))) if rotary else None,
        seed=draw(st.integers(0, 2**16)),
    )


def make_case(cfg, dtype):
    gen = torch.Generator().manual_seed(cfg["seed"])
    module = AxialAttention(**cfg["kwargs"]).to(dtype)
    with torch.no_grad():  # gates away from their initial constant, so the gate's weights matter; matrices
        for p in module.parameters():  # scaled by 1/sqrt(fan-in), as an initialisation keeps activations O(1)
            scale = p.shape[-1] ** -0.5 if p.ndim == 2 else 0.5
            p.copy_(torch.randn(p.shape, generator=gen, dtype=dtype) * scale)
    shape = [cfg["batch"], *cfg["axial"]]
    shape.insert(module.dim_index, cfg["kwargs"]["dim"])
    x = torch.randn(shape, generator=gen, dtype=dtype, requires_grad=True)
    mask = None
    if cfg["with_mask"]:
        mask = torch.rand(shape[: module.dim_index] + shape[module.dim_index + 1 :], generator=gen) > 0.3
    batch, axial, heads = cfg["batch"], cfg["axial"], cfg["kwargs"]["heads"]
    biases = []
    for i, kind in enumerate(cfg["biases"]):
        length, others = axial[i], axial[:i] + axial[i + 1 :]
        bias_shape = {None: None, "shared": (batch, heads, length, length),
                      "full": (batch, *others, heads, length, length),
                      "broadcast": (1, *(1,) * len(others), 1, length, length)}[kind]
        biases.append(None if bias_shape is None
                      else torch.randn(bias_shape, generator=gen, dtype=dtype).requires_grad_())
    positions = None
    if cfg["positions"] is not None:
        positions = []
        for i, kind in enumerate(cfg["positions"]):
            length = axial[i]
            positions.append({None: None, "offset": 3, "coords": torch.randn(length, generator=gen, dtype=dtype) * 4,
                              "per batch": torch.randn(batch, length, generator=gen, dtype=dtype) * 4}[kind])
    return module, x, mask, biases, positions


def compare(cfg, dtype, tol):
    """The module in `dtype` against the reference in float64 on the same weights and inputs (the truth, so the
    tolerance bounds the module's own rounding), outputs and gradients of input, parameters and biases."""
    module, x, mask, biases, positions = make_case(cfg, dtype)
    out = module(x, mask, attn_bias=biases, positions=positions)
    double = copy.deepcopy(module).double()
    x64 = x.detach().double().requires_grad_()
    biases64 = [None if b is None else b.detach().double().requires_grad_() for b in biases]
    positions64 = None if positions is None else [p.double() if isinstance(p, torch.Tensor) else p for p in positions]
    expected = reference_axial_attention(double, x64, mask, biases64, positions64)
    torch.testing.assert_close(out.double(), expected, rtol=tol, atol=tol)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    inputs = [x, *module.parameters(), *(b for b in biases if b is not None)]
    inputs64 = [x64, *double.parameters(), *(b for b in biases64 if b is not None)]
    got = torch.autograd.grad((out * weight.to(dtype)).sum(), inputs)
    want = torch.autograd.grad((expected * weight).sum(), inputs64)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.double(), w, rtol=tol, atol=tol)


@settings(max_examples=120, deadline=None)
@given(configs())
def test_options_match_the_reference_in_float64(cfg):
    compare(cfg, torch.float64, 1e-10)


@settings(max_examples=40, deadline=None)
@given(configs())
def test_options_match_the_reference_in_float32(cfg):
    compare(cfg, torch.float32, 1e-5)


# -- rotary ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim_index,causal", [(1, False), (-1, True)])
def test_rotary_is_relative_shifting_every_position_changes_nothing(dim_index, causal):
    torch.manual_seed(0)
    module = AxialAttention(8, 3, heads=2, dim_index=dim_index, rotary=True, causal=causal).double()
    x = torch.randn(2, 8, 5, 4, 6, dtype=torch.float64).movedim(1, dim_index)
    coords = [torch.randn(n, dtype=torch.float64) * 3 for n in (5, 4, 6)]
    base = module(x, positions=coords)
    torch.testing.assert_close(module(x, positions=[c + 11.5 for c in coords]), base, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(module(x), module(x, positions=(7, 7, 7)), rtol=1e-10, atol=1e-10)
    # ... and the positions are used: other relative positions give other outputs.
    assert (module(x, positions=[c * 2 for c in coords]) - base).abs().max() > 1e-3


def test_rotary_partial_fraction_leaves_the_other_channels_unrotated():
    """With rotary_fraction 0.5 only half of each head's query/key channels carry positions: a layer whose q/k
    weights are zero on the rotated half is position-blind, one with them zero on the other half is not."""
    torch.manual_seed(0)
    layer = AxisAttention(8, axis=1, heads=2, dim_heads=4, rotary=True, rotary_fraction=0.5).double()
    x = torch.randn(1, 6, 8, dtype=torch.float64)
    with torch.no_grad():
        for w in (layer.to_q.weight, layer.to_kv.weight[:8]):
            w.view(2, 4, 8)[:, :2] = 0  # the rotated channels of each head
    torch.testing.assert_close(layer(x, positions=torch.arange(6.0).double() * 5), layer(x), rtol=1e-10, atol=1e-10)
    assert "rotated=2" in repr(layer)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_rotary_real_arithmetic_under_export_equals_the_complex_product(monkeypatch, dtype):
    """Rotation is a complex product; under torch.export (no complex tensors) the same turn is done in real
    arithmetic. Both, on per-batch coordinates, a partial fraction and the middle axis."""
    from axial_attention.layers import rotary

    torch.manual_seed(0)
    t = torch.randn(2, 5, 6, 3, 3 * 6, dtype=torch.float64).to(dtype)  # 3 heads of width 6, 4 rotated
    coords = torch.randn(2, 6, dtype=torch.float64) * 4
    eager = rotary.rotate(t, 2, 3, 4, 100.0, coords)
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    traced = rotary.rotate(t, 2, 3, 4, 100.0, coords)
    tol = 1e-12 if dtype == torch.float64 else 8e-3  # bf16: float32 results an ulp apart may round apart
    torch.testing.assert_close(traced, eager, rtol=tol, atol=tol)
    assert (eager != t).any() and torch.equal(eager.unflatten(-1, (3, 6))[..., 4:], t.unflatten(-1, (3, 6))[..., 4:])


def test_a_rotary_model_built_for_16x16_runs_on_other_sizes_and_a_rotary_layer_on_any_volume():
    torch.manual_seed(0)
    model = AxialImageTransformer(16, depth=2, heads=2, rotary=True).eval()
    for size in ((16, 16), (40, 24), (7, 3)):
        out = model(torch.randn(2, 16, *size))
        assert out.shape == (2, 16, *size) and torch.isfinite(out).all()
    layer = AxialAttention(8, 3, heads=2, rotary=True)
    for size in ((3, 4, 5), (9, 2, 6)):
        assert layer(torch.randn(1, *size, 8)).shape == (1, *size, 8)


def test_rotary_cached_keys_equal_whole_sequence_attention():
    """A cache filled with keys rotated at their positions, queried one new position at a time with
    `positions=index`, gives the causal whole-sequence output: what the generative model's sampler relies on."""
    torch.manual_seed(0)
    layer = AxisAttention(8, axis=1, heads=2, causal=True, rotary=True, window=2).double().eval()
    x = torch.randn(3, 7, 8, dtype=torch.float64)
    whole = layer(x)
    for index in range(7):
        k, v = layer.project_kv(x[:, : index + 1])  # positions 0..index
        one = layer(x[:, index : index + 1], kv=(k, v), positions=index)
        torch.testing.assert_close(one, whole[:, index : index + 1], rtol=1e-10, atol=1e-10)


# -- bias and gating -------------------------------------------------------------------------------
@pytest.mark.parametrize("causal,window", [(False, None), (True, None), (False, 1)])
def test_a_bias_shared_by_every_line_equals_the_same_bias_given_per_line(causal, window):
    """A (batch, heads, L, L) bias reaches SDPA as a stride-0 view, per batch element or per line where folding
    it would be a copy (every axis of a 3-D input: lines before and after the axis); the same bias given in
    full, one copy per line, goes the one-call way. Outputs, weights and gradients (input, bias) agree."""
    torch.manual_seed(0)
    layer = AxialAttention(6, 3, heads=3, dim_heads=2, causal=causal, window=window).double()
    x = torch.randn(2, 4, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    lengths = (4, 3, 5)
    shared = [torch.randn(2, 3, n, n, dtype=torch.float64, requires_grad=True) for n in lengths]
    full = []
    for i, b in enumerate(shared):  # (batch, *the other axial axes, heads, L, L): a copy per line
        others = [n for j, n in enumerate(lengths) if j != i]
        full.append(b.detach()[:, None, None].expand(2, *others, *b.shape[1:]).clone().requires_grad_())
    out, weights = layer(x, attn_bias=shared, need_weights=True)
    out_full, weights_full = layer(x, attn_bias=full, need_weights=True)
    torch.testing.assert_close(out, out_full, rtol=1e-12, atol=1e-12)
    for w, w_full in zip(weights, weights_full):
        torch.testing.assert_close(w, w_full, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, [x, *shared], grad)
    want = torch.autograd.grad(out_full, [x, *full], grad)
    torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-12)
    for g, w in zip(got[1:], want[1:]):  # a shared bias' gradient is the per-line gradients summed
        torch.testing.assert_close(g, w.sum(dim=(1, 2)), rtol=1e-12, atol=1e-12)


def test_alphafold_row_attention_with_pair_bias_and_gating():
    """MSA row attention: (batch, rows, columns, dim), each row attends along the columns with the pair bias
    (batch, heads, columns, columns) shared by every row; gradients reach the bias."""
    torch.manual_seed(0)
    row = AxisAttention(8, axis=2, heads=2, gating=True).double()
    msa = torch.randn(2, 3, 5, 8, dtype=torch.float64)
    pair_bias = torch.randn(2, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    out = row(msa, attn_bias=pair_bias)
    per_row = torch.stack([row(msa[:, r : r + 1], attn_bias=pair_bias)[:, 0] for r in range(3)], dim=1)
    torch.testing.assert_close(out, per_row, rtol=1e-12, atol=1e-12)
    out.square().sum().backward()
    assert pair_bias.grad.abs().min() > 0
    # the gate starts open at sigmoid(1) for every channel: OpenFold's initialisation
    gate = torch.sigmoid(row.to_gate(msa))
    torch.testing.assert_close(gate, torch.full_like(gate, torch.sigmoid(torch.tensor(1.0)).item()))


def test_the_primitive_window_with_a_cache_aligns_queries_at_the_end():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 4), torch.randn(1, 6, 4), torch.randn(1, 6, 4)
    out, weights = attend_along_axis(q, k, v, 1, 1, window=1, causal=True, need_weights=True)
    allowed = torch.tensor([[0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 1, 1]], dtype=torch.bool)  # queries at 4 and 5
    assert torch.equal(weights[0, 0] > 0, allowed)


# -- windows ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("causal", [False, True])
def test_window_weights_are_zero_outside_the_window(causal):
    torch.manual_seed(0)
    module = AxialAttention(8, 2, heads=2, window=(2, None), causal=(causal, False))
    _, (rows, cols) = module(torch.randn(2, 7, 5, 8), need_weights=True)
    i, j = torch.arange(7)[:, None], torch.arange(7)[None, :]
    outside = ((i - j).abs() > 2) | ((j > i) if causal else torch.zeros(7, 7, dtype=torch.bool))
    # rows: (batch, heads, 7, 5, L=7) with the query index at dim 2
    assert torch.all(rows.movedim(2, -2)[..., outside] == 0)
    assert torch.all(rows.movedim(2, -2)[..., ~outside] > 0)
    assert torch.all(cols > 0)  # no window along the second axis


def test_window_covering_the_axis_is_global_attention():
    torch.manual_seed(0)
    windowed, plain = AxialAttention(8, 2, heads=2, window=6), AxialAttention(8, 2, heads=2)
    plain.load_state_dict(windowed.state_dict())
    x = torch.randn(2, 7, 5, 8)
    torch.testing.assert_close(windowed(x), plain(x))
    narrow = AxialAttention(8, 2, heads=2, window=1)
    narrow.load_state_dict(plain.state_dict())
    assert (narrow(x) - plain(x)).abs().max() > 1e-3  # ... and a narrower one is not


# -- bounded memory --------------------------------------------------------------------------------
@pytest.mark.parametrize("sum_axial_out", [True, False])
@pytest.mark.parametrize("chunk_size,shape", [(1, (2, 3, 4, 5)), (20, (1, 6, 5, 7)), (10_000, (2, 3, 4, 5))])
def test_chunks_give_the_unchunked_outputs_gradients_and_weights(sum_axial_out, chunk_size, shape):
    torch.manual_seed(0)
    kwargs = dict(heads=2, sum_axial_out=sum_axial_out, causal=(True, False, True), rotary=True, gating=True)
    plain = AxialAttention(8, 3, **kwargs).double()
    chunked = AxialAttention(8, 3, chunk_size=chunk_size, **kwargs).double()
    chunked.load_state_dict(plain.state_dict())
    x = torch.randn(*shape, 8, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(shape) > 0.2
    bias = torch.randn(shape[0], 2, shape[2], shape[2], dtype=torch.float64, requires_grad=True)
    coords = torch.randn(shape[0], shape[1], dtype=torch.float64)
    results = []
    for module in (plain, chunked):
        out, weights = module(x, mask, need_weights=True, attn_bias=(None, bias, None), positions=(coords, 2, None))
        grads = torch.autograd.grad(out.square().sum(), [x, bias, *module.parameters()])
        results.append((out, weights, grads))
    (out_a, w_a, g_a), (out_b, w_b, g_b) = results
    torch.testing.assert_close(out_b, out_a, rtol=1e-12, atol=1e-12)
    for a, b in zip((*w_a, *g_a), (*w_b, *g_b)):
        torch.testing.assert_close(b, a, rtol=1e-11, atol=1e-11)


def test_chunks_keep_no_whole_tensor_activations_for_backward():
    """What autograd saves for backward: the unchunked layer keeps q, k, v and attention outputs of every
    position; the chunked one only its input (recomputed chunk by chunk in backward)."""
    x = torch.randn(1, 16, 16, 16, 8, requires_grad=True)

    def saved_bytes(module):
        total = []

        def pack(t):
            total.append(t.numel() * t.element_size() if t.data_ptr() != x.data_ptr() else 0)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            module(x).sum().backward()
        return sum(total)

    torch.manual_seed(0)
    plain, chunked = AxialAttention(8, 3, heads=2), AxialAttention(8, 3, heads=2, chunk_size=256)
    chunked.load_state_dict(plain.state_dict())
    assert saved_bytes(chunked) < saved_bytes(plain) / 4


# -- bad arguments ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,error,pattern", [
    (dict(window=0), ValueError, r"window must be >= 1, got 0"),
    (dict(window=(1, 2, 3)), ValueError, r"window must have one entry per axial dimension \(2\)"),
    (dict(window=1.5), TypeError, r"window must be None, an int or a tuple"),
    (dict(rotary=True, dim_heads=3), ValueError, r"rotary_fraction \* dim_heads must be an even number.*3"),
    (dict(rotary=True, rotary_fraction=0.0), ValueError, r"rotary_fraction must be in \(0, 1\]"),
    (dict(rotary=True, rotary_theta=1.0), ValueError, r"rotary_theta must be a number > 1"),
    (dict(rotary=1), TypeError, r"rotary must be a bool"),
    (dict(gating="yes"), TypeError, r"gating must be a bool"),
    (dict(chunk_size=0), ValueError, r"chunk_size must be >= 1"),
])
def test_bad_options_are_named(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        AxialAttention(8, 2, heads=2, **kwargs)


def test_bad_forward_options_are_named():
    module = AxialAttention(8, 2, heads=2)
    x = torch.randn(2, 5, 4, 8)
    with pytest.raises(ValueError, match=r"attn_bias for attention along axial axis 2 .* \(2, 2, 4, 4\) or .* "
                                         r"\(2, 5, 2, 4, 4\); got \(2, 2, 5, 5\)"):
        module(x, attn_bias=(None, torch.zeros(2, 2, 5, 5)))
    with pytest.raises(ValueError, match=r"attn_bias must be a tuple with one entry \(or None\) per axial axis \(2\)"):
        module(x, attn_bias=torch.zeros(2, 2, 5, 5))
    with pytest.raises(TypeError, match=r"attn_bias must be a floating-point tensor"):
        module(x, attn_bias=(torch.zeros(2, 2, 5, 5, dtype=torch.long), None))
    with pytest.raises(ValueError, match=r"positions were given but .* has no rotary positions"):
        module(x, positions=(1, None))
    rotary = AxialAttention(8, 2, heads=2, rotary=True)
    with pytest.raises(ValueError, match=r"positions must have shape \(5,\) or \(2, 5\)"):
        rotary(x, positions=(torch.arange(4.0), None))
    with pytest.raises(TypeError, match=r"positions must be None, an int offset or a tensor"):
        rotary(x, positions=(1.5, None))


def test_extra_repr_lists_the_options_that_are_on():
    text = repr(AxialAttention(8, 2, heads=2, rotary=True, gating=True, window=(3, None), chunk_size=64))
    for entry in ("rotary=True", "rotary_theta=10000", "gating=True", "window=(3, None)", "chunk_size=64"):
        assert entry in text
    assert "rotary" not in repr(AxialAttention(8, 2, heads=2)).split("(", 1)[1].split(")")[0]
