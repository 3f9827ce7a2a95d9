"""AxialResNet's timm model contract, without timm: feature_info against the maps it describes, forward_intermediates
against a walk over the modules by hand, timm's index rules, the head (forward_head, reset_classifier, pooling)."""
from __future__ import annotations

import copy
import enum

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from axial_attention import AxialResNet, axial_resnet26s


def tiny(num_classes: int = 5, **kwargs) -> AxialResNet:
    """The smallest Axial-ResNet: one block a stage, 1/16 width (stage maps 16, 32, 64, 128 channels)."""
    kwargs.setdefault("zero_init_residual", False)  # blocks that are not the identity
    return AxialResNet((1, 1, 1, 1), 0.0625, num_classes, heads=2, image_size=64, **kwargs).eval()


def by_hand(model: AxialResNet, x: torch.Tensor) -> list[torch.Tensor]:
    """The five features walked through the modules: the stem's convolution, norm and ReLU, its max pool, then
    each stage's blocks one by one."""
    conv, norm = model.stem[0], model.stem[1]
    features = [F.relu(norm(conv(x)))]
    x = F.max_pool2d(features[0], 3, stride=2, padding=1) if model.stem_kind == "imagenet" else features[0]
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in stage:
            x = block(x)
        features.append(x)
    return features


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return tiny()


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_axial_resnet26s_has_features_at_strides_4_to_32_as_feature_info_says():
    model = axial_resnet26s(num_classes=3).eval()
    info = model.feature_info
    assert [f["reduction"] for f in info] == [2, 4, 8, 16, 32]
    assert [f["num_chs"] for f in info] == [32, 128, 256, 512, 1024]  # width x0.5: 64 / 2, then 2 * planes
    assert [f["module"] for f in info] == ["stem.2", "layer1.0", "layer2.1", "layer3.3", "layer4.0"]
    modules = dict(model.named_modules())
    assert all(f["module"] in modules for f in info)
    with torch.no_grad():
        features = model.forward_intermediates(torch.randn(1, 3, 64, 96), intermediates_only=True)
    for feature, f in zip(features, info):
        assert feature.shape == (1, f["num_chs"], 64 // f["reduction"], 96 // f["reduction"])
    assert model.num_features == info[-1]["num_chs"] == model.fc.in_features


def test_the_small_stem_keeps_full_resolution_until_the_second_stage():
    model = AxialResNet((1, 1, 1, 1), 0.0625, 3, heads=2, image_size=16, stem="small").eval()
    assert [f["reduction"] for f in model.feature_info] == [1, 1, 2, 4, 8]
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        features = model.forward_intermediates(x, intermediates_only=True)
        expected = by_hand(model, x)
    assert [tuple(t.shape[1:]) for t in features] == [(f["num_chs"], 16 // f["reduction"], 16 // f["reduction"])
                                                       for f in model.feature_info]
    torch.testing.assert_close(features, expected, rtol=0, atol=0)


@torch.no_grad()
def test_forward_intermediates_are_the_features_walked_by_hand(model, x):
    expected = by_hand(model, x)
    final, features = model.forward_intermediates(x)
    assert len(features) == 5
    for got, want in zip(features, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0)


@pytest.mark.parametrize("indices, taken", [
    (None, [0, 1, 2, 3, 4]), (2, [3, 4]), (5, [0, 1, 2, 3, 4]), ([1, 2, 3, 4], [1, 2, 3, 4]), ((0, 3), [0, 3]),
    ([-1], [4]), ([-4, -1], [1, 4]), ([4, 1], [4, 1]),
])
@torch.no_grad()
def test_indices_as_timm_reads_them(model, x, indices, taken):
    expected = by_hand(model, x)
    features = model.forward_intermediates(x, indices=indices, intermediates_only=True)
    assert isinstance(features, list) and len(features) == len(taken)
    for got, i in zip(features, taken):
        torch.testing.assert_close(got, expected[i], rtol=0, atol=0)


@pytest.mark.parametrize("indices", [0, 6, -1, [5], [-6], []])
def test_indices_out_of_range_are_a_value_error_naming_indices(model, x, indices):
    with pytest.raises(ValueError, match="indices"):
        model.forward_intermediates(x, indices=indices)


@pytest.mark.parametrize("indices", [True, "1", [1.0], 2.5])
def test_indices_of_another_type_are_a_type_error(model, x, indices):
    with pytest.raises(TypeError, match="indices"):
        model.forward_intermediates(x, indices=indices)


@torch.no_grad()
def test_stop_early_runs_no_stage_past_the_last_feature_asked_for(x):
    model = tiny()
    calls = {name: 0 for name in ("layer1", "layer2", "layer3", "layer4")}
    for name in calls:
        getattr(model, name).register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    expected = by_hand(model, x)
    calls.update(dict.fromkeys(calls, 0))
    final, features = model.forward_intermediates(x, indices=[0, 2], stop_early=True)
    assert calls == {"layer1": 1, "layer2": 1, "layer3": 0, "layer4": 0}
    torch.testing.assert_close(final, expected[2], rtol=0, atol=0)  # the last map computed
    torch.testing.assert_close(features, [expected[0], expected[2]], rtol=0, atol=0)
    model.forward_intermediates(x, indices=[0, 2])  # without stop_early every stage runs
    assert calls == {"layer1": 2, "layer2": 2, "layer3": 1, "layer4": 1}


@torch.no_grad()
def test_norm_is_accepted_and_changes_nothing_as_the_network_has_no_final_norm(model, x):
    plain = model.forward_intermediates(x, intermediates_only=True)
    normed = model.forward_intermediates(x, norm=True, intermediates_only=True)
    torch.testing.assert_close(normed, plain, rtol=0, atol=0)


class Format(str, enum.Enum):  # as timm's timm.layers.Format, which its FeatureGetterNet passes
    NCHW = "NCHW"
    NHWC = "NHWC"


@torch.no_grad()
def test_output_fmt_nchw_as_a_string_or_timm_style_enum(model, x):
    a = model.forward_intermediates(x, indices=1, output_fmt="NCHW", intermediates_only=True)
    b = model.forward_intermediates(x, indices=1, output_fmt=Format.NCHW, intermediates_only=True)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("kwargs, error, word", [
    (dict(output_fmt="NHWC"), ValueError, "output_fmt"), (dict(output_fmt=Format.NHWC), ValueError, "output_fmt"),
    (dict(norm=1), TypeError, "norm"), (dict(stop_early="yes"), TypeError, "stop_early"),
    (dict(intermediates_only=None), TypeError, "intermediates_only"),
])
def test_bad_forward_intermediates_arguments_name_the_argument(model, x, kwargs, error, word):
    with pytest.raises(error, match=word):
        model.forward_intermediates(x, **kwargs)


def test_forward_intermediates_checks_its_input(model):
    with pytest.raises(ValueError, match="expects 3"):
        model.forward_intermediates(torch.randn(1, 4, 32, 32))


@torch.no_grad()
def test_forward_is_forward_head_of_forward_features_and_pre_logits_are_the_pooled_map(model, x):
    maps = model.forward_features(x)
    torch.testing.assert_close(model(x), model.forward_head(maps), rtol=0, atol=0)
    pooled = model.forward_head(maps, pre_logits=True)
    assert pooled.shape == (2, model.num_features)
    torch.testing.assert_close(pooled, maps.mean((2, 3)))
    torch.testing.assert_close(model(x), pooled @ model.fc.weight.T + model.fc.bias)


@torch.no_grad()
def test_reset_classifier_to_none_and_to_a_fresh_head(x):
    model = tiny(5)
    old = model.fc.weight.clone()
    pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    assert model.get_classifier() is model.fc and model.get_classifier(name_only=True) == "fc"

    model.reset_classifier(0)
    assert model.num_classes == 0 and isinstance(model.fc, nn.Identity) and isinstance(model.get_classifier(),
                                                                                      nn.Identity)
    torch.testing.assert_close(model(x), pooled, rtol=0, atol=0)  # the features, num_features wide

    model.reset_classifier(7)
    assert model.num_classes == 7 and isinstance(model.fc, nn.Linear)
    assert model.fc.weight.shape == (7, model.num_features)
    assert model(x).shape == (2, 7)
    model.reset_classifier(5)  # a fresh head, not the one it had
    assert model.fc.weight.shape == old.shape and not torch.equal(model.fc.weight, old)


@torch.no_grad()
def test_global_pool_types(x):
    model = tiny(0)
    maps = model.forward_features(x)
    mean, peak = maps.mean((2, 3)), maps.amax((2, 3))
    expected = {"avg": mean, "max": peak, "avgmax": (mean + peak) / 2, "catavgmax": torch.cat((mean, peak), 1),
                "": maps}
    for pool, want in expected.items():
        model.reset_classifier(0, pool)
        torch.testing.assert_close(model(x), want)
    model.reset_classifier(4, "catavgmax")
    assert model.fc.in_features == 2 * model.num_features and model(x).shape == (2, 4)
    model.reset_classifier(3)  # None keeps the pool
    assert model.global_pool.pool_type == "catavgmax"
    built = tiny(3, global_pool="max")
    torch.testing.assert_close(built.forward_head(maps, pre_logits=True), maps.amax((2, 3)))


def test_drop_rate_drops_pooled_features_in_training_only(x):
    model = tiny(3, drop_rate=0.5)
    maps = model.forward_features(x).detach()
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(maps, pre_logits=True), maps.mean((2, 3)))
        model.train()
        dropped = model.forward_head(maps, pre_logits=True)
    kept = dropped != 0
    assert 0 < kept.float().mean() < 1
    torch.testing.assert_close(dropped[kept], 2 * maps.mean((2, 3))[kept])


@pytest.mark.parametrize("call, error, word", [
    (lambda m: m.reset_classifier(-1), ValueError, "num_classes"),
    (lambda m: m.reset_classifier(2.0), TypeError, "num_classes"),
    (lambda m: m.reset_classifier(3, "mean"), ValueError, "global_pool"),
    (lambda m: m.reset_classifier(3, ""), ValueError, "global_pool"),  # no pooling: no classifier
    (lambda m: m.reset_classifier(3, 1), TypeError, "global_pool"),
    (lambda m: m.get_classifier(name_only="fc"), TypeError, "name_only"),
    (lambda m: m.prune_intermediate_layers(7), ValueError, "indices"),
    (lambda m: m.prune_intermediate_layers(1, prune_head="no"), TypeError, "prune_head"),
    (lambda m: tiny(3, global_pool="fast"), ValueError, "global_pool"),
    (lambda m: tiny(3, drop_rate=1.5), ValueError, "drop_rate"),
    (lambda m: tiny(-2), ValueError, "num_classes"),
])
def test_bad_head_arguments_name_the_argument(call, error, word):
    with pytest.raises(error, match=word):
        call(tiny())


@torch.no_grad()
def test_prune_intermediate_layers_keeps_what_the_features_need(x):
    model = tiny()
    expected = model.forward_intermediates(x, indices=[1, 2], intermediates_only=True)
    assert model.prune_intermediate_layers((1, -3)) == [1, 2]
    assert isinstance(model.layer3, nn.Identity) and isinstance(model.layer4, nn.Identity)
    assert isinstance(model.fc, nn.Identity) and model.num_classes == 0
    assert not any(key.startswith(("layer3.", "layer4.", "fc.")) for key in model.state_dict())
    torch.testing.assert_close(model.forward_intermediates(x, indices=[1, 2], intermediates_only=True), expected)


# -- timm's training switches: gradient checkpointing, parameter groups ------------------------------
def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd keeps for backward while fn runs (saved_tensors_hooks sees each)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total


def test_grad_checkpointing_keeps_outputs_gradients_and_batch_norm_statistics_and_saves_less(x):
    """In training, with every batch norm updating its statistics: the checkpointed model gives the plain one's
    logits, parameter gradients and running statistics after a step (each updated once: the recomputation in
    backward would update them again), while keeping less for backward."""
    torch.manual_seed(0)
    plain = tiny().train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.set_grad_checkpointing()
    assert checkpointed.grad_checkpointing and not plain.grad_checkpointing
    results = []
    for model in (plain, checkpointed):
        logits, kept = saved_bytes(lambda: model(x))
        logits.square().sum().backward()
        results.append((logits, kept))
    (want, kept_plain), (got, kept_checkpointed) = results
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    for (name, p), q in zip(checkpointed.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)
    for (name, b), c in zip(checkpointed.named_buffers(), plain.buffers()):
        torch.testing.assert_close(b, c, rtol=1e-6, atol=1e-6, msg=name)
    assert kept_checkpointed < 0.5 * kept_plain
    checkpointed.set_grad_checkpointing(False)
    assert saved_bytes(lambda: checkpointed(x))[1] == kept_plain
    with pytest.raises(TypeError, match="enable"):
        checkpointed.set_grad_checkpointing("yes")


def test_grad_checkpointing_also_runs_forward_intermediates_and_does_nothing_without_grad(model, x):
    checkpointed = copy.deepcopy(model)
    checkpointed.set_grad_checkpointing()
    with torch.no_grad():
        torch.testing.assert_close(checkpointed.forward_intermediates(x, intermediates_only=True),
                                   model.forward_intermediates(x, intermediates_only=True))
    x = x.clone().requires_grad_()
    features = checkpointed.forward_intermediates(x, intermediates_only=True)
    grad = torch.autograd.grad(sum(f.sum() for f in features), x)[0]
    want = torch.autograd.grad(sum(f.sum() for f in model.forward_intermediates(x, intermediates_only=True)), x)[0]
    torch.testing.assert_close(grad, want, rtol=1e-5, atol=1e-6)
    checkpointed.prune_intermediate_layers([1, 2])  # the pruned stages are Identities, run as they are
    features = checkpointed.forward_intermediates(x, indices=[1, 2], intermediates_only=True)
    assert [f.shape[1] for f in features] == [16, 32] and features[-1].requires_grad


@pytest.mark.parametrize("coarse", [False, True])
def test_group_matcher_groups_every_parameter_stem_first_blocks_in_order_head_last(coarse):
    """timm's layer-decay groups, read as timm reads them (first regex that matches; the group id is the
    stem's or the captured numbers; no match: the last group)."""
    import re

    model = AxialResNet((2, 1, 2, 1), 0.0625, 5, heads=2, image_size=32)
    matcher = model.group_matcher(coarse=coarse)
    assert list(matcher) == ["stem", "blocks"]
    order = []
    for name, _ in model.named_parameters():
        if re.match(matcher["stem"], name):
            group = (0,)
        elif match := re.match(matcher["blocks"], name):
            group = tuple(int(g) for g in match.groups())
        else:
            group = (float("inf"),)
            assert name.startswith("fc."), name
        order.append(group)
    assert order == sorted(order)  # parameters come stem, blocks in order, head
    blocks = {g for g in order if g not in ((0,), (float("inf"),))}
    assert blocks == ({(1,), (2,), (3,), (4,)} if coarse else {(1, 0), (1, 1), (2, 0), (3, 0), (3, 1), (4, 0)})
    with pytest.raises(TypeError, match="coarse"):
        model.group_matcher(coarse=1)
