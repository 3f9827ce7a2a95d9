"""Position-sensitive axial attention and Axial-ResNets against the naive Eq. 4 of reference.py."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from reference import naive_eq4, window_mask

from axial_attention import (
    AxialBlock,
    AxialResNet,
    PositionSensitiveAxialAttention,
    axial_resnet26s,
    axial_resnet50l,
    axial_resnet50m,
    axial_resnet50s,
)


def randomise(layer: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial affine parameters and running statistics, so no norm is an identity by accident."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(layer.named_parameters()) + list(layer.named_buffers()):
            if "num_batches" in name:
                continue
            if "var" in name or "weight" in name and ("bn" in name or "similarity" in name):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif "bias" in name or "mean" in name:
                t.copy_(0.3 * torch.randn(t.shape, generator=g))


CASES = [  # (axis, span, local, height, width, stride)
    ("height", 7, False, 7, 5, 1),  # global, full span, non-square
    ("width", 9, False, 4, 6, 1),  # global, shorter than the span
    ("height", 3, True, 8, 5, 1),  # local window inside a longer axis
    ("width", 4, True, 3, 9, 2),  # even local span, stride with odd sizes
    ("height", 1, True, 4, 3, 1),  # span 1: each query sees only itself
    ("width", 5, False, 2, 1, 1),  # an axis of length 1
]


@pytest.mark.parametrize("chunks", ["rows", "heads"])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("axis,span,local,height,width,stride", CASES)
def test_matches_naive_eq4(axis, span, local, height, width, stride, training, chunks):
    torch.manual_seed(0)
    layer = PositionSensitiveAxialAttention(12, 16, heads=2, span=span, axis=axis, local=local, stride=stride).double()
    randomise(layer)
    layer.train(training)
    if chunks == "rows":  # several chunks of rows within a head; by default, one chunk holds both heads
        layer.chunk_scores = 2 * 2 * max(height, width) ** 2
    x = torch.randn(3, 12, height, width, dtype=torch.double, requires_grad=True)
    ref_layer = PositionSensitiveAxialAttention(12, 16, heads=2, span=span, axis=axis, local=local, stride=stride)
    ref_layer = ref_layer.double().train(training)
    ref_layer.load_state_dict(layer.state_dict())
    x_ref = x.detach().clone().requires_grad_(True)

    out, weights = layer(x, need_weights=True)
    ref, ref_weights, variances = naive_eq4(ref_layer, x_ref)
    assert out.shape == (3, 16, math.ceil(height / stride), math.ceil(width / stride))
    torch.testing.assert_close(out, ref)
    order = (0, 3, 1, 2, 4) if axis == "height" else (0, 2, 1, 3, 4)  # back to (batch, lines, heads, o, p)
    torch.testing.assert_close(weights.permute(order), ref_weights)

    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad)
    for (name, p), p_ref in zip(layer.named_parameters(), ref_layer.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, msg=name)
    if training:  # running variance: unbiased batch variance blended in with momentum 0.1
        lines, length = (width, height) if axis == "height" else (height, width)
        n = 3 * lines * int(window_mask(length, span).sum())
        expected = 0.9 * ref_layer.similarity_running_var + 0.1 * torch.stack(variances) * n / max(n - 1, 1)
        torch.testing.assert_close(layer.similarity_running_var, expected)


def test_weights_are_a_distribution_over_the_window():
    layer = PositionSensitiveAxialAttention(8, 8, heads=2, span=3, axis="width", local=True).eval()
    _, weights = layer(torch.randn(2, 8, 3, 7), need_weights=True)
    assert weights.shape == (2, 2, 3, 7, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 3, 7))
    outside = ~window_mask(7, 3)
    assert (weights[..., outside] == 0).all() and (weights[..., ~outside] > 0).all()


def test_local_equals_global_within_the_span():
    torch.manual_seed(1)
    g = PositionSensitiveAxialAttention(8, 8, heads=2, span=6, axis="height").eval()
    loc = PositionSensitiveAxialAttention(8, 8, heads=2, span=6, axis="height", local=True).eval()
    loc.load_state_dict(g.state_dict())
    x = torch.randn(2, 8, 5, 3)
    torch.testing.assert_close(loc(x), g(x))


def test_output_depends_only_on_the_window():
    """Perturb keys outside a query's local window: its output must not move."""
    torch.manual_seed(2)
    layer = PositionSensitiveAxialAttention(8, 8, heads=2, span=3, axis="height", local=True).eval()
    x = torch.randn(1, 8, 9, 2)
    y = x.clone()
    y[:, :, 6:] += torch.randn_like(y[:, :, 6:])  # query 2 sees rows 1..3
    torch.testing.assert_close(layer(x)[:, :, :4], layer(y)[:, :, :4])
    assert not torch.allclose(layer(x)[:, :, 6:], layer(y)[:, :, 6:])


PARAMS = [(axial_resnet26s, 5.9e6), (axial_resnet50s, 11.6e6), (axial_resnet50m, 25.2e6), (axial_resnet50l, 44.0e6)]


@pytest.mark.parametrize("build,count", PARAMS)
def test_parameter_counts_match_the_official_models(build, count):
    n = sum(p.numel() for p in build(num_classes=1000).parameters())
    assert abs(n / count - 1) < 0.01, n


@pytest.mark.parametrize("size", [(224, 224), (256, 256), (64, 96)])
def test_axial_resnet26s_runs_at_several_sizes(size):
    model = axial_resnet26s(num_classes=10).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 10) and torch.isfinite(out).all()


def test_bigger_model_runs_non_square():
    model = axial_resnet50s(num_classes=5).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 40))
    assert out.shape == (1, 5) and torch.isfinite(out).all()


def test_global_backbone_is_exact_up_to_image_size_and_refuses_beyond():
    model = AxialResNet((1, 1, 1, 1), 0.125, 3, heads=2, image_size=(64, 48), local=False).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 48)).shape == (1, 3)
        assert model(torch.randn(1, 3, 33, 17)).shape == (1, 3)
    with pytest.raises(ValueError, match="span"):
        model(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("stride,size", [(1, (6, 6)), (2, (7, 5))])
def test_axial_block_is_a_bottleneck_drop_in(stride, size):
    block = AxialBlock(16, 8, stride, heads=2, span=8)
    out = block(torch.randn(2, 16, *size))
    assert out.shape == (2, 16, math.ceil(size[0] / stride), math.ceil(size[1] / stride))
    assert (out >= 0).all()  # ends in a ReLU after the residual sum
    assert (block.downsample is None) == (stride == 1)


def test_bad_input():
    layer = PositionSensitiveAxialAttention(16, heads=4, span=8)
    with pytest.raises(ValueError, match="embedding axis .* expects 16"):
        layer(torch.randn(1, 12, 8, 8))
    with pytest.raises(ValueError, match="height 9.*span=8"):
        layer(torch.randn(1, 16, 9, 8))
    layer(torch.randn(1, 16, 8, 30))  # the width is not this layer's axis
    with pytest.raises(ValueError, match="expects 4"):
        layer(torch.randn(16, 8, 8))
    with pytest.raises(TypeError, match="floating"):
        layer(torch.ones(1, 16, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible by heads"):
        PositionSensitiveAxialAttention(16, 20, heads=8)
    with pytest.raises(ValueError, match="must be even"):
        PositionSensitiveAxialAttention(16, 24, heads=8)
    with pytest.raises(ValueError, match="axis"):
        PositionSensitiveAxialAttention(16, axis="depth")
    with pytest.raises(TypeError, match="span"):
        PositionSensitiveAxialAttention(16, span=7.0)
    with pytest.raises(ValueError, match=r"AxialBlock\(16, 8, stride=1, heads=2, .*\) expects 16"):
        AxialBlock(16, 8, heads=2)(torch.randn(1, 8, 4, 4))
    with pytest.raises(ValueError, match="layers"):
        AxialResNet((1, 1, 1), 0.5)
    with pytest.raises(ValueError, match="stem"):
        AxialResNet((1, 1, 1, 1), 0.5, stem="cifar")
    with pytest.raises(ValueError, match=r"AxialResNet\(layers=\(1, 2, 4, 1\), .*in_channels=3, .*\) expects 3"):
        axial_resnet26s(num_classes=2)(torch.randn(1, 1, 32, 32))


def test_digits_example_runs_tiny(monkeypatch, capsys):
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "examples" / "classify_digits.py"
    argv = [str(script), "--epochs", "1", "--width", "0.0625", "--heads", "2", "--limit", "64", "--batch-size", "32"]
    monkeypatch.setattr("sys.argv", argv)
    threads = torch.get_num_threads()
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        torch.set_num_threads(threads)  # the example pins one thread; leave the other tests theirs
    out = capsys.readouterr().out
    # A one-epoch run of a tiny model on 64 digits: a smoke test that the script trains, evaluates and
    # reports (the accuracy target is checked by running the example at its defaults, see the README).
    assert "test accuracy:" in out, out
    float(out.split("test accuracy:")[1].split()[0].rstrip("%"))


def float32_and_bf16(module: torch.nn.Module, x: torch.Tensor, grad: bool):
    """module(x) in float32 and, on a copy (training moves running statistics), under bf16 autocast on
    x's device -> (float32 output, bf16 output as float32, the copy)."""
    twin = copy.deepcopy(module)
    with torch.set_grad_enabled(grad):
        high = module(x)
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            low = twin(x).float()
    return high, low, twin


@pytest.mark.parametrize("grad", [True, False])  # the autograd node, or the chunks run directly
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("local", [False, True])
def test_bf16_autocast_tracks_float32(training, local, grad):
    torch.manual_seed(0)
    layer = PositionSensitiveAxialAttention(16, heads=2, span=5 if local else 12, axis="width", local=local)
    high, low, _ = float32_and_bf16(layer.train(training), torch.randn(2, 16, 6, 12), grad)
    assert torch.isfinite(low).all()
    assert (low - high).abs().max() < 0.05 * high.abs().max()


@pytest.mark.parametrize("training", [False, True])
def test_channels_last_input_gives_the_same_result(training):
    torch.manual_seed(0)
    layer = PositionSensitiveAxialAttention(16, heads=2, span=8, axis="height").train(training)
    randomise(layer)
    twin = copy.deepcopy(layer)  # training moves running statistics: each input gets its own copy
    x = torch.randn(2, 16, 8, 6, requires_grad=True)
    x_last = x.detach().to(memory_format=torch.channels_last).requires_grad_(True)
    out, out_last = layer(x), twin(x_last)
    torch.testing.assert_close(out_last, out)
    grad = torch.randn_like(out)
    out.backward(grad)
    out_last.backward(grad)
    torch.testing.assert_close(x_last.grad, x.grad)
    with torch.no_grad():  # eval without autograd lays the output out in the input's memory format
        layer.eval()
        torch.testing.assert_close(layer(x_last), layer(x))
        assert layer(x_last).is_contiguous(memory_format=torch.channels_last)
        assert layer(x).is_contiguous()

    model = axial_resnet26s(num_classes=10, image_size=32).train(training)
    model_last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    images = torch.randn(2, 3, 32, 32)
    expected = model(images)
    torch.testing.assert_close(model_last(images.to(memory_format=torch.channels_last)), expected,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("training", [False, True])
def test_cuda_bf16_autocast_tracks_float32(training, grad):
    torch.manual_seed(0)
    model = axial_resnet26s(num_classes=10, image_size=64).cuda().train(training)
    high, low, twin = float32_and_bf16(model, torch.randn(2, 3, 64, 64, device="cuda"), grad)
    assert torch.isfinite(low).all()
    assert (low - high).abs().max() < 0.1 * high.abs().max()
    if grad:
        low.sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in twin.parameters() if p.grad is not None)
