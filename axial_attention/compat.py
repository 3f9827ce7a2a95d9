"""Load checkpoints of lucidrains' `axial-attention` 0.6.1 into this package's modules."""
from __future__ import annotations

import re
from typing import Mapping

from torch import Tensor

# (pattern, replacement) applied to every key in turn; `(^|\.)` lets a rule match a module nested
# anywhere inside a user's model. AxialPositionalEmbedding keeps 0.6.1's `param_{i}` names and needs none.
_KEY_RULES: list[tuple[re.Pattern[str], str]] = [
    # AxialAttention: 0.6.1 wraps each axis' SelfAttention in PermuteToFrom(.fn); ours holds it directly.
    (re.compile(r"(^|\.)axial_attentions\.(\d+)\.fn\."), r"\1axial_attentions.\2."),
]


def convert_lucidrains_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map a state dict saved from `axial-attention` 0.6.1 to the same-config module of this package.

    Covers AxialAttention and AxialPositionalEmbedding, alone or nested in a larger model.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of parameter names to tensors, got {type(state_dict).__name__}")
    converted = {}
    for key, value in state_dict.items():
        for pattern, replacement in _KEY_RULES:
            key = pattern.sub(replacement, key)
        converted[key] = value
    return converted
