"""The four Axial-ResNets as timm models, for timm's `create_model` (and what builds on it, such as
segmentation_models_pytorch's "tu-" encoders).

timm has no plugin entry points: its registry holds the models its own modules register on import. So
`register_timm_models()` registers ours, once, when called (timm is imported then, never at this package's
import); after it, `timm.create_model("axial_resnet50s", ...)` works, `features_only=True` included.

Everything goes through timm's own machinery: the entry points below call `build_model_with_cfg`, which
wraps a features_only model in its `FeatureGetterNet` (our `forward_intermediates`, the later stages
pruned by our `prune_intermediate_layers`) and loads pretrained weights from `pretrained_cfg["file"]`
(`pretrained_cfg_overlay=dict(file=...)`) through `checkpoint_filter_fn`, which converts an official
Axial-DeepLab checkpoint with `convert_axial_deeplab_state_dict`. There are no hosted weights: the
official ones are files to download from its Model Zoo (csrhddlam/axial-deeplab).
"""
from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from ..models.axial_resnet import AxialResNet
from .axial_deeplab import convert_axial_deeplab_state_dict

_EXTRA = "pip install 'torch-axial-attention[timm]'"

# timm name: (blocks per stage, width multiplier, the official model's name)
ARCHITECTURES = {
    "axial_resnet26s": ((1, 2, 4, 1), 0.5, "axial26s"),
    "axial_resnet50s": ((3, 4, 6, 3), 0.5, "axial50s"),
    "axial_resnet50m": ((3, 4, 6, 3), 0.75, "axial50m"),
    "axial_resnet50l": ((3, 4, 6, 3), 1.0, "axial50l"),
}


def _cfg(official: str) -> dict[str, Any]:
    """timm's pretrained config (PretrainedCfg's fields) of the official ImageNet model: its input, its
    evaluation preprocessing (Resize(256), CenterCrop(224), ImageNet mean and std) and the names timm adapts
    (first_conv for in_chans != 3, classifier for another num_classes)."""
    return dict(
        num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875, interpolation="bilinear",
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv="stem.0", classifier="fc",
        license="apache-2.0", origin_url="https://github.com/csrhddlam/axial-deeplab", paper_ids="arXiv:2003.07853",
        paper_name="Axial-DeepLab: Stand-Alone Axial-Attention for Panoptic Segmentation",
        notes=(f"weights: the official {official} checkpoint, as pretrained_cfg_overlay=dict(file=...)",),
    )


# timm's register_model reads the module's `default_cfgs` (plain dicts are turned into its PretrainedCfg) and
# appends each model's name to the module's `__all__`.
default_cfgs = {name: _cfg(official) for name, (_, _, official) in ARCHITECTURES.items()}
__all__ = ["ARCHITECTURES", "checkpoint_filter_fn", "default_cfgs", "register_timm_models"]


def _timm_models() -> Any:
    try:
        import timm.models
    except ImportError as error:
        raise ImportError(f"the Axial-ResNets as timm models need timm: {_EXTRA} ({error})") from error
    except RuntimeError as error:  # e.g. a torchvision built for another torch: "operator torchvision::nms ..."
        raise ImportError(
            f"timm is installed but does not import ({error}); timm imports torchvision, which must be the "
            "build made for the installed torch"
        ) from error
    return timm.models


def register_timm_models() -> list[str]:
    """Register axial_resnet26s, axial_resnet50s, axial_resnet50m and axial_resnet50l with timm (needs timm:
    `pip install 'torch-axial-attention[timm]'`), so that `timm.create_model(name, ...)` builds them. Calling
    it again changes nothing. Returns the names."""
    timm_models = _timm_models()
    for entrypoint in _ENTRYPOINTS:
        name = entrypoint.__name__
        if not (timm_models.is_model(name) and timm_models.model_entrypoint(name) is entrypoint):
            timm_models.register_model(entrypoint)
    return list(ARCHITECTURES)


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: nn.Module) -> dict[str, Tensor]:
    """timm's `pretrained_filter_fn`: the state dict of a pretrained file -> the model's keys.

    An official Axial-DeepLab checkpoint (its whole `{"net": ..., "epoch": ...}`, with or without
    DataParallel's `module.`) is converted by `convert_axial_deeplab_state_dict` and checked against the
    model's architecture with the checkpoint's own classifier and 3 input channels: timm then drops the
    classifier where num_classes differs and adapts the first convolution to in_chans. A state dict of this
    package's own AxialResNet (`stem.0.weight` and so on) passes through unchanged.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of parameter names to tensors, got {type(state_dict).__name__}")
    if "stem.0.weight" in state_dict:
        return dict(state_dict)
    if not isinstance(model, AxialResNet):
        raise TypeError(f"model must be the AxialResNet to load into, got {type(model).__name__}")
    official = state_dict["net"] if isinstance(state_dict.get("net"), Mapping) else state_dict
    head = official.get("fc.weight", official.get("module.fc.weight"))
    classes = head.shape[0] if isinstance(head, Tensor) and head.ndim == 2 else model.num_classes
    with torch.device("meta"):  # the model as the checkpoint has it: its shapes only, no memory
        twin = AxialResNet(
            model.layers, model.width_multiplier, classes, in_channels=3, heads=model.heads,
            image_size=model.image_size, local=model.local, stem=model.stem_kind,
        )
    return convert_axial_deeplab_state_dict(state_dict, twin)


def _constructor(layers: tuple[int, ...], width: float, *, in_chans: int = 3, img_size: Any = None,
                 **kwargs: Any) -> AxialResNet:
    """An AxialResNet from the keyword arguments timm's build_model_with_cfg passes (its names in_chans and
    img_size; num_classes, global_pool, drop_rate and the AxialResNet's own arguments as they are)."""
    if "in_channels" in kwargs:
        raise ValueError(
            "in_channels: through timm, give in_chans (timm's name, which also adapts pretrained weights), "
            f"got in_channels={kwargs['in_channels']!r}"
        )
    if img_size is not None:
        if "image_size" in kwargs:
            raise ValueError(f"give img_size or image_size, not both (got {img_size!r} and {kwargs['image_size']!r})")
        kwargs["image_size"] = img_size
    return AxialResNet(layers, width, in_channels=in_chans, **kwargs)


def _create(variant: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    layers, width, _ = ARCHITECTURES[variant]
    # features_only: timm's FeatureGetterNet over forward_intermediates; flatten_sequential serves timm's other
    # feature classes (feature_cls="list", "dict", "hook"), whose module names are feature_info's ("layer2.1").
    feature_cfg = {"feature_cls": "getter", "flatten_sequential": True, **(kwargs.pop("feature_cfg", None) or {})}
    return _timm_models().build_model_with_cfg(
        partial(_constructor, layers, width), variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn, feature_cfg=feature_cfg, **kwargs,
    )


# The entry points timm calls (timm.create_model passes pretrained, pretrained_cfg, pretrained_cfg_overlay,
# cache_dir and the model's keyword arguments); register_model names each model by its function's name.

def axial_resnet26s(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm's Axial-ResNet-26-S: blocks (1, 2, 4, 1), width x0.5 (official: axial26s)."""
    return _create("axial_resnet26s", pretrained, **kwargs)


def axial_resnet50s(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm's Axial-ResNet-50-S: blocks (3, 4, 6, 3), width x0.5 (official: axial50s)."""
    return _create("axial_resnet50s", pretrained, **kwargs)


def axial_resnet50m(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm's Axial-ResNet-50-M: blocks (3, 4, 6, 3), width x0.75 (official: axial50m)."""
    return _create("axial_resnet50m", pretrained, **kwargs)


def axial_resnet50l(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm's Axial-ResNet-50-L: blocks (3, 4, 6, 3), width x1.0 (official: axial50l)."""
    return _create("axial_resnet50l", pretrained, **kwargs)


_ENTRYPOINTS = (axial_resnet26s, axial_resnet50s, axial_resnet50m, axial_resnet50l)
