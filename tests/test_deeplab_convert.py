"""convert_axial_deeplab_state_dict: official Axial-DeepLab layers, blocks and networks, run by the reference in
official_deeplab.py (the official forward from its state dict), against ours loaded with the converted weights."""
from __future__ import annotations

import pytest
import torch
from official_deeplab import attention_layer, block, calibrate, network, random_block, random_layer, random_network

from axial_attention import (
    AxialBlock,
    AxialResNet,
    PositionSensitiveAxialAttention,
    axial_resnet26s,
    axial_resnet50l,
    axial_resnet50m,
    axial_resnet50s,
    convert_axial_deeplab_state_dict,
)

CONSTRUCTORS = {  # official constructor: (blocks per stage, width, ours)
    "axial26s": ((1, 2, 4, 1), 0.5, axial_resnet26s),
    "axial50s": ((3, 4, 6, 3), 0.5, axial_resnet50s),
    "axial50m": ((3, 4, 6, 3), 0.75, axial_resnet50m),
    "axial50l": ((3, 4, 6, 3), 1.0, axial_resnet50l),
}


def crop_tables(state: dict, factor: float) -> dict:
    """The official network for maps `factor` times as large: each table keeps the offsets that exist there."""
    cropped = dict(state)
    for key, table in state.items():
        if key.endswith("relative"):
            old = (table.shape[1] + 1) // 2
            new = round(old * factor)
            cropped[key] = table[:, old - new : old + new - 1]
            del cropped[key.replace("relative", "flatten_index")]
    return cropped


def double(state: dict) -> dict:
    return {k: v.double() if v.is_floating_point() else v for k, v in state.items()}


LAYER_CASES = [  # (axis, stride, local, groups)
    ("height", 1, False, 2),
    ("width", 1, False, 4),
    ("height", 2, False, 2),
    ("width", 2, False, 2),
    ("width", 1, True, 2),  # a local layer whose span is the official kernel: the same up to that length
    ("height", 2, True, 4),
]


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("axis,stride,local,groups", LAYER_CASES)
def test_layer_matches_the_official_layer(axis, stride, local, groups, training):
    g = torch.Generator().manual_seed(0)
    kernel = 8
    official = random_layer(12, 16, groups, kernel, g)
    ours = PositionSensitiveAxialAttention(12, 16, heads=groups, span=kernel, axis=axis, local=local, stride=stride)
    ours.load_state_dict(convert_axial_deeplab_state_dict(official, ours))
    ours.train(training)
    other = 6  # the axis not attended: any length (even, so that the official floor pooling agrees with ours)
    x = torch.randn(3, 12, *((kernel, other) if axis == "height" else (other, kernel)), generator=g)

    expected = attention_layer(official, x, width=axis == "width", stride=stride, training=training)
    out = ours(x)
    assert out.shape == expected.shape == (3, 16, x.shape[2] // stride, x.shape[3] // stride)
    torch.testing.assert_close(out, expected)
    if training:  # the running statistics move as the official ones do
        updated = convert_axial_deeplab_state_dict(official)
        for name, value in ours.state_dict().items():
            torch.testing.assert_close(value, updated[name], msg=name)


def test_layer_at_a_shorter_length_is_the_official_layer_with_the_offsets_that_exist_there():
    """Ours runs the converted weights at any length up to the kernel: the official layer built for that
    length, with the middle of its table (the official code itself runs only at its kernel_size)."""
    g = torch.Generator().manual_seed(1)
    official = random_layer(8, 8, 2, 9, g)
    ours = PositionSensitiveAxialAttention(8, heads=2, span=9, axis="width").eval()
    ours.load_state_dict(convert_axial_deeplab_state_dict(official))
    x = torch.randn(2, 8, 3, 5, generator=g)
    shorter = crop_tables(official, 5 / 9)
    torch.testing.assert_close(ours(x), attention_layer(shorter, x, width=True))
    local = PositionSensitiveAxialAttention(8, heads=2, span=9, axis="width", local=True).eval()
    local.load_state_dict(convert_axial_deeplab_state_dict(official))
    assert torch.isfinite(local(torch.randn(2, 8, 3, 20))).all()  # longer: windows of the official kernel


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("inplanes,planes,stride", [(32, 16, 1), (16, 16, 1), (16, 16, 2)])
def test_block_matches_the_official_block(inplanes, planes, stride, training):
    g = torch.Generator().manual_seed(2)
    official = double(random_block(inplanes, planes, stride, 2, 8, g))
    assert ("downsample.0.weight" in official) == (inplanes != 2 * planes or stride != 1)
    ours = AxialBlock(inplanes, planes, stride, heads=2, span=8).double()
    ours.load_state_dict(convert_axial_deeplab_state_dict(official, ours))
    ours.train(training)
    # Float64: in float32 the official computation (the real module as much as the reference) is already
    # ~1.5e-5 from its exact value here, more than float32's default tolerance; float64's is far tighter.
    x = torch.randn(2, inplanes, 8, 8, dtype=torch.double, generator=g)
    torch.testing.assert_close(ours(x), block(official, x, stride=stride, training=training))


@pytest.fixture(scope="module")
def official_26s():
    """A random official axial26s (1000 classes) whose running statistics are those of a forward pass."""
    g = torch.Generator().manual_seed(3)
    state = random_network((1, 2, 4, 1), 0.5, 1000, g)
    calibrate(state, torch.randn(4, 3, 224, 224, generator=g))
    return double(state)


def test_whole_network_matches_the_official_network(official_26s):
    """Float64: in float32, rounding alone moves these logits by about 1e-3 from their exact values (the
    official code in float32 against itself in float64 as much as ours), more than the 1e-4 asked for."""
    checkpoint = {"net": {f"module.{k}": v for k, v in official_26s.items()}, "epoch": 99}  # as train.py saves
    ours = axial_resnet26s().double().eval()
    ours.load_state_dict(convert_axial_deeplab_state_dict(checkpoint, ours))
    x = torch.randn(2, 3, 224, 224, dtype=torch.double, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected, logits = network(official_26s, x), ours(x)
    assert logits.shape == (2, 1000) and expected.std() > 0.1
    assert (logits - expected).abs().max() < 1e-4


def test_whole_network_at_a_smaller_size_is_the_official_one_built_for_it(official_26s):
    ours = axial_resnet26s().double().eval()
    ours.load_state_dict(convert_axial_deeplab_state_dict(official_26s))
    x = torch.randn(1, 3, 160, 160, dtype=torch.double, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected, logits = network(crop_tables(official_26s, 160 / 224), x), ours(x)
        assert (logits - expected).abs().max() < 1e-4
        assert torch.isfinite(ours(torch.randn(1, 3, 256, 288, dtype=torch.double))).all()  # larger: local spans


@pytest.mark.parametrize("name", list(CONSTRUCTORS))
def test_every_official_constructor_loads_into_ours(name):
    layers, width, build = CONSTRUCTORS[name]
    official = random_network(layers, width, 1000, torch.Generator().manual_seed(6))
    ours = build()
    converted = convert_axial_deeplab_state_dict(official, ours)
    ours.load_state_dict(converted)  # strict: every key of ours, nothing else
    assert converted.keys() == ours.state_dict().keys()


def small_official(num_classes: int = 10) -> dict:
    """An official AxialAttentionNet((1, 1, 1, 1), s=0.125): small enough to build many times."""
    return random_network((1, 1, 1, 1), 0.125, num_classes, torch.Generator().manual_seed(7))


def small_ours(**kwargs) -> AxialResNet:
    return AxialResNet((1, 1, 1, 1), 0.125, **{"num_classes": 10, **kwargs})


def test_bad_state_dicts_name_what_does_not_match():
    layer = random_layer(8, 8, 2, 5, torch.Generator().manual_seed(8))
    with pytest.raises(TypeError, match="mapping"):
        convert_axial_deeplab_state_dict([("relative", layer["relative"])])
    with pytest.raises(TypeError, match="'relative' is a list"):
        convert_axial_deeplab_state_dict({**layer, "relative": [0.0]})
    with pytest.raises(ValueError, match="expected 'conv1.weight'.*got 'weight', 'bias'"):
        convert_axial_deeplab_state_dict({"weight": torch.ones(3), "bias": torch.ones(3)})
    with pytest.raises(ValueError, match="this package's own modules"):
        convert_axial_deeplab_state_dict(small_ours().state_dict())
    resnet = {"conv1.weight": torch.ones(64, 3, 7, 7), "layer1.0.conv1.weight": torch.ones(64, 64, 1, 1)}
    with pytest.raises(ValueError, match="not of the official Axial-DeepLab AxialAttentionNet.*'layer1.0.conv1"):
        convert_axial_deeplab_state_dict(resnet)
    with pytest.raises(ValueError, match="AxialAttention: 'to_qkv.weight'"):
        convert_axial_deeplab_state_dict({**layer, "to_qkv.weight": torch.ones(1)})

    missing = {k: v for k, v in layer.items() if k != "bn_output.running_var"}
    with pytest.raises(ValueError, match="no 'bn_output.running_var'"):
        convert_axial_deeplab_state_dict(missing)
    with pytest.raises(ValueError, match=r"'bn_qkv.bias' has shape \(12,\); expected \(16,\)"):
        convert_axial_deeplab_state_dict({**layer, "bn_qkv.bias": torch.zeros(12)})
    with pytest.raises(ValueError, match=r"'bn_similarity.running_mean' has shape \(3,\); expected \(6,\)"):
        convert_axial_deeplab_state_dict({**layer, "bn_similarity.running_mean": torch.zeros(3)})
    with pytest.raises(ValueError, match="bn_similarity.weight has shape"):
        convert_axial_deeplab_state_dict({**layer, "bn_similarity.weight": torch.ones(7)})
    with pytest.raises(ValueError, match=r"relative has shape \(6, 9\); expected \(2 \* group_planes.*planes = 4"):
        convert_axial_deeplab_state_dict({**layer, "relative": torch.zeros(6, 9)})
    with pytest.raises(ValueError, match="flatten_index is not the official index of kernel_size 5"):
        convert_axial_deeplab_state_dict({**layer, "flatten_index": layer["flatten_index"].flip(0)})
    with pytest.raises(ValueError, match="qkv_transform.weight has shape"):
        convert_axial_deeplab_state_dict({**layer, "qkv_transform.weight": torch.ones(16, 8, 1, 1)})
    nested = small_official()
    with pytest.raises(ValueError, match="'layer2.0.width_block.bn_qkv.weight' has shape"):
        convert_axial_deeplab_state_dict({**nested, "layer2.0.width_block.bn_qkv.weight": torch.ones(3)})


def test_a_model_of_another_size_is_named():
    official = small_official()
    convert_axial_deeplab_state_dict(official, small_ours())  # the right one: no error
    with pytest.raises(ValueError, match=r"'fc.weight' \(as 'fc.weight'\) has shape \(10, 256\), the AxialResNet's "
                                         r"\(5, 256\)"):
        convert_axial_deeplab_state_dict(official, small_ours(num_classes=5))
    with pytest.raises(ValueError, match="'layer1.0.hight_block.relative'.*kernel_size is 56, the model's span 28"):
        convert_axial_deeplab_state_dict(official, small_ours(image_size=112))
    with pytest.raises(ValueError, match=r"'conv1.weight' \(as 'stem.0.weight'\) has shape \(8, 3, 7, 7\), the "
                                         r"AxialResNet's \(16, 3, 7, 7\)"):
        convert_axial_deeplab_state_dict(official, AxialResNet((1, 1, 1, 1), 0.25, 10))
    with pytest.raises(ValueError, match="nothing in state_dict becomes the AxialResNet's 'layer1.1.conv_down.weight'"):
        convert_axial_deeplab_state_dict(official, AxialResNet((2, 1, 1, 1), 0.125, 10))
    with pytest.raises(ValueError, match="'qkv_transform.weight' has no place in the AxialResNet"):
        convert_axial_deeplab_state_dict(random_layer(8, 8, 2, 5, torch.Generator()), small_ours())
    with pytest.raises(TypeError, match="model must be the torch.nn.Module"):
        convert_axial_deeplab_state_dict(official, official)
