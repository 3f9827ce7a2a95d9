"""Axial-ResNets (Wang et al., "Axial-DeepLab", ECCV 2020): ResNets whose bottleneck 3x3 convolution is
replaced by height-axis then width-axis position-sensitive attention, in all four stages.

Layer counts, widths and the block follow the paper's ImageNet models; with 1000 classes the
parameter counts match the official implementation's within 1% (5.9M, 11.6M, 25.2M, 44.0M).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import torch.nn.functional as F
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
    check_probability,
    check_shape,
)
from .backbone import GlobalPool, Indices, check_pool_type, run_stage, take_indices

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
        downsample: nn.Module | None = None,
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
    """Axial-ResNet classifier: stem, four stages of `AxialBlock`s, global pool, linear head.

    x: (batch, in_channels, height, width) -> logits (batch, num_classes); with num_classes=0 the pooled
    features (batch, num_features).

    It follows timm's model contract (docs/backbones.md), without needing timm: `forward_features`,
    `forward_head(x, pre_logits=False)`, `reset_classifier`, `get_classifier`, `num_classes`, `num_features`,
    `feature_info` (five features: the stem's activation, then each stage; strides 2, 4, 8, 16, 32 with the
    ImageNet stem, 1, 1, 2, 4, 8 with the small one), `forward_intermediates`, `prune_intermediate_layers`,
    `set_grad_checkpointing` and `group_matcher`.

    layers: blocks per stage, e.g. (3, 4, 6, 3); width_multiplier scales every width (the paper's
        S / M / L models use 0.5 / 0.75 / 1.0).
    image_size: int or (height, width); the spans are the stages' map sizes for this input, so inputs
        up to it are attended globally, as in the paper. Larger inputs: with local=True (default) each
        query attends within a window of that span; with local=False they are an error.
    stem: "imagenet" (7x7 stride-2 convolution and 3x3 stride-2 max pool, /4) or "small" (3x3 stride-1
        convolution, for tiny images such as 8x8 digits).
    zero_init_residual: start every block as the identity (its last batch-norm scale at zero).
    global_pool: the head's pooling, as timm names it: "avg", "max", "avgmax", "catavgmax" (avg and max
        concatenated: twice the features into the classifier) or "" (no pooling; needs num_classes=0).
    drop_rate: dropout on the pooled features before the classifier (training only).
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
        global_pool: str = "avg",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        check_shape("layers", layers, 4, what="block counts, one per stage")
        check_positive_number("width_multiplier", width_multiplier)
        self.in_channels = check_int("in_channels", in_channels)
        check_int("num_classes", num_classes, minimum=0)
        check_pool_type("global_pool", global_pool, num_classes)
        self.drop_rate = check_probability("drop_rate", drop_rate)
        self.grad_checkpointing = False
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
        self.num_features = self.head_hidden_size = inplanes
        self.global_pool, self.fc = self._head(num_classes, global_pool)
        self.feature_info = self._describe_features()

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

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A model pickled before the timm contract (0.2.0) has `pool` (an average pool) and none of its attributes.
        modules = state.get("_modules", {})
        if "pool" in modules and "global_pool" not in modules:
            modules["global_pool"] = GlobalPool("avg")
            del modules["pool"]
            state.setdefault("drop_rate", 0.0)
            state["num_features"] = state["head_hidden_size"] = modules["fc"].in_features
        state.setdefault("grad_checkpointing", False)  # pickled before the switch existed
        super().__setstate__(state)
        if "feature_info" not in self.__dict__:
            self.feature_info = self._describe_features()

    def _describe_features(self) -> list[dict[str, Any]]:
        """timm's feature_info: per feature its channels, nominal stride (`reduction`) and the module giving it."""
        reduction = 2 if self.stem_kind == "imagenet" else 1
        info = [dict(num_chs=self.stem[0].out_channels, reduction=reduction, module="stem.2")]
        reduction *= 2 if self.stem_kind == "imagenet" else 1  # the max pool
        for i, stage in enumerate(self.stages):
            reduction *= stage[0].stride
            info.append(dict(num_chs=stage[-1].conv_up.out_channels, reduction=reduction,
                             module=f"layer{i + 1}.{len(stage) - 1}"))
        return info

    @property
    def stages(self) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
        return self.layer1, self.layer2, self.layer3, self.layer4

    def _head(self, num_classes: int, global_pool: str) -> tuple[GlobalPool, nn.Module]:
        pool = GlobalPool(global_pool)
        fc = nn.Linear(self.num_features * pool.feat_mult, num_classes) if num_classes else nn.Identity()
        if num_classes:
            param = self.stem[0].weight  # the new head on the model's device and dtype
            fc.to(device=param.device, dtype=param.dtype)
        return pool, fc

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's switch (its train.py --grad-checkpointing): recompute each block in backward, holding one
        block's activations at a time; outputs, gradients and batch-norm statistics stay those without it."""
        self.grad_checkpointing = check_bool("enable", enable)

    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        """timm's parameter groups (layer-wise learning-rate decay): the stem, then every block in order
        (coarse: every stage); the head is left unmatched, which timm makes the last group."""
        check_bool("coarse", coarse)
        return dict(stem=r"^stem\.", blocks=r"^layer(\d+)\." if coarse else r"^layer(\d+)\.(\d+)\.")

    def get_classifier(self, name_only: bool = False) -> nn.Module | str:
        """The classifier (`fc`: a Linear, or an Identity with num_classes=0), or its name."""
        return "fc" if check_bool("name_only", name_only) else self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh head for num_classes classes (0: none, the head returns the pooled features); global_pool
        as in the constructor, None keeping the current one."""
        check_int("num_classes", num_classes, minimum=0)
        global_pool = self.global_pool.pool_type if global_pool is None else global_pool
        check_pool_type("global_pool", global_pool, num_classes)
        self.num_classes = num_classes
        self.global_pool, self.fc = self._head(num_classes, global_pool)

    def forward_features(self, x: Tensor) -> Tensor:
        """(batch, in_channels, H, W) -> the last stage's map (batch, channels, ~H / 32, ~W / 32);
        ~H / 8 with the small stem."""
        check_input(
            x, name="x", owner=self, ndim=4, layout="batch, channels, height, width", dim_index=1,
            dim=self.in_channels,
        )
        check_axial_lengths(x, name="x", owner=self, axes=_SPATIAL, reason="its stem is a convolution")
        x = self.stem(x)
        for stage in self.stages:
            x = run_stage(stage, x, self.grad_checkpointing)
        return x

    def forward_intermediates(
        self,
        x: Tensor,
        indices: Indices = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """The features of `feature_info` (index 0: the stem's activation before its max pool; 1-4: the stages),
        as timm's models return them.

        indices: None (all five), an int n (the last n) or a sequence of indices (negative: from the end).
        norm: accepted for timm's signature; this network has no final norm, so it changes nothing.
        stop_early: run no stage past the last one asked for (the final map returned is then the last computed).
        output_fmt: "NCHW", the only layout.
        Returns the list of (batch, num_chs, ~H / reduction, ~W / reduction) maps in the order asked, or, unless
        intermediates_only, (the last map computed, that list).
        """
        taken, last = take_indices(len(self.feature_info), indices)
        check_bool("norm", norm)
        check_bool("stop_early", stop_early)
        check_bool("intermediates_only", intermediates_only)
        if getattr(output_fmt, "value", output_fmt) != "NCHW":  # timm passes its Format enum (a str)
            raise ValueError(f"output_fmt must be 'NCHW' (the only layout of these maps), got {output_fmt!r}")
        check_input(
            x, name="x", owner=self, ndim=4, layout="batch, channels, height, width", dim_index=1,
            dim=self.in_channels,
        )
        check_axial_lengths(x, name="x", owner=self, axes=_SPATIAL, reason="its stem is a convolution")
        features = [self.stem[:3](x)]  # convolution, norm, activation: stride 2 (1 with the small stem)
        x = self.stem[3:](features[0])
        stages = self.stages[:last] if stop_early else self.stages
        for stage in stages:
            x = run_stage(stage, x, self.grad_checkpointing)
            features.append(x)
        intermediates = [features[i] for i in taken]
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(
        self, indices: Indices = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last feature of `indices` (as in forward_intermediates) and, with
        prune_head, the head (num_classes 0, no pooling). prune_norm: timm's, nothing to prune here.
        Returns the indices from the start (timm's features_only wrapper passes them to forward_intermediates)."""
        taken, last = take_indices(len(self.feature_info), indices)
        check_bool("prune_norm", prune_norm)
        check_bool("prune_head", prune_head)
        for i in range(last + 1, 5):  # layer i gives feature i
            setattr(self, f"layer{i}", nn.Identity())
        if prune_head:
            self.reset_classifier(0, "")
        return taken

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """The last stage's map (batch, num_features, h, w) -> logits (batch, num_classes); pre_logits=True: the
        pooled features before the classifier (batch, num_features), twice as wide with "catavgmax"."""
        x = self.global_pool(x)
        if self.drop_rate and self.training:
            x = F.dropout(x, self.drop_rate, training=True)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


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
