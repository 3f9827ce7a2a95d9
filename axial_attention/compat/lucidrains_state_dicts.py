"""Load checkpoints of lucidrains' `axial-attention` 0.6.1 into this package's modules: its state dicts
(`convert_lucidrains_state_dict`, also run by `load_state_dict` itself through a pre-hook) and its whole
pickled models (`torch.save(model)`; the classes' `__setstate__` rebuild them here).

0.6.1's own module surface (SelfAttention, PermuteToFrom, ...) is `axial_attention/axial_attention/`.
"""
from __future__ import annotations

import re
import warnings
from typing import Any, Callable, Mapping, Optional

import torch
from torch import Tensor, nn

# (pattern, replacement) applied to every key in turn; `(^|\.)` lets a rule match a module nested
# anywhere inside a user's model. AxialPositionalEmbedding keeps 0.6.1's `param_{i}` names and needs none.
_KEY_RULES: list[tuple[re.Pattern[str], str]] = [
    # AxialAttention: 0.6.1 wraps each axis' SelfAttention in PermuteToFrom(.fn); ours holds it directly.
    (re.compile(r"(^|\.)axial_attentions\.(\d+)\.fn\."), r"\1axial_attentions.\2."),
    # AxialImageTransformer: its `layers.blocks.{i}` are (f, g) pairs, held by 0.6.1 as a ModuleList
    # (reversible=False: `.0.`/`.1.`) or in Deterministic wrappers (reversible=True: `.f.net.`/`.g.net.`).
    (re.compile(r"(^|\.)layers\.blocks\.(\d+)\.0\.(?=fn\.|0\.[gb]$|[13]\.(weight|bias)$)"), r"\1layers.blocks.\2.f."),
    (re.compile(r"(^|\.)layers\.blocks\.(\d+)\.1\.(?=fn\.|0\.[gb]$|[13]\.(weight|bias)$)"), r"\1layers.blocks.\2.g."),
    # ReversibleSequence (alone, or the transformer's `layers`): 0.6.1 wraps f and g in Deterministic (`.net`).
    (re.compile(r"(^|\.)blocks\.(\d+)\.([fg])\.net\."), r"\1blocks.\2.\3."),
    # ...then inside a pair: PreNorm(SelfAttention) wrapped in PermuteToFrom, or the feed-forward Sequential.
    (re.compile(r"(^|\.)(layers\.blocks\.\d+\.[fg]\.)fn\.norm\."), r"\1\2norm."),
    (re.compile(r"(^|\.)(layers\.blocks\.\d+\.[fg]\.)fn\.fn\."), r"\1\2attn."),
    (re.compile(r"(^|\.)(layers\.blocks\.\d+\.[fg]\.)0\.g$"), r"\1\2norm.weight"),
    (re.compile(r"(^|\.)(layers\.blocks\.\d+\.[fg]\.)0\.b$"), r"\1\2norm.bias"),
    (re.compile(r"(^|\.)(layers\.blocks\.\d+\.[fg]\.)1\.(weight|bias)$"), r"\1\2proj_in.\3"),
    (re.compile(r"(^|\.)(layers\.blocks\.\d+\.[fg]\.)3\.(weight|bias)$"), r"\1\2proj_out.\3"),
]

# (pattern on the 0.6.1 key, transform of the value).
_VALUE_RULES: list[tuple[re.Pattern[str], Callable[[Tensor], Tensor]]] = [
    # 0.6.1's ChanLayerNorm keeps (1, dim, 1, 1) parameters; ours normalises channel-last and keeps (dim,).
    (re.compile(r"(^|\.)layers\.blocks\.\d+\.([01]|[fg](\.net)?)\.0\.[gb]$"), lambda t: t.reshape(-1)),
]


def convert_lucidrains_state_dict(state_dict: Mapping[str, Tensor],
                                  model: Optional[nn.Module] = None) -> dict[str, Tensor]:
    """Map a state dict saved from `axial-attention` 0.6.1 to this package's same-config modules.

    Covers AxialAttention, AxialPositionalEmbedding, ReversibleSequence and AxialImageTransformer
    (reversible or not). With `model` (the model the state dict is for), the conversion decides by module:
    only the keys under those modules of `model` are converted, and only where they do not already fit
    them, so keys of a model's own parts (0.6.1's SelfAttention and PermuteToFrom in a list of your own,
    say) and state dicts of this package pass unchanged; `model.load_state_dict(sd)` does the same by
    itself, through each module's load hook. Without `model` the keys are rewritten by name, which fits a
    state dict of one of those modules alone (or a model holding them and nothing named like their parts).
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of parameter names to tensors, got {type(state_dict).__name__}")
    if model is None:
        return _convert_by_name(state_dict)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be the nn.Module the state dict is for (or None), got {type(model).__name__}")
    converted = dict(state_dict)
    done: list[str] = []  # prefixes of the modules converted, whose submodules come with them
    for name, module in model.named_modules():
        prefix = name + "." if name else ""
        if _lucidrains_class(module) is not None and not any(prefix.startswith(d) for d in done):
            _convert_under(module, converted, prefix)
            done.append(prefix)
    return converted


def _convert_by_name(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    converted = {}
    for key, value in state_dict.items():
        for pattern, transform in _VALUE_RULES:
            if pattern.search(key):
                value = transform(value)
        for pattern, replacement in _KEY_RULES:
            key = pattern.sub(replacement, key)
        converted[key] = value
    return converted


def _lucidrains_class(module: nn.Module) -> Optional[type]:
    """The class of this package among `module`'s that 0.6.1 had too (its state dicts differ), or None.
    Found by name and package, not isinstance: this module is imported by those classes' own modules."""
    return next((c for c in type(module).__mro__ if c.__name__ in _PICKLED
                 and c.__module__.startswith("axial_attention.")), None)


def _convert_under(module: nn.Module, state_dict: dict[str, Any], prefix: str) -> bool:
    """Convert in place the keys under `prefix` (those of `module`) if they are 0.6.1's: only when they do
    not fit the module as they are and the converted ones do. Returns whether it converted."""
    own = [k for k in state_dict if k.startswith(prefix)]
    expected = {prefix + k for k in module.state_dict(keep_vars=True)}
    if not own or set(own) <= expected:
        return False
    converted = {prefix + k: v for k, v in _convert_by_name({k[len(prefix):]: state_dict[k] for k in own}).items()}
    if set(converted) == set(own) or not set(converted) <= expected:
        return False
    for k in own:
        del state_dict[k]
    state_dict.update(converted)
    return True


class LucidrainsConversionWarning(UserWarning):
    """A state dict or a pickled model of `axial-attention` 0.6.1 was converted while loading."""


def convert_lucidrains_on_load(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """load_state_dict pre-hook: convert the keys under `prefix` if they are 0.6.1's, with a warning.

    Converted only when the incoming keys do not already fit the module and the converted ones do, so
    a state dict of this package (or one that fits neither) reaches torch's own checks unchanged.
    """
    if _convert_under(module, state_dict, prefix):
        warnings.warn(
            f"load_state_dict of {type(module).__name__}{' at ' + prefix[:-1] if prefix else ''}: the state dict "
            f"was saved by axial-attention 0.6.1, so its keys were converted with convert_lucidrains_state_dict. "
            f"Save module.state_dict() to keep the converted form.", LucidrainsConversionWarning, stacklevel=3,
        )


# ---------------------------------------------------------------------------------------------------
# Whole models pickled by 0.6.1. Unpickling looks its classes up by module path and name, and finds
# ours (axial_attention.axial_attention.AxialAttention is this package's AxialAttention); their
# __setstate__ hands a 0.6.1 state here, which rebuilds the module from the configuration the state
# implies and loads its converted weights. Children are unpickled (and so converted) before parents.


def _ints(t: Tensor) -> list[int]:
    return [int(s) for s in t.shape]


def _positional_config(legacy: nn.Module) -> dict[str, Any]:
    """0.6.1 kept no configuration, only `param_{i}`: each is 1 but on the embedding axis (dim) and axis i."""
    shapes = [_ints(getattr(legacy, f"param_{i}")) for i in range(legacy.num_axials)]
    total = len(shapes[0])
    for emb in range(1, total):  # the embedding axis: what is left has each table's length on its own axis
        axial = [a for a in range(1, total) if a != emb]
        if all(s[emb] == shapes[0][emb] for s in shapes) and all(
            shapes[j][a] == 1 for i, a in enumerate(axial) for j in range(len(shapes)) if j != i
        ):
            return dict(dim=shapes[0][emb], shape=tuple(s[a] for s, a in zip(shapes, axial)), emb_dim_index=emb)
    raise ValueError(f"cannot read an AxialPositionalEmbedding's configuration from its parameters {shapes}")


def _axial_attention_config(legacy: nn.Module) -> dict[str, Any]:
    first = legacy.axial_attentions[0].fn  # PermuteToFrom(SelfAttention)
    return dict(dim=legacy.dim, num_dimensions=legacy.total_dimensions - 2, heads=first.heads,
                dim_heads=first.dim_heads, dim_index=legacy.dim_index, sum_axial_out=legacy.sum_axial_out)


def _image_transformer_config(legacy: nn.Module) -> dict[str, Any]:
    blocks = legacy.layers.blocks  # our ReversibleSequence's (f, g) blocks, or 0.6.1's Sequential's pairs
    reversible = not isinstance(blocks[0], nn.ModuleList)
    first = blocks[0].f if reversible else blocks[0][0]  # PermuteToFrom(PreNorm(SelfAttention))
    shape = getattr(legacy.pos_emb, "shape", None)
    return dict(dim=first.fn.fn.to_q.in_features, depth=len(blocks) // 2, heads=first.fn.fn.heads,
                dim_heads=first.fn.fn.dim_heads, dim_index=first.permutation[-1], reversible=reversible,
                axial_pos_emb_shape=None if shape is None else tuple(shape))


def _reversible_config(legacy: nn.Module) -> dict[str, Any]:
    return dict(blocks=[(block.f.net, block.g.net) for block in legacy.blocks])  # unwrap 0.6.1's Deterministic


# Our class -> (an attribute only our version has, the configuration of a 0.6.1 instance).
_PICKLED: dict[str, tuple[str, Callable[[nn.Module], dict[str, Any]]]] = {
    "AxialAttention": ("num_dimensions", _axial_attention_config),
    "AxialPositionalEmbedding": ("num_axes", _positional_config),
    "AxialImageTransformer": ("depth", _image_transformer_config),
    "ReversibleSequence": ("preserve_rng_state", _reversible_config),
}


def upgrade_lucidrains_pickle(module: nn.Module, state: dict[str, Any]) -> bool:
    """From a class's __setstate__: if `state` is a 0.6.1 module's, make `module` (still blank) its
    equivalent here, with the same weights, and return True; else return False (unpickle as usual)."""
    ours = _lucidrains_class(module)
    marker, config_of = _PICKLED[ours.__name__]
    if marker in state or "_modules" not in state:
        return False
    legacy = nn.Module.__new__(nn.Module)
    nn.Module.__setstate__(legacy, state)
    config = config_of(legacy)
    with torch.device("meta"):  # no memory and no random numbers: every parameter comes from the pickle
        ours.__init__(module, **config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LucidrainsConversionWarning)
        module.load_state_dict(_convert_by_name(legacy.state_dict(keep_vars=True)), assign=True)
    module.train(legacy.training)
    warnings.warn("A model pickled by axial-attention 0.6.1 was converted to this package's modules while loading; "
                  "save it again (its state_dict, or torch.save(model)) to load it without conversion.",
                  LucidrainsConversionWarning, stacklevel=3)
    return True
