"""What a classifier needs to serve as a backbone by timm's model contract, written without timm: the global
pooling of its head (timm's pool types), the choice of intermediate features (timm's `indices`: last n, or a
list with negative entries from the end), a stage's blocks under gradient checkpointing (timm's
`set_grad_checkpointing`) and the checks of those arguments.

`AxialResNet` (axial_resnet.py) builds its `forward_head`, `reset_classifier`, `forward_intermediates`,
`prune_intermediate_layers` and checkpointed stages from these; timm itself is needed only to register the
models (compat/timm_models.py).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Optional, Union

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

POOL_TYPES = ("avg", "max", "avgmax", "catavgmax", "")
Indices = Optional[Union[int, Sequence[int]]]


def check_pool_type(name: str, pool_type: object, num_classes: int) -> str:
    """A timm pool type: "avg", "max", "avgmax" (their mean), "catavgmax" (both, concatenated: twice the
    features) or "" (no pooling, the map itself: only without a classifier)."""
    if not isinstance(pool_type, str):
        raise TypeError(f"{name} must be one of {POOL_TYPES} (a str), got {type(pool_type).__name__} {pool_type!r}")
    if pool_type not in POOL_TYPES:
        raise ValueError(f"{name} must be one of {POOL_TYPES}, got {pool_type!r}")
    if pool_type == "" and num_classes:
        raise ValueError(
            f"{name}='' (no pooling: the head returns the feature map) needs num_classes=0, got num_classes="
            f"{num_classes}; pool with 'avg', 'max', 'avgmax' or 'catavgmax' to classify"
        )
    return pool_type


def take_indices(num_features: int, indices: Indices, name: str = "indices") -> tuple[list[int], int]:
    """Which of `num_features` features to return, as timm's `feature_take_indices` reads `indices`:
    None: all; an int n: the last n; a sequence: those indices, negative ones counted from the end.
    Returns the indices from the start, in the order given, and the largest of them."""
    if indices is None:
        indices = num_features
    if isinstance(indices, bool):
        raise TypeError(f"{name} must be None, an int (the last n features) or a sequence of ints, got a bool")
    if isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ValueError(
                f"{name}={indices} asks for the last {indices} features; there are {num_features} "
                f"(give 1 to {num_features}, or a list of indices)"
            )
        taken = list(range(num_features - indices, num_features))
    elif isinstance(indices, Sequence) and not isinstance(indices, str):
        if not indices:
            raise ValueError(f"{name} must name at least one feature, got an empty {type(indices).__name__}")
        taken = []
        for index in indices:
            if isinstance(index, bool) or not isinstance(index, int):
                raise TypeError(f"{name} must hold ints, got {type(index).__name__} {index!r} in {indices!r}")
            absolute = num_features + index if index < 0 else index
            if not 0 <= absolute < num_features:
                raise ValueError(
                    f"{name} holds {index}, out of range for {num_features} features "
                    f"(0 to {num_features - 1}, or -{num_features} to -1 from the end)"
                )
            taken.append(absolute)
    else:
        raise TypeError(
            f"{name} must be None, an int (the last n features) or a sequence of ints, "
            f"got {type(indices).__name__} {indices!r}"
        )
    return taken, max(taken)


class GlobalPool(nn.Module):
    """Global pooling of a classifier head: (batch, channels, height, width) -> (batch, channels * feat_mult)
    ("catavgmax" doubles the channels), or the map unchanged for pool_type "" (no pooling)."""

    def __init__(self, pool_type: str = "avg") -> None:
        super().__init__()
        self.pool_type = check_pool_type("global_pool", pool_type, 0)

    @property
    def feat_mult(self) -> int:
        return 2 if self.pool_type == "catavgmax" else 1

    def extra_repr(self) -> str:
        return repr(self.pool_type)

    def forward(self, x: Tensor) -> Tensor:
        if not self.pool_type:
            return x
        if self.pool_type == "avg":
            return x.mean((2, 3))
        if self.pool_type == "max":
            return x.amax((2, 3))
        mean, peak = x.mean((2, 3)), x.amax((2, 3))
        return 0.5 * (mean + peak) if self.pool_type == "avgmax" else torch.cat((mean, peak), 1)


def run_stage(stage: nn.Module, x: Tensor, checkpointing: bool) -> Tensor:
    """A stage (an nn.Sequential of blocks) on x; with `checkpointing` and grad enabled, each block is recomputed
    in backward instead of keeping its activations (timm's grad checkpointing: one block's at a time).

    The recomputation runs with every norm's momentum at 0 (batch norms, and the similarity norms of the
    position-sensitive attention, which lerp their running variance by their `momentum`), so running
    statistics move once per step, exactly as without checkpointing (a plain checkpoint would update them a
    second time in backward)."""
    if not (checkpointing and torch.is_grad_enabled()) or not isinstance(stage, nn.Sequential):
        return stage(x)  # (a stage prune_intermediate_layers replaced is an Identity: nothing to keep)
    for block in stage:
        x = checkpoint(block, x, use_reentrant=False,
                       context_fn=lambda block=block: (nullcontext(), _norm_statistics_frozen(block)))
    return x


@contextmanager
def _norm_statistics_frozen(module: nn.Module) -> Iterator[None]:
    norms = [m for m in module.modules() if m.training and hasattr(m, "momentum")
             and (not isinstance(m, nn.modules.batchnorm._BatchNorm) or m.track_running_stats)]
    # a batch norm also counts its batches (its average when momentum is None): restored too
    saved = [(m.momentum, m.num_batches_tracked.clone() if hasattr(m, "num_batches_tracked") else None)
             for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch statistic: unchanged, exactly
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved):
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)
