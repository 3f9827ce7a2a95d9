"""AxialImageTransformer: reversible gradients against plain autograd, 0.6.1 drop-in, causality, DDP, bf16."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from axial_attention import AxialImageTransformer, convert_lucidrains_state_dict


def two_stream_reference(model, x):
    """The reversible transformer's function with plain autograd: embedding, both streams start at x,
    x1 += f(x2), x2 += g(x1) over the blocks, mean of the streams, in the model's layout."""
    h = model.pos_emb(x).movedim(model.dim_index, -1).contiguous()
    x1 = x2 = h
    for block in model.layers.blocks:
        x1 = x1 + block.f(x2)
        if block.g is not None:
            x2 = x2 + block.g(x1)
    return ((x1 + x2) / 2).movedim(-1, model.dim_index)


def grads(model, run, x, seed=11):
    model.zero_grad(set_to_none=True)
    if x.requires_grad:
        x.grad = None
    torch.manual_seed(seed)
    out = run(x)
    (out * torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape).cos()).sum().backward()
    named = {n: p.grad.clone() for n, p in model.named_parameters()}
    if x.requires_grad:
        named["x"] = x.grad.clone()
    return named


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        (dict(dim=8, depth=2, heads=2, dropout=0.25, axial_pos_emb_shape=(5, 4)), (2, 8, 5, 4)),
        (dict(dim=8, depth=1, heads=2, dropout=0.25, dim_index=-1, causal=(True, False)), (1, 3, 6, 8)),
        # 3 axes, depth 1: five sublayers, so the last block has f only
        (dict(dim=4, depth=1, heads=1, dropout=0.25, num_dimensions=3), (1, 4, 3, 2, 3)),
    ],
)
@pytest.mark.parametrize("input_grad", [True, False])
def test_reversible_gradients_equal_plain_autograd(kwargs, shape, input_grad):
    torch.manual_seed(0)
    model = AxialImageTransformer(**kwargs).double().train()
    x = torch.randn(shape, dtype=torch.double, requires_grad=input_grad)
    ours = grads(model, model, x)
    expected = grads(model, lambda t: two_stream_reference(model, t), x)
    assert ours.keys() == expected.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], expected[name], rtol=1e-5, atol=1e-5, msg=name)
    # the dropout masks matter: another seed gives other gradients
    other = grads(model, model, x, seed=12)
    assert not torch.allclose(other["layers.blocks.0.f.attn.to_q.weight"], ours["layers.blocks.0.f.attn.to_q.weight"])


def test_feed_forward_norm_is_0_6_1s_formula_with_exact_gradients():
    from axial_attention.models.image_transformer import _ChanLayerNorm

    torch.manual_seed(0)
    norm = _ChanLayerNorm(6).double()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 3, 4, 6, dtype=torch.double, requires_grad=True)
    std = torch.var(x, dim=-1, unbiased=False, keepdim=True).sqrt()
    expected = (x - x.mean(-1, keepdim=True)) / (std + 1e-5) * norm.weight + norm.bias
    torch.testing.assert_close(norm(x), expected)
    params = (x, norm.weight, norm.bias)
    assert torch.autograd.gradcheck(lambda *_: norm(x), params)
    assert torch.autograd.gradgradcheck(lambda *_: norm(x), params)


@pytest.mark.parametrize("reversible", [True, False])
@pytest.mark.parametrize("kwargs", [dict(dim=16, depth=2, heads=4), dict(dim=8, depth=1, heads=2, dim_heads=3)])
def test_0_6_1_checkpoint_converts_to_the_same_function(peer, reversible, kwargs):
    torch.manual_seed(0)
    theirs = peer.AxialImageTransformer(**kwargs, reversible=reversible, axial_pos_emb_shape=(6, 5))
    ours = AxialImageTransformer(**kwargs, reversible=reversible, axial_pos_emb_shape=(6, 5))
    ours.load_state_dict(convert_lucidrains_state_dict(theirs.state_dict()))
    x = torch.randn(2, kwargs["dim"], 6, 5, requires_grad=True)  # 0.6.1's reversible needs an input grad
    out_theirs = theirs(x)
    (out_theirs * out_theirs.detach().sin()).sum().backward()
    grad_theirs, x.grad = x.grad, None
    out_ours = ours(x)
    (out_ours * out_ours.detach().sin()).sum().backward()
    torch.testing.assert_close(out_ours, out_theirs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, grad_theirs, rtol=1e-5, atol=1e-5)


def test_0_6_1_readme_example_runs_unchanged_at_a_smaller_size():
    conv1x1 = torch.nn.Conv2d(3, 128, 1)
    transformer = AxialImageTransformer(dim=128, depth=12, reversible=True)
    img = torch.randn(1, 3, 8, 8)  # 0.6.1's README uses 512 x 512
    out = transformer(conv1x1(img))
    assert out.shape == (1, 128, 8, 8) and out.is_contiguous()


@pytest.mark.parametrize("reversible", [True, False])
def test_causal_output_ignores_the_future_on_both_axes(reversible):
    torch.manual_seed(0)
    model = AxialImageTransformer(dim=8, depth=2, heads=2, causal=True, reversible=reversible).eval()
    free = AxialImageTransformer(dim=8, depth=2, heads=2, reversible=reversible).eval()
    x = torch.randn(1, 8, 6, 5)
    i0, j0 = 3, 2
    x_changed = x.clone()
    x_changed[0, :, i0, j0] += torch.randn(8)  # not a constant shift, which the norms would remove
    past = torch.ones(6, 5, dtype=torch.bool)
    past[i0:, j0:] = False  # positions (i, j) with i >= i0 and j >= j0 may see (i0, j0)
    with torch.no_grad():
        delta = (model(x_changed) - model(x)).abs().amax(dim=1)
        free_delta = (free(x_changed) - free(x)).abs().amax(dim=1)
    assert delta[0][past].max() == 0
    assert delta[0, i0, j0] > 1e-2 and delta[0, -1, -1] > 1e-2
    assert free_delta[0][past].min() > 1e-3  # without causal the same perturbation reaches everywhere


def test_channel_last_input_computes_the_same_function():
    torch.manual_seed(0)
    first = AxialImageTransformer(dim=8, depth=1, heads=2, axial_pos_emb_shape=(4, 5))
    last = AxialImageTransformer(dim=8, depth=1, heads=2, dim_index=-1, axial_pos_emb_shape=(4, 5))
    state = first.state_dict()
    state.update({k: v.movedim(1, -1) for k, v in state.items() if k.startswith("pos_emb.")})
    last.load_state_dict(state)
    x = torch.randn(2, 8, 4, 5)
    out = last(x.movedim(1, -1))
    assert out.is_contiguous()
    torch.testing.assert_close(out, first(x).movedim(1, -1))


def test_video_with_three_axial_dimensions():
    model = AxialImageTransformer(dim=8, depth=2, heads=2, num_dimensions=3, axial_pos_emb_shape=(2, 3, 4))
    x = torch.randn(1, 8, 2, 3, 4)
    out = model(x)
    assert out.shape == x.shape
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def under_bf16_autocast(fn):
    def run(t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fn(t)
    return run


@pytest.mark.parametrize("reversible", [True, False])
def test_bf16_autocast_trains(reversible):
    torch.manual_seed(0)
    model = AxialImageTransformer(dim=16, depth=2, heads=2, dropout=0.1, reversible=reversible)
    x = torch.randn(2, 16, 6, 6)
    assert under_bf16_autocast(model)(x).dtype == torch.float32  # streams stay float32, sublayers run bf16
    ours = grads(model, under_bf16_autocast(model), x)
    full = grads(model, model, x)  # not comparable value by value: bf16 attention draws other dropout masks
    plain = grads(model, under_bf16_autocast(lambda t: two_stream_reference(model, t)), x) if reversible else ours
    for name in ours:
        scale = full[name].abs().max().item()
        assert scale > 0, name
        assert torch.isfinite(ours[name]).all() and ours[name].abs().max() > 0, name
        # bf16 keeps ~3 significant digits: a tolerance relative to each gradient's float32 scale
        torch.testing.assert_close(ours[name], plain[name], rtol=0, atol=2e-2 * scale, msg=name)


def _ddp_step(rank, world, path):
    torch.manual_seed(0)
    model = AxialImageTransformer(dim=8, depth=2, heads=2).double()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    xs = torch.randn(world, 2, 8, 4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.double)
    ddp(xs[rank]).square().mean().backward()  # a plain input: the parameters alone need grads
    if rank == 0:
        torch.save({n: p.grad for n, p in model.named_parameters()}, path)


def _ddp_worker(rank, world, rendezvous, path):
    # A file rendezvous in the test's own folder: no port to pick, so no race with other processes for it.
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        # DDP lives and dies inside _ddp_step: its reducer must be gone before the process group is
        # destroyed, and both ranks leave together, or a rank can abort at exit.
        _ddp_step(rank, world, path)
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_distributed_data_parallel_averages_reversible_gradients(tmp_path):
    path = tmp_path / "grads.pt"
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "rendezvous"), str(path)), nprocs=2, join=True)
    got = torch.load(path)

    torch.manual_seed(0)
    model = AxialImageTransformer(dim=8, depth=2, heads=2).double()
    xs = torch.randn(2, 2, 8, 4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.double)
    per_rank = [grads(model, lambda t: model(t).square().mean() / 2, x) for x in xs]  # DDP averages
    assert got.keys() == per_rank[0].keys()
    for name in got:
        torch.testing.assert_close(got[name], per_rank[0][name] + per_rank[1][name], rtol=1e-7, atol=1e-9, msg=name)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(dim=8, depth=0), ValueError, "depth"),
        (dict(dim=8, depth=1, num_dimensions=4), ValueError, "num_dimensions"),
        (dict(dim=8, depth=1, causal=(True,)), ValueError, "causal"),
        (dict(dim=8, depth=1, reversible="yes"), TypeError, "reversible"),
        (dict(dim=8, depth=1, axial_pos_emb_shape=(4,)), ValueError, "axial_pos_emb_shape"),
        (dict(dim=8, depth=1, axial_pos_emb_shape=3.0), TypeError, "axial_pos_emb_shape"),
        (dict(dim=8, depth=1, dropout=1.5), ValueError, "dropout"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        AxialImageTransformer(**kwargs)


@pytest.mark.parametrize("shape, match", [((2, 8, 4), "3 dims"), ((2, 6, 4, 4), "embedding axis")])
def test_bad_input_is_named(shape, match):
    with pytest.raises(ValueError, match=match):
        AxialImageTransformer(dim=8, depth=1, heads=2)(torch.randn(shape))


def test_the_modules_earlier_name_still_imports_and_loads_models_pickled_under_it():
    import pickle

    from axial_attention.transformer import AxialImageTransformer as EarlierName

    assert EarlierName is AxialImageTransformer
    for reversible in (True, False):
        model = AxialImageTransformer(8, 1, heads=2, reversible=reversible).eval()
        # Protocol 2, as inside torch.save's archive: classes are named as text, module path then class
        # name, so renaming the path gives the bytes a model pickled before the move had.
        pickled = pickle.dumps(model, protocol=2)
        old = pickled.replace(b"axial_attention.models.image_transformer\n", b"axial_attention.transformer\n")
        # the model's class and its private sublayers' (_PreNormAttention, _ConvFeedForward, _ChanLayerNorm, ...)
        assert old.count(b"axial_attention.transformer\n") >= 4
        loaded = pickle.loads(old)
        x = torch.randn(1, 8, 3, 4)
        torch.testing.assert_close(loaded(x), model(x))
