"""Load checkpoints of the official Axial-DeepLab code (csrhddlam/axial-deeplab, `lib/models/axialnet.py`) of
Wang et al., "Axial-DeepLab: Stand-Alone Axial-Attention for Panoptic Segmentation" (ECCV 2020).

Its layer computes the same Eq. 4 as `PositionSensitiveAxialAttention`, parameterised differently:
  * `qkv_transform` is a Conv1d over each line, weight (2 * out, in, 1); ours is the 1x1 Conv2d over the map.
    Both order each group's channels [q | k | v], and `bn_qkv` normalises the same channels.
  * The relative table has the same rows [r^q | r^k | r^v], but for query i and key j its key term reads
    column j - i + K - 1 while its query and value terms read i - j + K - 1; ours reads the paper's p - o
    (key minus query) for all three, so the r^q and r^v rows are reversed.
  * `bn_similarity` normalises 3 x groups channels (q.k, q.r^q, k.r^k, each per group). Its shift is the
    same for every key of a query and cancels in the softmax, in training and in eval alike, so only its
    scale and running variance are kept (ours: `similarity_weight`, `similarity_running_var`, (3, heads)).
  * `bn_output`'s channels interleave the two output terms (2c: q.v of channel c, 2c + 1: its value
    term); ours keeps them as [q.v terms | value terms].
  * Names: AxialBlock's `hight_block` is our `height_block`; the network's `conv1`/`bn1` are `stem.0`/`stem.1`.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from einops import rearrange
from torch import Tensor, nn

_NORM = r"(?:weight|bias|running_mean|running_var|num_batches_tracked)"
_LAYER = rf"(?:qkv_transform\.weight|bn_(?:qkv|similarity|output)\.{_NORM}|relative|flatten_index)"
_BLOCK = rf"(?:conv_(?:down|up)\.weight|bn[12]\.{_NORM}|downsample\.0\.weight|downsample\.1\.{_NORM}" \
         rf"|(?:hight|width)_block\.{_LAYER})"
_NETWORK = rf"(?:conv1\.weight|bn1\.{_NORM}|fc\.(?:weight|bias)|layer[1-4]\.\d+\.{_BLOCK})"

# (official class, a key only its state dicts have at the top level, the pattern of all its keys, and
# the renames of its own keys: the network's stem is our `stem` Sequential)
_MODELS = (
    ("AxialAttentionNet (axial26s/50s/50m/50l)", "conv1.weight", re.compile(_NETWORK), re.compile(r"^(conv1|bn1)\.")),
    ("AxialBlock", "conv_down.weight", re.compile(_BLOCK), None),
    ("AxialAttention", "qkv_transform.weight", re.compile(_LAYER), None),
)
_STEM = {"conv1.": "stem.0.", "bn1.": "stem.1."}
_LAYER_KEY = re.compile(rf"(?P<layer>(?:.*(?:hight|width)_block\.)?)(?P<name>{_LAYER})")
_STATISTICS = ("weight", "bias", "running_mean", "running_var")
# What our layer is built from; bn_similarity's bias and running mean are the shift that cancels, and
# flatten_index is derived from the table's size (checked when present).
_REQUIRED = (
    "qkv_transform.weight", "relative", "bn_similarity.weight", "bn_similarity.running_var",
    *(f"{norm}.{field}" for norm in ("bn_qkv", "bn_output") for field in _STATISTICS),
)


def convert_axial_deeplab_state_dict(
    state_dict: Mapping[str, object], model: nn.Module | None = None
) -> dict[str, Tensor]:
    """Map a state dict of the official Axial-DeepLab code to the same-configuration module of this package.

    state_dict: of the official `AxialAttention` layer, `AxialBlock`, or whole `axial26s/50s/50m/50l`
        network; the checkpoint its training script saves (`{"net": state_dict, ...}`, keys prefixed by
        DataParallel's `module.`) is accepted as it is.
    model: the module to load the result into. When given, every converted tensor is checked against
        its state dict, and a mismatch (another model, size, span or number of classes) is a ValueError
        naming the official key.

    Returns a state dict for `PositionSensitiveAxialAttention(in_planes, out_planes, heads=groups,
    span=kernel_size, ...)`, `AxialBlock(inplanes, planes, stride, heads=groups, span=kernel_size)` or
    `axial_resnet26s/50s/50m/50l(num_classes)` (spans of 224x224 images, the default) that computes the
    official outputs, in eval and in training mode. The official layers run only at their kernel_size
    (224x224 images for a network); ours run the converted weights at any size: globally up to the
    official one, and beyond it within windows of it where the module is local (the Axial-ResNets' default).
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of parameter names to tensors, got {type(state_dict).__name__}")
    if isinstance(state_dict.get("net"), Mapping):  # the official train.py's checkpoint: {"net": ..., "epoch": ...}
        state_dict = state_dict["net"]
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise TypeError(
                f"state_dict must map parameter names to tensors; its entry {key!r} is a {type(value).__name__}"
            )
    if state_dict and all(key.startswith("module.") for key in state_dict):  # saved from nn.DataParallel
        state_dict = {key[len("module."):]: value for key, value in state_dict.items()}

    kind, pattern, stem = _official_model(state_dict)
    strangers = [key for key in state_dict if not pattern.fullmatch(key)]
    if strangers:
        shown = ", ".join(repr(key) for key in strangers[:5])
        more = f" and {len(strangers) - 5} more" if len(strangers) > 5 else ""
        raise ValueError(
            f"state_dict is not of the official Axial-DeepLab {kind}: {shown}{more} match none of its parameters"
        )

    converted: dict[str, Tensor] = {}
    origin: dict[str, str] = {}  # our key -> the official key it came from, for the messages
    layers: dict[str, dict[str, Tensor]] = {}
    for key, value in state_dict.items():
        match = _LAYER_KEY.fullmatch(key)
        if match:
            layers.setdefault(match["layer"], {})[match["name"]] = value
            continue
        ours = stem.sub(lambda m: _STEM[m[0]], key) if stem else key
        converted[ours], origin[ours] = value, key
    for prefix, params in layers.items():
        ours = prefix.replace("hight_block.", "height_block.")
        for name, (value, source) in _convert_layer(prefix, params).items():
            converted[ours + name], origin[ours + name] = value, prefix + source
    if model is not None:
        _check_fits(converted, origin, model)
    return converted


def _official_model(state_dict: Mapping[str, Tensor]) -> tuple[str, re.Pattern[str], re.Pattern[str] | None]:
    for kind, anchor, pattern, stem in _MODELS:
        if anchor in state_dict:
            return kind, pattern, stem
    keys = list(state_dict)
    shown = ", ".join(repr(key) for key in keys[:5]) + (f" ... ({len(keys)} keys)" if len(keys) > 5 else "")
    ours = any(key == "stem.0.weight" or key.endswith("similarity_weight") for key in keys)
    hint = " (this looks like a state dict of this package's own modules: it loads without conversion)"
    raise ValueError(
        "state_dict is not of the official Axial-DeepLab code: expected 'conv1.weight' (a whole network), "
        f"'conv_down.weight' (an AxialBlock) or 'qkv_transform.weight' (an AxialAttention layer); "
        f"got {shown or 'no keys'}{hint if ours else ''}"
    )


def _convert_layer(prefix: str, params: dict[str, Tensor]) -> dict[str, tuple[Tensor, str]]:
    """One official AxialAttention's tensors -> {our name: (tensor, official name)}, its shapes checked."""
    missing = [name for name in _REQUIRED if name not in params]
    if missing:
        raise ValueError(f"state_dict has no {', '.join(repr(prefix + name) for name in missing)} "
                         f"of the official AxialAttention layer {prefix[:-1] or '(top level)'!r}")

    def expect(name: str, shape: tuple[int, ...], why: str) -> None:
        got = tuple(params[name].shape)
        if got != shape:
            raise ValueError(f"state_dict's {prefix + name!r} has shape {got}; expected {shape} ({why})")

    weight = params["qkv_transform.weight"]
    if weight.ndim != 3 or weight.shape[2] != 1 or weight.shape[0] % 2:
        raise ValueError(
            f"state_dict's {prefix}qkv_transform.weight has shape {tuple(weight.shape)}; expected "
            "(2 * out_planes, in_planes, 1), the official layer's Conv1d"
        )
    channels = weight.shape[0]  # 2 * out_planes
    similarity = params["bn_similarity.weight"]
    groups = similarity.numel() // 3
    if similarity.ndim != 1 or groups == 0 or similarity.numel() % 3 or channels % (4 * groups):
        raise ValueError(
            f"state_dict's {prefix}bn_similarity.weight has shape {tuple(similarity.shape)}; expected (3 * groups,) "
            f"with groups dividing out_planes = {channels // 2} into an even number of channels per group"
        )
    group_planes = channels // (2 * groups)
    for name in params:
        if name.endswith("num_batches_tracked"):
            expect(name, (), "a count")
        elif name.startswith(("bn_qkv.", "bn_output.")):
            expect(name, (channels,), f"2 * out_planes, as qkv_transform.weight has {channels} output channels")
        elif name.startswith("bn_similarity."):
            expect(name, (3 * groups,), f"3 * groups, as bn_similarity.weight has {3 * groups}")
    relative = params["relative"]
    if relative.ndim != 2 or relative.shape[0] != 2 * group_planes or relative.shape[1] % 2 == 0:
        raise ValueError(
            f"state_dict's {prefix}relative has shape {tuple(relative.shape)}; expected (2 * group_planes, "
            f"2 * kernel_size - 1) with group_planes = {group_planes} ({channels // 2} out_planes, {groups} groups)"
        )
    kernel = (relative.shape[1] + 1) // 2
    if "flatten_index" in params:
        index = torch.arange(kernel)
        expected = (index[:, None] - index[None, :] + kernel - 1).reshape(-1)
        found = params["flatten_index"]
        if found.shape != expected.shape or not torch.equal(found.cpu().long(), expected):
            raise ValueError(
                f"state_dict's {prefix}flatten_index is not the official index of kernel_size {kernel} "
                f"(key - query + {kernel - 1} over {kernel} x {kernel} pairs), so its relative table cannot be "
                "read as the official one"
            )

    # Reverse the r^q and r^v rows: the official tables are indexed by query - key there (see the module doc).
    dq = group_planes // 2
    rq, rk, rv = relative.split([dq, dq, group_planes])
    out: dict[str, tuple[Tensor, str]] = {
        "qkv.weight": (weight.unsqueeze(-1), "qkv_transform.weight"),
        "relative": (torch.cat((rq.flip(-1), rk, rv.flip(-1))), "relative"),
        "similarity_weight": (similarity.reshape(3, groups), "bn_similarity.weight"),
        "similarity_running_var": (params["bn_similarity.running_var"].reshape(3, groups), "bn_similarity.running_var"),
    }
    for name, value in params.items():
        if name.startswith("bn_qkv."):
            out[name] = (value, name)
        elif name.startswith("bn_output."):
            # Official channel 2c + t (t = 0: q.v, 1: value term) -> our channel t * out_planes + c.
            out[name] = (value if value.ndim == 0 else rearrange(value, "(c t) -> (t c)", t=2), name)
    return out


def _check_fits(converted: dict[str, Tensor], origin: dict[str, str], model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be the torch.nn.Module to load into, got {type(model).__name__}")
    target = model.state_dict()
    name = type(model).__name__
    problems = []
    for key, value in converted.items():
        if key not in target:
            problems.append(f"{origin[key]!r} has no place in the {name} (it would load as {key!r})")
        elif target[key].shape != value.shape:
            problem = (
                f"{origin[key]!r} (as {key!r}) has shape {tuple(value.shape)}, the {name}'s {tuple(target[key].shape)}"
            )
            if key.endswith(".relative"):
                problem += (
                    f": the official layer's kernel_size is {(value.shape[1] + 1) // 2}, the model's span "
                    f"{(target[key].shape[1] + 1) // 2} (build the model for the official map sizes: image_size=224 "
                    "for a network, span=kernel_size for a layer or block)"
                )
            problems.append(problem)
    absent = [key for key in target if key not in converted]
    if absent:
        shown = ", ".join(repr(key) for key in absent[:3]) + (f" and {len(absent) - 3} more" if len(absent) > 3 else "")
        problems.append(f"nothing in state_dict becomes the {name}'s {shown}")
    if problems:
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise ValueError(f"state_dict does not match the {name}: " + "; ".join(problems[:5]) + more)
