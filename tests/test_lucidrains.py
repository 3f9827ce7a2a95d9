"""Code, state dicts and whole pickled models written against lucidrains' axial-attention 0.6.1 work here,
checked against the real 0.6.1 (the `peer` fixture; offline these tests skip and say why)."""
from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

import axial_attention
import lucidrains_project
from axial_attention import AxialAttention, AxialImageTransformer, AxialPositionalEmbedding, ReversibleSequence
from axial_attention.axial_attention import PermuteToFrom, SelfAttention, calculate_permutations, sort_and_return_indices
from axial_attention.compat import LucidrainsConversionWarning
from benchmarks.peer import PEER_DIR
from lucidrains_pickles import MODELS

PEER_MODULES = ("axial_attention", "axial_attention.axial_attention", "axial_attention.reversible")


def _signature_gaps(where: str, theirs, ours) -> list[str]:
    """What a call written for `theirs` could pass that `ours` does not take the same way."""
    try:
        want, have = inspect.signature(theirs), inspect.signature(ours)
    except (TypeError, ValueError):
        return []
    gaps = []
    positional = [p.name for p in have.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    kinds = {p.kind for p in have.parameters.values()}
    for i, p in enumerate(want.parameters.values()):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            if p.kind not in kinds:
                gaps.append(f"{where}: *{p.name}" if p.kind == p.VAR_POSITIONAL else f"{where}: **{p.name}")
            continue
        q = have.parameters.get(p.name)
        if q is None:
            gaps.append(f"{where}: argument {p.name!r} missing")
        elif p.kind == p.POSITIONAL_OR_KEYWORD and (i >= len(positional) or positional[i] != p.name):
            gaps.append(f"{where}: argument {p.name!r} is not at position {i}")
        elif p.default is not p.empty and not (q.default is not q.empty and q.default == p.default):
            gaps.append(f"{where}: argument {p.name!r} defaults to {q.default!r}, 0.6.1 to {p.default!r}")
    for q in have.parameters.values():  # ours may add arguments, but a 0.6.1 call must not have to pass them
        if q.name not in want.parameters and q.default is q.empty and q.kind not in (q.VAR_POSITIONAL, q.VAR_KEYWORD):
            gaps.append(f"{where}: argument {q.name!r} is required here, 0.6.1 has none")
    return gaps


def surface_gaps(peer) -> tuple[int, list[str]]:
    """Every public name of every 0.6.1 module (its own classes and functions with their arguments, its
    submodules and the names it imports) against this package. Returns (names checked, what is missing)."""
    checked, gaps = 0, []
    for module_name in PEER_MODULES:
        theirs, ours = peer.__peer_modules__[module_name], importlib.import_module(module_name)
        for name in sorted(n for n in dir(theirs) if not n.startswith("_")):
            checked += 1
            obj, where = getattr(theirs, name), f"{module_name}.{name}"
            if not hasattr(ours, name):
                gaps.append(f"{where} missing")
                continue
            mine = getattr(ours, name)
            if isinstance(obj, ModuleType):
                own = obj.__name__.split(".")[0] == "axial_attention"
                if not isinstance(mine, ModuleType) or (mine.__name__ if own else mine) != (obj.__name__ if own else obj):
                    gaps.append(f"{where} is {mine!r}, 0.6.1 has the module {obj.__name__}")
            elif getattr(obj, "__module__", "").split(".")[0] != "axial_attention":
                if mine is not obj:  # torch, nn, itemgetter, Function ...: the same objects
                    gaps.append(f"{where} is {mine!r}, 0.6.1 has {obj!r}")
            elif inspect.isclass(obj):
                if not (inspect.isclass(mine) and issubclass(mine, nn.Module) == issubclass(obj, nn.Module)):
                    gaps.append(f"{where} is {mine!r}, 0.6.1 has a class")
                    continue
                methods = [m for m, v in vars(obj).items() if callable(v) and (m == "__init__" or not m.startswith("_"))]
                for method in methods:
                    checked += 1
                    if not callable(getattr(mine, method, None)):
                        gaps.append(f"{where}.{method} missing")
                    else:
                        gaps += _signature_gaps(f"{where}.{method}", getattr(obj, method), getattr(mine, method))
            elif callable(obj):
                gaps += _signature_gaps(where, obj, mine)
    return checked, gaps


def test_every_public_name_and_argument_of_0_6_1_exists_here(peer):
    checked, gaps = surface_gaps(peer)
    assert checked >= 67, checked  # 0.6.1: 31 public names in 3 modules, 36 constructors and public methods
    assert not gaps, "\n".join(gaps)


def test_the_surface_check_finds_what_is_missing(peer, monkeypatch):
    """The check above can fail: remove a name, an argument, change a default."""
    from axial_attention.compat import lucidrains_axial_attention  # served as axial_attention.axial_attention

    monkeypatch.setattr(lucidrains_axial_attention, "sort_and_return_indices", lambda array: array)

    def forward(self, x, kv=None, extra=None):  # noqa: ARG001
        return x

    def init(self, dim, heads=4, dim_heads=None):  # noqa: ARG001
        nn.Module.__init__(self)

    monkeypatch.setattr(SelfAttention, "__init__", init)
    monkeypatch.setattr(AxialAttention, "forward", lambda self, inputs: inputs)
    monkeypatch.delattr(lucidrains_axial_attention, "PreNorm")
    _, gaps = surface_gaps(peer)
    assert sorted(gaps) == sorted([
        "axial_attention.axial_attention.sort_and_return_indices: argument 'arr' missing",
        "axial_attention.axial_attention.sort_and_return_indices: argument 'array' is required here, 0.6.1 has none",
        "axial_attention.axial_attention.AxialAttention.forward: argument 'x' missing",
        "axial_attention.axial_attention.AxialAttention.forward: argument 'inputs' is required here, 0.6.1 has none",
        "axial_attention.AxialAttention.forward: argument 'x' missing",
        "axial_attention.AxialAttention.forward: argument 'inputs' is required here, 0.6.1 has none",
        "axial_attention.axial_attention.PreNorm missing",
    ]), gaps  # SelfAttention(heads=4): a default 0.6.1 lacks is allowed; extra=None too


INSTANCES = {  # 0.6.1's public classes, built the same way on both sides, for their instance attributes
    "AxialAttention": lambda m: m.AxialAttention(8, heads=2, dim_index=1),
    "AxialPositionalEmbedding": lambda m: m.AxialPositionalEmbedding(8, (3, 4)),
    "AxialImageTransformer": lambda m: m.AxialImageTransformer(8, 1, heads=2, axial_pos_emb_shape=(3, 4)),
    "SelfAttention": lambda m: m.SelfAttention(8, 2),
    "PermuteToFrom": lambda m: m.PermuteToFrom([0, 2, 3, 1], nn.Identity()),
    "ChanLayerNorm": lambda m: m.ChanLayerNorm(8),
    "PreNorm": lambda m: m.PreNorm(8, nn.Identity()),
    "Sequential": lambda m: m.Sequential([]),
    "ReversibleSequence": lambda m: m.ReversibleSequence([(nn.Identity(), nn.Identity())]),
    "Deterministic": lambda m: m.Deterministic(nn.Identity()),
    "ReversibleBlock": lambda m: m.ReversibleBlock(nn.Identity(), nn.Identity()),
    "IrreversibleBlock": lambda m: m.IrreversibleBlock(nn.Identity(), nn.Identity()),
}


@pytest.mark.parametrize("name", INSTANCES)
def test_instances_have_0_6_1s_attributes(peer, name):
    """What 0.6.1 code reads off its modules (attn.total_dimensions, pos.num_axials, ...) is here, equal
    where it is a plain value."""
    where = "reversible" if name in ("ReversibleSequence", "Deterministic", "ReversibleBlock", "IrreversibleBlock") \
        else "axial_attention"
    theirs = INSTANCES[name](peer.__peer_modules__[f"axial_attention.{where}"])
    ours = INSTANCES[name](importlib.import_module(f"axial_attention.{where}"))
    assert type(ours).__module__.startswith("axial_attention")
    for attr, value in vars(theirs).items():
        if attr.startswith("_") and attr not in ("_parameters", "_modules"):
            continue
        names = value if attr in ("_parameters", "_modules") else {attr: value}
        for key, value in names.items():
            assert hasattr(ours, key), f"{name}.{key}"
            if isinstance(value, (bool, int, float, str, type(None))):
                assert getattr(ours, key) == value, f"{name}.{key}"


@pytest.mark.parametrize("num_dimensions", [1, 2, 3, 4])
def test_permutation_helpers_equal_0_6_1(peer, num_dimensions):
    theirs = peer.__peer_modules__["axial_attention.axial_attention"]
    total = num_dimensions + 2
    for emb_dim in [*range(1, total), *range(-total + 1, 0)]:
        want = theirs.calculate_permutations(num_dimensions, emb_dim)
        assert calculate_permutations(num_dimensions, emb_dim) == want
        for permutation in want:
            assert sort_and_return_indices(permutation) == theirs.sort_and_return_indices(permutation)


def test_permutation_helpers_refuse_the_batch_axis():
    with pytest.raises(ValueError, match="emb_dim must index a non-batch axis"):
        calculate_permutations(2, 0)


@pytest.mark.parametrize("heads, dim_heads, kv_length", [(2, None, None), (3, 5, None), (4, None, 7), (1, 6, 1)])
def test_self_attention_equals_0_6_1(peer, heads, dim_heads, kv_length):
    torch.manual_seed(0)
    theirs = peer.SelfAttention(12, heads, dim_heads)
    ours = SelfAttention(12, heads, dim_heads)
    ours.load_state_dict(theirs.state_dict())  # 0.6.1's own keys
    x = torch.randn(3, 9, 12, requires_grad=True)
    kv = None if kv_length is None else torch.randn(3, kv_length, 12, requires_grad=True)
    inputs = [t for t in (x, kv) if t is not None]
    got, want = ours(x, kv=kv), theirs(x, kv=kv)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(got)
    for a, b in zip(torch.autograd.grad(got, inputs, g), torch.autograd.grad(want, inputs, g)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_self_attention_runs_on_the_primitive(monkeypatch):
    calls = []
    import axial_attention.compat.lucidrains_axial_attention as lucidrains

    original = lucidrains.attend_along_axis
    monkeypatch.setattr(lucidrains, "attend_along_axis", lambda *a, **k: calls.append(1) or original(*a, **k))
    SelfAttention(8, 2)(torch.randn(1, 3, 8))
    assert calls == [1]


def test_self_attention_names_bad_input():
    attn = SelfAttention(8, 2)
    with pytest.raises(ValueError, match=r"x has 4 dims; SelfAttention\(dim=8, heads=2, dim_heads=4\) expects 3"):
        attn(torch.randn(1, 2, 3, 8))
    with pytest.raises(ValueError, match="kv has size 6 on its embedding axis"):
        attn(torch.randn(1, 3, 8), kv=torch.randn(1, 3, 6))
    with pytest.raises(ValueError, match="kv has batch 2 but x has 1"):
        attn(torch.randn(1, 3, 8), kv=torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match="dim_heads must be >= 1"):
        SelfAttention(2, 4)


@pytest.mark.parametrize("num_dimensions, emb_dim", [(2, 1), (2, -1), (3, 2)])
def test_permute_to_from_equals_0_6_1(peer, num_dimensions, emb_dim):
    torch.manual_seed(0)
    shape = [2, 3, 4, 5, 6][: num_dimensions + 2]
    shape[emb_dim] = 8
    x = torch.randn(shape)
    for permutation in calculate_permutations(num_dimensions, emb_dim):
        theirs = peer.__peer_modules__["axial_attention.axial_attention"].PermuteToFrom(
            permutation, peer.SelfAttention(8, 2))
        ours = PermuteToFrom(permutation, SelfAttention(8, 2))
        ours.load_state_dict(theirs.state_dict())
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)


class Scaled(nn.Module):
    """f or g of a reversible block that takes a keyword argument."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, 8)

    def forward(self, x, scale=None):
        y = torch.tanh(self.linear(x))
        return y if scale is None else y * scale


@pytest.mark.parametrize("arg_route", [(True, True), (True, False), (False, True), (False, False)])
def test_reversible_sequence_arg_route_equals_0_6_1(peer, arg_route):
    torch.manual_seed(0)
    theirs = peer.__peer_modules__["axial_attention.reversible"].ReversibleSequence(
        [(Scaled(), Scaled()) for _ in range(3)])
    ours = ReversibleSequence([(Scaled(), Scaled()) for _ in range(3)])
    with pytest.warns(LucidrainsConversionWarning, match="saved by axial-attention 0.6.1"):
        ours.load_state_dict(theirs.state_dict())  # 0.6.1's Deterministic wrappers: blocks.i.f.net.*
    x = torch.randn(2, 5, 8)
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()  # 0.6.1 trains only then
    scale = torch.full((8,), 3.0)
    got, want = ours(x_ours, arg_route=arg_route, scale=scale), theirs(x_theirs, arg_route=arg_route, scale=scale)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(got)
    (got * g).sum().backward()
    (want * g).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=name)
    if arg_route != (True, True):  # the route matters: sending the scale everywhere changes the output
        assert not torch.allclose(got, ours(x, scale=scale))


def test_arg_route_must_be_two_bools():
    with pytest.raises(TypeError, match="arg_route must be a pair of bools"):
        ReversibleSequence([(nn.Identity(), nn.Identity())])(torch.randn(2, 3), arg_route=(True,))


# ---------------------------------------------------------------------------------------------------
# Whole models and state dicts saved by 0.6.1, in a subprocess that runs it from its own directory


@pytest.fixture(scope="module")
def saved_by_0_6_1(peer, tmp_path_factory):
    out = tmp_path_factory.mktemp("lucidrains_pickles")
    tests = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": str(PEER_DIR)}
    done = subprocess.run([sys.executable, str(tests / "lucidrains_pickles.py"), str(out)], cwd=out, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(PEER_DIR), f"0.6.1 was not the package used: {done.stdout}"
    return out


def _run(model, x):
    with torch.no_grad():
        return model(*x) if isinstance(x, tuple) else model(x)


@pytest.mark.parametrize("name", [*MODELS, "project"])
def test_whole_model_pickled_by_0_6_1_loads_into_working_modules(saved_by_0_6_1, name):
    data = torch.load(saved_by_0_6_1 / f"{name}.data.pt")
    with pytest.warns(LucidrainsConversionWarning, match="pickled by axial-attention 0.6.1"):
        model = torch.load(saved_by_0_6_1 / f"{name}.model.pt", weights_only=False)
    for module in model.modules():  # our classes, in their current form
        assert type(module).__module__.split(".")[0] in ("torch", "axial_attention", "lucidrains_project")
        if isinstance(module, (AxialAttention, AxialImageTransformer, AxialPositionalEmbedding, ReversibleSequence)):
            assert "=" in module.extra_repr() and not module.training
    torch.testing.assert_close(_run(model, data["x"]), data["y"], rtol=1e-5, atol=1e-5)
    # ... and they train: every parameter gets a finite gradient
    model.train()
    x = data["x"]
    out = model(*x) if isinstance(x, tuple) else model(x)
    out.square().mean().backward()
    for param_name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), param_name


@pytest.mark.parametrize("name", [n for n in MODELS if n != "reversible"])
def test_unconverted_state_dict_of_0_6_1_loads_with_a_warning(saved_by_0_6_1, name):
    data = torch.load(saved_by_0_6_1 / f"{name}.data.pt")
    torch.manual_seed(1)
    model = MODELS[name][0]().eval()  # the same constructor call, now building this package's modules
    converted = any(k != v for k, v in zip(data["state_dict"], axial_attention.convert_lucidrains_state_dict(
        data["state_dict"])))
    if converted:
        with pytest.warns(LucidrainsConversionWarning, match="convert_lucidrains_state_dict"):
            model.load_state_dict(data["state_dict"])
    else:  # AxialPositionalEmbedding: 0.6.1's keys are ours
        model.load_state_dict(data["state_dict"])
    torch.testing.assert_close(_run(model, data["x"]), data["y"], rtol=1e-5, atol=1e-5)


def test_project_model_file_matches_0_6_1_after_conversion(saved_by_0_6_1):
    """The project's own axial layer from calculate_permutations, PermuteToFrom and SelfAttention."""
    data = torch.load(saved_by_0_6_1 / "project.data.pt")
    model = lucidrains_project.AxialLayer(16).eval()
    model.load_state_dict(axial_attention.convert_lucidrains_state_dict(data["state_dict"]))
    torch.testing.assert_close(_run(model, lucidrains_project.inputs()), data["y"], rtol=1e-5, atol=1e-5)


def test_conversion_decides_by_module_for_a_project_with_its_own_axial_attentions_list(saved_by_0_6_1):
    """A 0.6.1 client's own blocks hold `axial_attentions` lists of PermuteToFrom(SelfAttention): their keys
    look like an AxialAttention's but belong to 0.6.1 classes this package keeps as they were, so only the
    real AxialAttention beside them is converted."""
    data = torch.load(saved_by_0_6_1 / "stack.data.pt")
    assert "axial_attns.0.axial_attentions.0.fn.to_q.weight" in data["state_dict"]
    assert "mixer.axial_attentions.0.fn.to_q.weight" in data["state_dict"]
    torch.manual_seed(1)
    model = lucidrains_project.AxialStack().eval()
    converted = axial_attention.convert_lucidrains_state_dict(data["state_dict"], model)
    assert "axial_attns.0.axial_attentions.0.fn.to_q.weight" in converted  # the project's own: unchanged
    assert "mixer.axial_attentions.0.to_q.weight" in converted  # the AxialAttention's: converted
    model.load_state_dict(converted)
    torch.testing.assert_close(_run(model, data["x"]), data["y"], rtol=1e-5, atol=1e-5)
    # loading the state dict as saved does the same through the AxialAttention's load hook
    torch.manual_seed(2)
    direct = lucidrains_project.AxialStack().eval()
    with pytest.warns(LucidrainsConversionWarning, match="AxialAttention at mixer"):
        direct.load_state_dict(data["state_dict"])
    torch.testing.assert_close(_run(direct, data["x"]), data["y"], rtol=1e-5, atol=1e-5)
    # and by name alone the project's keys are rewritten too, so loading fails: why `model` is there
    with pytest.raises(RuntimeError, match="Missing key"):
        lucidrains_project.AxialStack().load_state_dict(axial_attention.convert_lucidrains_state_dict(
            data["state_dict"]))


def test_conversion_with_the_model_passes_this_packages_own_state_dicts_unchanged():
    model = lucidrains_project.AxialStack()
    state = model.state_dict()
    assert axial_attention.convert_lucidrains_state_dict(state, model).keys() == state.keys()
    with pytest.raises(TypeError, match="model must be the nn.Module the state dict is for"):
        axial_attention.convert_lucidrains_state_dict(state, "AxialStack")


def test_a_state_dict_that_fits_neither_reaches_torchs_error():
    model = AxialAttention(8, heads=2)
    bad = {k.replace("to_q", "to_query"): v for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="Missing key"):
        model.load_state_dict(bad)


def test_own_state_dicts_load_without_a_warning(recwarn):
    model = AxialImageTransformer(8, 1, heads=2)
    AxialImageTransformer(8, 1, heads=2).load_state_dict(model.state_dict())
    assert not [w for w in recwarn if issubclass(w.category, LucidrainsConversionWarning)]
