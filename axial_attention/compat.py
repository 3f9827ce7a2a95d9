"""Load checkpoints of lucidrains' `axial-attention` 0.6.1 into this package's modules."""
from __future__ import annotations

import re
from typing import Callable, Mapping

from torch import Tensor

# (pattern, replacement) applied to every key in turn; `(^|\.)` lets a rule match a module nested
# anywhere inside a user's model. AxialPositionalEmbedding keeps 0.6.1's `param_{i}` names and needs none.
_KEY_RULES: list[tuple[re.Pattern[str], str]] = [
    # AxialAttention: 0.6.1 wraps each axis' SelfAttention in PermuteToFrom(.fn); ours holds it directly.
    (re.compile(r"(^|\.)axial_attentions\.(\d+)\.fn\."), r"\1axial_attentions.\2."),
    # AxialImageTransformer: its `layers.blocks.{i}` are (f, g) pairs, held by 0.6.1 as a ModuleList
    # (reversible=False: `.0.`/`.1.`) or in Deterministic wrappers (reversible=True: `.f.net.`/`.g.net.`).
    (re.compile(r"(^|\.)layers\.blocks\.(\d+)\.0\.(?=fn\.|0\.[gb]$|[13]\.(weight|bias)$)"), r"\1layers.blocks.\2.f."),
    (re.compile(r"(^|\.)layers\.blocks\.(\d+)\.1\.(?=fn\.|0\.[gb]$|[13]\.(weight|bias)$)"), r"\1layers.blocks.\2.g."),
    (re.compile(r"(^|\.)layers\.blocks\.(\d+)\.([fg])\.net\."), r"\1layers.blocks.\2.\3."),
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
    (re.compile(r"(^|\.)layers\.blocks\.\d+\.([01]|[fg]\.net)\.0\.[gb]$"), lambda t: t.reshape(-1)),
]


def convert_lucidrains_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map a state dict saved from `axial-attention` 0.6.1 to the same-config module of this package.

    Covers AxialAttention, AxialPositionalEmbedding and AxialImageTransformer (reversible or not),
    alone or nested in a larger model.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of parameter names to tensors, got {type(state_dict).__name__}")
    converted = {}
    for key, value in state_dict.items():
        for pattern, transform in _VALUE_RULES:
            if pattern.search(key):
                value = transform(value)
        for pattern, replacement in _KEY_RULES:
            key = pattern.sub(replacement, key)
        converted[key] = value
    return converted
