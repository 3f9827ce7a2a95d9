"""One contract for every public module (after timm's tests/test_models.py).

Each public `nn.Module` of `axial_attention.__all__` has at least one entry in CASES, and every entry
goes through the same checks: the documented output shapes, finite outputs, a gradient for every
parameter from a plain input, a state_dict round trip, torch.compile against eager, bf16 autocast,
an empty batch, a zero-length axial axis, and an extra_repr. A new public module fails
`test_every_public_module_has_a_case` until it joins the table. Module-specific semantics (references,
causality, caches) stay in the module's own test file.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

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
    PastNeighbourhoodAttention,
    PositionSensitiveAxialAttention,
    ReversibleSequence,
    SelfAttention,
)

SIZE = (4, 4)  # the axial lengths of a case's input unless it says otherwise; the batch is 2 unless a check says
NAMES_THE_AXIS = "length 0 on its (height|width|first axial|second axial) axis"


def channels_first(channels: int) -> Callable[[int, tuple[int, int]], torch.Tensor]:
    return lambda batch, size: torch.randn(batch, channels, *size)


def channel_last(channels: int) -> Callable[[int, tuple[int, int]], torch.Tensor]:
    return lambda batch, size: torch.randn(batch, *size, channels)


def with_mask(module: nn.Module, x: torch.Tensor):
    """AxialAttention with a fixed padding mask of x's shape without the embedding axis, and its weights."""
    shape = x.shape[:module.dim_index] + x.shape[module.dim_index + 1:]
    mask = torch.arange(math.prod(shape)).reshape(shape) % 3 != 1  # fixed, and made inside torch.compile too
    return module(x, mask, need_weights=True)


def with_bias_and_positions(module: nn.Module, x: torch.Tensor):
    """AxialAttention (channel-last, 2 heads) with a pair bias per axis, shared by the lines (batch, heads, L, L), and
    rotary coordinates (an offset, and one coordinate per position), all made from x's shape inside the call."""
    batch, height, width = x.shape[:3]
    biases = tuple(torch.arange(batch * 2 * n * n, dtype=x.dtype).reshape(batch, 2, n, n).sin()
                   for n in (height, width))
    return module(x, attn_bias=biases, positions=(3, torch.arange(width, dtype=x.dtype) * 0.5), need_weights=True)


@dataclass
class Case:
    factory: Callable[[], nn.Module]
    make_input: Callable[[int, tuple[int, int]], torch.Tensor]  # (batch, axial lengths) -> input
    shapes: list[tuple[int, ...]]  # every output's shape for a batch of 2 at SIZE, in call order
    call: Union[None, dict, Callable] = None  # None: module(x); a dict: keyword arguments; or f(module, x)
    zero_length_axis: str = "runs"  # "runs" (empty outputs) or the pattern of the ValueError it raises
    fullgraph: bool = True  # torch.compile without a graph break (in eval; in training see fullgraph_training)
    size: tuple[int, int] = SIZE
    # The reversible backward is an autograd.Function that captures the RNG state: a graph break in training.
    fullgraph_training: Optional[bool] = None  # None: as fullgraph
    compile_training: bool = True  # False where another case compiles the same training path, at less cost


WEIGHTS = [(2, 2, 4, 4, 4)] * 2  # (batch, heads, *axial, L) for each of the two axes
CASES = {
    "AxialAttention": Case(lambda: AxialAttention(8, heads=2, dim_index=1), channels_first(8),
                           [(2, 8, 4, 4), *WEIGHTS], dict(need_weights=True)),
    "AxialAttention(causal, mask)": Case(lambda: AxialAttention(8, heads=2, causal=(True, False), dim_index=1),
                                         channels_first(8), [(2, 8, 4, 4), *WEIGHTS], with_mask),
    "AxialAttention(sum_axial_out=False, causal)": Case(
        lambda: AxialAttention(8, heads=2, sum_axial_out=False, causal=True), channel_last(8),
        [(2, 4, 4, 8), *WEIGHTS], dict(need_weights=True)),
    "AxialAttention(rotary, gating, window)": Case(
        lambda: AxialAttention(8, heads=2, dim_index=1, causal=(True, False), rotary=True, rotary_fraction=0.5,
                               gating=True, window=(1, None)), channels_first(8), [(2, 8, 4, 4), *WEIGHTS],
        with_mask),
    "AxialAttention(attn_bias, positions)": Case(
        lambda: AxialAttention(8, heads=2, rotary=True), channel_last(8), [(2, 4, 4, 8), *WEIGHTS],
        with_bias_and_positions),
    "AxialAttention(chunk_size, sum_axial_out=False)": Case(
        lambda: AxialAttention(8, heads=2, sum_axial_out=False, chunk_size=4, rotary=True, gating=True),
        channel_last(8), [(2, 4, 4, 8), *WEIGHTS], dict(need_weights=True)),
    "AxisAttention": Case(lambda: AxisAttention(8, axis=1, heads=2, causal=True), channel_last(8),
                          [(2, 4, 4, 8), (2, 2, 4, 4, 4)], dict(need_weights=True)),
    "PastNeighbourhoodAttention": Case(lambda: PastNeighbourhoodAttention(8, 2, window=3, past_slices=2, heads=2),
                                       channel_last(8), [(2, 4, 4, 8)]),
    "AxialPositionalEmbedding": Case(lambda: AxialPositionalEmbedding(8, SIZE), channels_first(8), [(2, 8, 4, 4)]),
    "AxialPositionalEmbedding(axial_dims)": Case(lambda: AxialPositionalEmbedding(8, SIZE, -1, axial_dims=(3, 5)),
                                                 channel_last(8), [(2, 4, 4, 8)]),
    "ReversibleSequence": Case(lambda: ReversibleSequence([(nn.Linear(8, 8), nn.Linear(8, 8)) for _ in range(2)]),
                               channel_last(8), [(2, 4, 4, 8)], fullgraph_training=False),
    # 0.6.1's attention over a sequence: the axial lengths are flattened into one (16 tokens; 0 when one is 0).
    "SelfAttention": Case(lambda: SelfAttention(8, 2), lambda batch, size: torch.randn(batch, size[0] * size[1], 8),
                          [(2, 16, 8)]),
    "SelfAttention(kv)": Case(lambda: SelfAttention(8, 2, dim_heads=3),
                              lambda batch, size: torch.randn(batch, size[0] * size[1], 8), [(2, 16, 8)],
                              lambda m, x: m(x, kv=x.flip(1)[:, : x.shape[1] // 2 + 1])),
    "AxialImageTransformer": Case(lambda: AxialImageTransformer(8, 2, heads=2, axial_pos_emb_shape=SIZE),
                                  channels_first(8), [(2, 8, 4, 4)], zero_length_axis=NAMES_THE_AXIS,
                                  fullgraph_training=False),
    "AxialImageTransformer(reversible=False, causal)": Case(
        lambda: AxialImageTransformer(8, 1, heads=2, reversible=False, causal=True), channels_first(8),
        [(2, 8, 4, 4)], zero_length_axis=NAMES_THE_AXIS),
    "PositionSensitiveAxialAttention": Case(lambda: PositionSensitiveAxialAttention(8, heads=2, span=4),
                                            channels_first(8), [(2, 8, 4, 4), (2, 2, 4, 4, 4)],
                                            dict(need_weights=True), NAMES_THE_AXIS),
    "PositionSensitiveAxialAttention(local, stride)": Case(
        lambda: PositionSensitiveAxialAttention(8, 4, heads=2, span=2, axis="width", local=True, stride=2),
        channels_first(8), [(2, 4, 2, 2), (2, 2, 4, 4, 4)], dict(need_weights=True), NAMES_THE_AXIS),
    "AxialBlock": Case(lambda: AxialBlock(8, 4, heads=2, span=4), channels_first(8), [(2, 8, 4, 4)],
                       zero_length_axis=NAMES_THE_AXIS),
    # zero_init_residual=False: with it, every block starts as the identity and its branch gets no gradient.
    # 8 x 8: the last stage then attends over 2 x 2 (at 1 x 1 its queries and keys could not matter).
    "AxialResNet": Case(lambda: AxialResNet((1, 1, 1, 1), 0.0625, 3, heads=2, image_size=8, stem="small",
                                            zero_init_residual=False),
                        channels_first(3), [(2, 3)], zero_length_axis=NAMES_THE_AXIS, size=(8, 8),
                        compile_training=False),  # its blocks are the AxialBlock case; a minute to compile whole
    # Integer images of a fixed image_shape: logits and log-likelihoods; other sizes are refused by shape.
    "AutoregressiveAxialTransformer": Case(
        lambda: AutoregressiveAxialTransformer((1, *SIZE), 4, dim=8, heads=2, depth=1),
        lambda batch, size: torch.randint(0, 4, (batch, 1, *size)), [(2, 4, 1, 4, 4), (2,)],
        lambda m, x: (m(x), m.log_prob(x)),
        r"must have shape \(batch, channels, height, width\) = \(batch, 1, 4, 4\)",
        fullgraph=False),  # checking the input's values in [0, num_levels) reads them on the host
    "AutoregressiveAxialTransformer(video, classes, past_window)": Case(
        lambda: AutoregressiveAxialTransformer((2, 3, *SIZE), 3, dim=8, heads=2, depth=1, num_classes=2,
                                               past_window=3, past_slices=2),
        lambda batch, size: torch.randint(0, 3, (batch, 2, 3, *size)), [(2, 3, 2, 3, 4, 4), (2,)],
        lambda m, x: (m(x, torch.arange(len(x)) % 2), m.log_prob(x, torch.arange(len(x)) % 2)),
        r"must have shape \(batch, channels, frames, height, width\) = \(batch, 2, 3, 4, 4\)", fullgraph=False,
        compile_training=False),  # the image case compiles the same blocks in training
}


def _flatten(result) -> list[torch.Tensor]:
    items = list(result) if isinstance(result, (tuple, list)) else [result]
    return [t for item in items for t in (_flatten(item) if isinstance(item, (tuple, list)) else [item])]


def run(case: Case, module: Callable, x: torch.Tensor) -> list[torch.Tensor]:
    call = case.call
    result = module(x) if call is None else module(x, **call) if isinstance(call, dict) else call(module, x)
    return _flatten(result)


def build(name: str, seed: int = 0) -> tuple[Case, nn.Module]:
    torch.manual_seed(seed)
    case = CASES[name]
    return case, case.factory()


def make(case: Case, batch: int = 2, size: Optional[tuple[int, int]] = None, requires_grad: bool = False):
    x = case.make_input(batch, case.size if size is None else size)
    return x.requires_grad_(requires_grad and x.is_floating_point())


def loss_of(outputs: list[torch.Tensor]) -> torch.Tensor:
    """A fixed random projection of every output: unlike a plain sum it has no symmetry that could zero a
    gradient (a softmax's weights sum to one; a sum after a norm ignores the norm's shift)."""
    g = torch.Generator().manual_seed(1)
    return sum((t.float() * torch.randn(t.shape, generator=g)).sum() for t in outputs)


def test_every_public_module_has_a_case():
    exported = {name: getattr(axial_attention, name) for name in axial_attention.__all__}
    public = {name for name, value in exported.items() if isinstance(value, type) and issubclass(value, nn.Module)}
    listed = {name.split("(")[0] for name in CASES}
    assert public, "no public modules found"
    assert public <= listed, f"public modules missing from CASES: {sorted(public - listed)}"
    for name, case in CASES.items():  # and each case builds the class it is named after
        assert type(case.factory()).__name__ == name.split("(")[0], name


@pytest.mark.parametrize("name", CASES)
def test_documented_shapes_and_finite_outputs(name):
    case, module = build(name)
    for mode in (True, False):
        outputs = run(case, module.train(mode), make(case))
        assert [tuple(t.shape) for t in outputs] == case.shapes, f"training={mode}"
        assert all(torch.isfinite(t.float()).all() for t in outputs), f"training={mode}"


@pytest.mark.parametrize("name", CASES)
def test_every_parameter_gets_a_gradient_from_a_plain_input(name):
    """A plain input (no requires_grad, as a data loader gives): the parameters alone need gradients."""
    case, module = build(name)
    loss_of(run(case, module, make(case))).backward()
    for param_name, p in module.named_parameters():
        assert p.grad is not None, f"{param_name} got no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{param_name}: {p.grad}"


@pytest.mark.parametrize("name", CASES)
def test_state_dict_round_trip_gives_identical_outputs(name):
    case, trained = build(name, seed=0)
    with torch.no_grad():
        run(case, trained.train(), make(case))  # moves batch-norm statistics, so buffers travel too
    case, fresh = build(name, seed=1)
    x = make(case)
    trained.eval(), fresh.eval()
    with torch.no_grad():
        before = run(case, fresh, x)
        assert not all(torch.equal(a, b) for a, b in zip(before, run(case, trained, x))), "seeds built equal modules"
        fresh.load_state_dict(trained.state_dict())
        for got, want in zip(run(case, fresh, x), run(case, trained, x)):
            assert torch.equal(got, want)


@pytest.mark.slow
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("name", CASES)
def test_torch_compile_equals_eager(name, training):
    """The whole call compiled (for the autoregressive model, log_prob as well as forward); in training
    mode the parameters' gradients too (batch statistics, the reversible backward)."""
    case, eager = build(name)
    if training and not case.compile_training:
        pytest.skip("another case compiles this module's training path")
    compiled_copy = copy.deepcopy(eager)
    eager.train(training), compiled_copy.train(training)
    fullgraph = case.fullgraph if not training or case.fullgraph_training is None else case.fullgraph_training
    torch._dynamo.reset()  # each case compiles from scratch, so one case's guards cannot hide another's
    compiled = torch.compile(lambda x: run(case, compiled_copy, x), fullgraph=fullgraph)
    x = make(case)
    with torch.set_grad_enabled(training):
        got, want = compiled(x), run(case, eager, x)
    assert len(got) == len(want) == len(case.shapes)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    if training:
        loss_of(got).backward()
        loss_of(want).backward()
        for (param_name, p), q in zip(compiled_copy.named_parameters(), eager.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=param_name)


@pytest.mark.parametrize("name", CASES)
def test_bf16_autocast_stays_finite_in_forward_and_backward(name):
    case, module = build(name)
    x = make(case, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = run(case, module, x)
    assert all(torch.isfinite(t.float()).all() for t in outputs)
    loss_of(outputs).backward()
    grads = [p.grad for p in module.parameters()] + ([x.grad] if x.requires_grad else [])
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", CASES)
def test_empty_batch_gives_the_empty_result(name):
    """Batch 0 (an empty last shard): the empty result of the right shape, zero gradients, statistics untouched."""
    case, module = build(name)  # training mode: batch norms would use (and update) batch statistics
    buffers = {k: v.clone() for k, v in module.named_buffers() if not k.endswith("num_batches_tracked")}
    x = make(case, batch=0, requires_grad=True)
    outputs = run(case, module, x)
    assert [tuple(t.shape) for t in outputs] == [(0, *shape[1:]) for shape in case.shapes]
    loss_of(outputs).backward()
    assert x.grad is None if not x.is_floating_point() else x.grad.shape == x.shape
    for param_name, p in module.named_parameters():
        assert p.grad is not None and not p.grad.any(), param_name
    for buffer_name, value in module.named_buffers():
        if buffer_name in buffers:
            torch.testing.assert_close(value, buffers[buffer_name], msg=f"{buffer_name} moved on an empty batch")


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("name", CASES)
def test_zero_length_axis_runs_or_names_the_axis(name, axis):
    case, module = build(name)
    size = list(case.size)
    size[axis] = 0
    x = make(case, size=tuple(size), requires_grad=True)
    if case.zero_length_axis != "runs":
        with pytest.raises(ValueError, match=case.zero_length_axis):
            run(case, module, x)
        return
    outputs = run(case, module, x)
    assert outputs[0].shape == x.shape and all(t.numel() == 0 for t in outputs)
    loss_of(outputs).backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("name", CASES)
def test_repr_shows_the_configuration(name):
    """Every public module has its own extra_repr, which error messages use to name it (validation.describe)."""
    _, module = build(name)
    assert type(module).extra_repr is not nn.Module.extra_repr, f"{type(module).__name__} has no extra_repr"
    assert "=" in module.extra_repr() or "," in module.extra_repr(), module.extra_repr()
