"""Axial-ResNets (Wang et al., "Axial-DeepLab", ECCV 2020): ResNets whose bottleneck 3x3 convolution is
replaced by height-axis then width-axis position-sensitive attention, in all four stages.

Layer counts, widths and the block follow the paper's ImageNet models; with 1000 classes the
parameter counts match the official implementation's within 1% (5.9M, 11.6M, 25.2M, 44.0M).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

from torch import Tensor, nn

from ..layers.position_sensitive import PositionSensitiveAxialAttention
from ..validation import (
    check_axial_lengths,
    check_bool,
    check_choice,
    check_input,
    check_int,
    check_pair,
    check_positive_number,
    check_shape,
)

Size = Union[int, tuple[int, int]]
_SPATIAL = {2: "height", 3: "width"}


def _halve(size: tuple[int, int]) -> tuple[int, int]:
    """Output size of a stride-2 stage (ceil, as a stride-2 1x1 convolution or 7x7/3x3 padded one)."""
    return (size[0] + 1) // 2, (size[1] + 1) // 2


class AxialBlock(nn.Module):
    """ResNet bottleneck with its 3x3 convolution replaced by height- then width-axis attention.

    x: (batch, inplanes, height, width) -> (batch, planes * expansion, ceil(height / stride), ceil(width / stride)).
    The inner width is planes * base_width / 64, attended by `heads` heads. `span` (int or
    (height, width)) sizes the relative tables: the largest map attended globally; with local=True
    larger maps attend within windows of that span. Without a `downsample`, a 1x1 convolution and
    batch norm project the shortcut whenever the stride or the width changes.
    """

    expansion = 2

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: Optional[nn.Module] = None,
        heads: int = 8,
        base_width: int = 64,
        *,
        span: Size = 56,
        local: bool = False,
    ) -> None:
        super().__init__()
        check_int("inplanes", inplanes)
        check_int("planes", planes)
        check_int("stride", stride)
        check_int("base_width", base_width)
        span_h, span_w = check_pair("span", span)
        self.inplanes, self.planes, self.stride, self.heads = inplanes, planes, stride, heads
        self.base_width, self.span, self.local = base_width, (span_h, span_w), check_bool("local", local)
        out = planes * self.expansion
        width = planes * base_width // 64
        self.conv_down = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.height_block = PositionSensitiveAxialAttention(width, width, heads, span_h, "height", local)
        self.width_block = PositionSensitiveAxialAttention(width, width, heads, span_w, "width", local, stride)
        self.conv_up = nn.Conv2d(width, out, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        if downsample is None and (stride != 1 or inplanes != out):
            downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
        self.downsample = downsample

    def extra_repr(self) -> str:
        return (f"{self.inplanes}, {self.planes}, stride={self.stride}, heads={self.heads}, "
                f"base_width={self.base_width}, span={self.span}, local={self.local}")

    def forward(self, x: Tensor) -> Tensor:
        check_input(
            x, name="x", owner=self, ndim=4, layout="batch, channels, height, width", dim_index=1,
            dim=self.inplanes,
        )
        check_axial_lengths(
            x, name="x", owner=self, axes=_SPATIAL, reason="its shortcut and projections are convolutions"
        )
        out = self.relu(self.bn1(self.conv_down(x)))
        out = self.relu(self.width_block(self.height_block(out)))
        out = self.bn2(self.conv_up(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class AxialResNet(nn.Module):
    """Axial-ResNet classifier: stem, four stages of `AxialBlock`s, global average pool, linear head.

    x: (batch, in_channels, height, width) -> logits (batch, num_classes).

    layers: blocks per stage, e.g. (3, 4, 6, 3); width_multiplier scales every width (the paper's
        S / M / L models use 0.5 / 0.75 / 1.0).
    image_size: int or (height, width); the spans are the stages' map sizes for this input, so inputs
        up to it are attended globally, as in the paper. Larger inputs: with local=True (default) each
        query attends within a window of that span; with local=False they are an error.
    stem: "imagenet" (7x7 stride-2 convolution and 3x3 stride-2 max pool, /4) or "small" (3x3 stride-1
        convolution, for tiny images such as 8x8 digits).
    zero_init_residual: start every block as the identity (its last batch-norm scale at zero).
    """

    def __init__(
        self,
        layers: Sequence[int],
        width_multiplier: float = 0.5,
        num_classes: int = 1000,
        *,
        in_channels: int = 3,
        heads: int = 8,
        image_size: Size = 224,
        local: bool = True,
        stem: str = "imagenet",
        zero_init_residual: bool = True,
    ) -> None:
        super().__init__()
        check_shape("layers", layers, 4, what="block counts, one per stage")
        check_positive_number("width_multiplier", width_multiplier)
        self.in_channels = check_int("in_channels", in_channels)
        check_int("num_classes", num_classes)
        size = check_pair("image_size", image_size)
        check_bool("local", local)
        check_choice("stem", stem, ("imagenet", "small"))
        self.layers, self.width_multiplier, self.num_classes = tuple(layers), width_multiplier, num_classes
        self.heads, self.image_size, self.local, self.stem_kind = heads, size, local, stem
        inplanes = int(64 * width_multiplier)
        if stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, inplanes, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(inplanes),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
            size = _halve(_halve(size))
        else:  # "small"
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, inplanes, 3, padding=1, bias=False),
                nn.BatchNorm2d(inplanes),
                nn.ReLU(inplace=True),
            )

        stages = []
        for i, blocks in enumerate(layers):
            planes, stride = int(128 * 2**i * width_multiplier), 1 if i == 0 else 2
            stage = []
            for j in range(blocks):
                stage.append(
                    AxialBlock(inplanes, planes, stride if j == 0 else 1, heads=heads, span=size, local=local)
                )
                inplanes = planes * AxialBlock.expansion
                if j == 0 and stride == 2:
                    size = _halve(size)
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, AxialBlock):
                    nn.init.zeros_(m.bn2.weight)

    def extra_repr(self) -> str:
        return (f"layers={self.layers}, width_multiplier={self.width_multiplier}, num_classes={self.num_classes}, "
                f"in_channels={self.in_channels}, heads={self.heads}, image_size={self.image_size}, "
                f"local={self.local}, stem={self.stem_kind!r}")

    def forward_features(self, x: Tensor) -> Tensor:
        """(batch, in_channels, H, W) -> the last stage's map (batch, channels, ~H / 32, ~W / 32);
        ~H / 8 with the small stem."""
        check_input(
            x, name="x", owner=self, ndim=4, layout="batch, channels, height, width", dim_index=1,
            dim=self.in_channels,
        )
        check_axial_lengths(x, name="x", owner=self, axes=_SPATIAL, reason="its stem is a convolution")
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.forward_features(x)).flatten(1))


def axial_resnet26s(num_classes: int = 1000, **kwargs) -> AxialResNet:
    """Axial-ResNet-26-S: blocks (1, 2, 4, 1), width x0.5; about 5.9M parameters with 1000 classes."""
    return AxialResNet((1, 2, 4, 1), 0.5, num_classes, **kwargs)


def axial_resnet50s(num_classes: int = 1000, **kwargs) -> AxialResNet:
    """Axial-ResNet-50-S: blocks (3, 4, 6, 3), width x0.5; about 11.6M parameters with 1000 classes."""
    return AxialResNet((3, 4, 6, 3), 0.5, num_classes, **kwargs)


def axial_resnet50m(num_classes: int = 1000, **kwargs) -> AxialResNet:
    """Axial-ResNet-50-M: blocks (3, 4, 6, 3), width x0.75; about 25.2M parameters with 1000 classes."""
    return AxialResNet((3, 4, 6, 3), 0.75, num_classes, **kwargs)


def axial_resnet50l(num_classes: int = 1000, **kwargs) -> AxialResNet:
    """Axial-ResNet-50-L: blocks (3, 4, 6, 3), width x1.0; about 44.0M parameters with 1000 classes."""
    return AxialResNet((3, 4, 6, 3), 1.0, num_classes, **kwargs)
