"""Deployment: the models trace under torch.export with dynamic sizes, and export to ONNX (the [onnx] extra).

Every exported program is run at sizes other than its example input's and compared with the eager module:
a trace that fixed a size it was told is dynamic fails here, not only one that fails to trace.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.export import Dim, export
from torch.overrides import TorchFunctionMode

from axial_attention import (
    AutoregressiveAxialTransformer,
    AxialAttention,
    AxialResNet,
    PositionSensitiveAxialAttention,
    axial_resnet26s,
)
from axial_attention.layers.position_sensitive_kernels import _chunks

ROOT = Path(__file__).resolve().parent.parent
TOL = dict(rtol=1e-5, atol=1e-5)  # float32: the same kernels, up to summation order


def randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Eval mode with running statistics and affine parameters away from the identity (the eval path folds them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.3 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, PositionSensitiveAxialAttention):
                m.similarity_running_var.copy_(0.5 + torch.rand(m.similarity_running_var.shape, generator=g))
    return model.eval()


def symbolic_dims(program: torch.export.ExportedProgram) -> list[list[bool]]:
    """Per user input of the exported program, per dim: whether its size is symbolic (dynamic)."""
    names = set(program.graph_signature.user_inputs)
    return [[isinstance(s, torch.SymInt) for s in node.meta["val"].shape]
            for node in program.graph.nodes if node.op == "placeholder" and node.name in names]


def assert_matches(program, model, *calls) -> None:
    """The exported program equals the eager model on each call, (args, kwargs)."""
    with torch.no_grad():
        for args, kwargs in calls:
            expected = model(*args, **kwargs)
            torch.testing.assert_close(program.module()(*args, **kwargs), expected, **TOL)


def count_nodes(program, name: str) -> int:
    return sum(1 for node in program.graph.nodes if node.op == "call_function" and name in str(node.target))


class CountSDPA(TorchFunctionMode):
    """Counts eager calls of scaled_dot_product_attention."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.nn.functional.scaled_dot_product_attention:
            self.calls += 1
        return func(*args, **(kwargs or {}))


def dims(**ranges):
    return {name: Dim(name, min=low, max=high) for name, (low, high) in ranges.items()}


# -- AxialAttention --------------------------------------------------------------------------------------------

def test_axial_attention_causal_and_masked_with_dynamic_batch_and_sizes():
    torch.manual_seed(0)
    model = AxialAttention(16, 2, heads=2, dim_index=1, causal=(True, False)).eval()
    d = dims(b=(1, 16), h=(2, 64), w=(2, 64))
    x, mask = torch.randn(2, 16, 6, 7), torch.rand(2, 6, 7) > 0.3
    program = export(model, (x, mask), dynamic_shapes={"x": {0: d["b"], 2: d["h"], 3: d["w"]},
                                                       "mask": {0: d["b"], 1: d["h"], 2: d["w"]}})
    assert symbolic_dims(program) == [[True, False, True, True], [True, True, True]]
    calls = [((torch.randn(b, 16, h, w), torch.rand(b, h, w) > 0.3), {}) for b, h, w in [(3, 9, 5), (1, 2, 12)]]
    assert_matches(program, model, *calls)
    # causal along the first axis holds in the exported program: the future moves nothing before it
    x, valid = torch.randn(1, 16, 5, 4), torch.ones(1, 5, 4, dtype=torch.bool)
    later = x.clone()
    later[:, :, 3:] += 1.0
    with torch.no_grad():
        before, after = program.module()(x, valid), program.module()(later, valid)
    torch.testing.assert_close(after[:, :, :3], before[:, :, :3])
    assert not torch.allclose(after[:, :, 3:], before[:, :, 3:])


def test_chunk_loops_collapse_under_dynamic_export_and_stay_chunked_otherwise():
    torch.manual_seed(0)
    model = AxialAttention(16, 2, heads=2, chunk_size=20, sum_axial_out=False).eval()
    x = torch.randn(2, 6, 7, 16)
    with CountSDPA() as eager:  # eager keeps its chunks: more calls than one per axis
        model(x)
    assert eager.calls > 2
    d = dims(b=(1, 16), h=(2, 64), w=(2, 64))
    program = export(model, (x,), dynamic_shapes={"x": {0: d["b"], 1: d["h"], 2: d["w"]}})
    assert count_nodes(program, "scaled_dot_product_attention") == 2  # one call per axis, any size
    assert_matches(program, model, ((torch.randn(3, 9, 5, 16),), {}), ((torch.randn(1, 30, 20, 16),), {}))
    static = export(model, (x,))  # at fixed sizes the exported program keeps the chunks
    assert count_nodes(static, "scaled_dot_product_attention") == eager.calls
    assert_matches(static, model, ((x,), {}))


@pytest.mark.slow
@pytest.mark.parametrize("case", ["rotary-gating-window", "attn_bias", "chunk_size", "3-D"])
def test_axial_attention_options_export_with_dynamic_sizes(case):
    torch.manual_seed(0)
    d = dims(b=(1, 16), t=(2, 16), h=(2, 64), w=(2, 64))
    if case == "3-D":  # (batch, dim, frames, height, width), causal in time, rotary, with a mask
        model = AxialAttention(16, 3, heads=2, dim_index=1, causal=(True, False, False), rotary=True).eval()
        shapes = {"x": {0: d["b"], 2: d["t"], 3: d["h"], 4: d["w"]}, "mask": {0: d["b"], 1: d["t"], 2: d["h"],
                                                                            3: d["w"]}}
        program = export(model, (torch.randn(2, 16, 3, 4, 5), torch.rand(2, 3, 4, 5) > 0.2), dynamic_shapes=shapes)
        calls = [((torch.randn(b, 16, t, h, w), torch.rand(b, t, h, w) > 0.2), {}) for b, t, h, w in
                 [(1, 5, 3, 6), (3, 2, 7, 2)]]
    elif case == "attn_bias":  # one bias per axis, per example, sized by the axis it biases
        model = AxialAttention(16, 2, heads=2).eval()
        x, bias = torch.randn(2, 6, 7, 16), (torch.randn(2, 2, 6, 6), torch.randn(2, 2, 7, 7))
        shapes = {"x": {0: d["b"], 1: d["h"], 2: d["w"]},
                  "attn_bias": ({0: d["b"], 2: d["h"], 3: d["h"]}, {0: d["b"], 2: d["w"], 3: d["w"]})}
        program = export(model, (x,), {"attn_bias": bias}, dynamic_shapes=shapes)
        calls = [((torch.randn(b, h, w, 16),), {"attn_bias": (torch.randn(b, 2, h, h), torch.randn(b, 2, w, w))})
                 for b, h, w in [(3, 9, 5), (1, 2, 11)]]
    else:
        options = dict(rotary=True, gating=True, window=(2, None)) if case != "chunk_size" else dict(chunk_size=16)
        model = AxialAttention(16, 2, heads=2, causal=(False, True), **options).eval()
        program = export(model, (torch.randn(2, 6, 7, 16),), dynamic_shapes={"x": {0: d["b"], 1: d["h"], 2: d["w"]}})
        calls = [((torch.randn(b, h, w, 16),), {}) for b, h, w in [(3, 9, 5), (1, 12, 2)]]
    assert all(all(dim for i, dim in enumerate(shape) if i != model.dim_index % len(shape))
               for shape in symbolic_dims(program)[:1])
    assert_matches(program, model, *calls)


# -- the position-sensitive layer and the Axial-ResNets ----------------------------------------------------------

@pytest.mark.parametrize("axis", ["height", pytest.param("width", marks=pytest.mark.slow)])
def test_position_sensitive_attention_exports_with_dynamic_sizes_in_one_chunk(axis):
    model = randomise_norms(PositionSensitiveAxialAttention(16, 16, heads=4, span=12, axis=axis))
    model.chunk_scores = 64  # eager: many chunks of a few rows each
    assert len(list(_chunks(4, 2 * 9, 9, model.chunk_scores))) > 1
    x = torch.randn(2, 16, 9, 7)
    d = dims(b=(1, 16), h=(2, 12), w=(2, 12))
    program = export(model, (x,), dynamic_shapes={"x": {0: d["b"], 2: d["h"], 3: d["w"]}})
    assert symbolic_dims(program) == [[True, False, True, True]]
    assert count_nodes(program, "softmax") == 1  # the chunks collapse: one softmax over every line
    assert_matches(program, model, ((torch.randn(3, 16, 12, 5),), {}), ((torch.randn(1, 16, 4, 12),), {}))


def small_resnet(image_size: int, local: bool = True) -> AxialResNet:
    """Four one-block stages, 8x narrower than the paper's S models, and the 3x3 stem: total stride 8."""
    return randomise_norms(AxialResNet((1, 1, 1, 1), 0.125, 10, heads=4, stem="small", image_size=image_size,
                                       local=local))


@pytest.mark.slow
def test_small_axial_resnet_exports_with_sizes_in_multiples_of_its_stride():
    """Up to image_size every stage attends globally; spatial sizes vary in multiples of the total stride (8),
    so each stage's map is exactly a size that the strided shortcut and the pooled attention agree on."""
    torch.manual_seed(0)
    model = small_resnet(32)
    d = dims(b=(1, 16), h=(2, 4), w=(2, 4))
    program = export(model, (torch.randn(2, 3, 24, 16),), dynamic_shapes={"x": {0: d["b"], 2: 8 * d["h"],
                                                                                3: 8 * d["w"]}})
    assert symbolic_dims(program) == [[True, False, True, True]]
    assert_matches(program, model, ((torch.randn(3, 3, 16, 32),), {}), ((torch.randn(1, 3, 32, 32),), {}))


@pytest.mark.slow
def test_local_axial_resnet_exports_for_maps_larger_than_its_span():
    torch.manual_seed(0)
    model = small_resnet(16)  # inputs 24..48 > 16: every stage attends within windows
    d = dims(b=(1, 16), h=(3, 6), w=(3, 6))
    program = export(model, (torch.randn(2, 3, 32, 24),), dynamic_shapes={"x": {0: d["b"], 2: 8 * d["h"],
                                                                                3: 8 * d["w"]}})
    assert_matches(program, model, ((torch.randn(1, 3, 24, 48),), {}), ((torch.randn(3, 3, 40, 32),), {}))


@pytest.mark.slow
def test_axial_resnet26s_exports_with_dynamic_sizes():
    torch.manual_seed(0)
    model = randomise_norms(axial_resnet26s(num_classes=10, image_size=96))
    d = dims(b=(1, 16), h=(2, 3), w=(2, 3))
    program = export(model, (torch.randn(2, 3, 64, 64),), dynamic_shapes={"x": {0: d["b"], 2: 32 * d["h"],
                                                                                3: 32 * d["w"]}})
    assert_matches(program, model, ((torch.randn(1, 3, 96, 64),), {}), ((torch.randn(3, 3, 64, 96),), {}))


# -- the Axial Transformer's likelihood --------------------------------------------------------------------------

class BitsPerDim(nn.Module):
    """bits_per_dim without the input checks: the value-range check reads the data, which export cannot trace."""

    def __init__(self, model: AutoregressiveAxialTransformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, x, labels=None):
        nats = self.model.log_prob_tokens(self.model.to_tokens(x), labels)
        return -nats / (math.prod(self.model.image_shape) * math.log(2))


@pytest.mark.parametrize("options", [dict(num_classes=3),
                                     pytest.param(dict(pos_emb="rotary"), marks=pytest.mark.slow),
                                     pytest.param(dict(past_window=3, image_shape=(1, 3, 4, 5)),
                                                  marks=pytest.mark.slow)],
                         ids=["class-conditional", "rotary", "video-past-window"])
def test_autoregressive_likelihood_exports_with_a_dynamic_batch(options):
    torch.manual_seed(0)
    options = dict(options)
    shape = options.pop("image_shape", (3, 4, 5))
    model = AutoregressiveAxialTransformer(shape, 8, dim=16, heads=2, depth=1, **options).eval()
    labels = (lambda n: torch.randint(0, 3, (n,))) if "num_classes" in options else (lambda n: None)
    batch = Dim("batch", min=1, max=64)
    x = torch.randint(0, 8, (2, *shape))
    program = export(BitsPerDim(model), (x, labels(2)),
                     dynamic_shapes={"x": {0: batch}, "labels": {0: batch} if "num_classes" in options else None})
    assert symbolic_dims(program)[0] == [True] + [False] * len(shape)
    with torch.no_grad():
        for n in (5, 1):
            y, lab = torch.randint(0, 8, (n, *shape)), labels(n)
            torch.testing.assert_close(program.module()(y, lab), model.bits_per_dim(y, lab), **TOL)


# -- ONNX (the [onnx] extra) -------------------------------------------------------------------------------------

def onnx_runtime():
    pytest.importorskip("onnx", reason="ONNX export needs the [onnx] extra: pip install 'torch-axial-attention[onnx]'")
    pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript ([onnx] extra)")
    return pytest.importorskip("onnxruntime", reason="running the ONNX file needs onnxruntime ([onnx] extra)")


def export_onnx(model, x, dynamic_shapes, path):
    """torch.onnx.export(dynamo=True) to `path`, then the file's input dims (a name where dynamic) and a session."""
    import onnx

    ort = onnx_runtime()
    torch.onnx.export(model, (x,), str(path), dynamic_shapes=dynamic_shapes, dynamo=True)
    graph = onnx.load(str(path)).graph
    input_dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input]
    return input_dims, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def assert_onnx_matches(session, model, *inputs):
    with torch.no_grad():
        for x in inputs:
            (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
            torch.testing.assert_close(torch.from_numpy(out), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_axial_attention_to_onnx_runs_in_onnxruntime_at_other_sizes(tmp_path):
    onnx_runtime()
    torch.manual_seed(0)
    model = AxialAttention(16, 2, heads=2, dim_index=1, causal=(True, False), rotary=True, gating=True).eval()
    d = dims(b=(1, 64), h=(2, 64), w=(2, 64))
    input_dims, session = export_onnx(model, torch.randn(2, 16, 6, 7), {"x": {0: d["b"], 2: d["h"], 3: d["w"]}},
                                      tmp_path / "axial_attention.onnx")
    assert input_dims == [["b", 16, "h", "w"]]
    assert_onnx_matches(session, model, torch.randn(3, 16, 9, 5), torch.randn(1, 16, 20, 31))


@pytest.mark.slow
def test_axial_resnet26s_to_onnx_runs_in_onnxruntime(tmp_path):
    onnx_runtime()
    torch.manual_seed(0)
    # Every block active (no zero-initialised residual), the norms at their initial statistics: randomised ones
    # make this deep a network so ill-conditioned that eager float32 itself is 1e-2 away from float64.
    model = axial_resnet26s(num_classes=10, image_size=64, zero_init_residual=False).eval()
    batch = Dim("batch", min=1, max=64)
    input_dims, session = export_onnx(model, torch.randn(2, 3, 64, 64), {"x": {0: batch}}, tmp_path / "26s.onnx")
    assert input_dims == [["batch", 3, 64, 64]]
    assert_onnx_matches(session, model, torch.randn(3, 3, 64, 64), torch.randn(1, 3, 64, 64))


@pytest.mark.slow
def test_the_deploying_pages_onnx_example_runs(tmp_path, monkeypatch):
    """docs/deploying.md shows its ONNX example as text (the docs run without the extra); it runs here."""
    onnx_runtime()
    page = (ROOT / "docs" / "deploying.md").read_text(encoding="utf-8")
    (example,) = [code for code in re.findall(r"^```text\n(.*?)^```", page, flags=re.S | re.M)
                  if "torch.onnx.export" in code]
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "deploying.md ONNX example", "exec"), {"__name__": "__docs__"})
    assert (tmp_path / "axial_attention.onnx").exists()
