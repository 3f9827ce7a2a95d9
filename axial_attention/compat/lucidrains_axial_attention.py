"""lucidrains' `axial-attention` 0.6.1, module `axial_attention.axial_attention`: its names, for code and
whole pickled models written against it (served at that path by axial_attention/axial_attention/).

0.6.1's public classes are this package's own (`AxialAttention`, `AxialPositionalEmbedding`,
`AxialImageTransformer`, `ReversibleSequence`); its helpers are kept here with their arguments and
semantics, as thin wrappers over this package's code where it has the same piece (SelfAttention runs
on `attend_along_axis`, ChanLayerNorm on the transformer's norm). None of the layers or models depends
on anything here.
"""
from __future__ import annotations

# 0.6.1's module imports these names too; they stay importable from here.
from operator import itemgetter
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from ..layers.attention import AxialAttention, AxisAttention
from ..layers.positional import AxialPositionalEmbedding
from ..layers.primitive import attend_along_axis
from ..layers.reversible import ReversibleSequence
from ..models.image_transformer import AxialImageTransformer, _ChanNorm
from ..validation import check_input, check_int, describe, normalize_dim_index

__all__ = [
    "AxialAttention", "AxialImageTransformer", "AxialPositionalEmbedding", "ChanLayerNorm", "PermuteToFrom",
    "PreNorm", "ReversibleSequence", "SelfAttention", "Sequential", "calculate_permutations", "exists",
    "map_el_ind", "sort_and_return_indices",
]


# ---------------------------------------------------------------------------------------------------
# helper functions


def exists(val: Any) -> bool:
    return val is not None


def map_el_ind(arr: Sequence, ind: int) -> list:
    """The `ind`-th element of each item of arr."""
    return list(map(itemgetter(ind), arr))


def sort_and_return_indices(arr: Sequence) -> tuple[list, list]:
    """(sorted arr, the indices that sort it); for a permutation the second is its inverse."""
    pairs = sorted(zip(arr, range(len(arr))))
    return map_el_ind(pairs, 0), map_el_ind(pairs, 1)


def calculate_permutations(num_dimensions: int, emb_dim: int) -> list[list[int]]:
    """For each axial axis of a (batch, ...) tensor with `num_dimensions` axial axes and the embedding at
    `emb_dim`: the permutation that moves that axis and then the embedding to the end, the others in order."""
    check_int("num_dimensions", num_dimensions)
    total = num_dimensions + 2
    emb_dim = normalize_dim_index("emb_dim", emb_dim, num_dimensions)
    return [[d for d in range(total) if d not in (axial, emb_dim)] + [axial, emb_dim]
            for axial in range(1, total) if axial != emb_dim]


# ---------------------------------------------------------------------------------------------------
# helper classes


class ChanLayerNorm(nn.Module):
    """0.6.1's channel norm: (x - mean) / (std + eps) * g + b over dim 1 of (batch, dim, ...); g and b are
    (1, dim, 1, 1) as in 0.6.1. The arithmetic is the image transformer's feed-forward norm."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.b = nn.Parameter(torch.zeros(1, dim, 1, 1))

    def extra_repr(self) -> str:
        return f"dim={self.g.shape[1]}, eps={self.eps}"

    def forward(self, x: Tensor) -> Tensor:
        g, b = self.g.reshape(-1).to(x.dtype), self.b.reshape(-1).to(x.dtype)
        return _ChanNorm.apply(x.movedim(1, -1), g, b, self.eps).movedim(-1, 1)


class PreNorm(nn.Module):
    """fn(LayerNorm(x)), the norm over the last axis."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(self.norm(x))


class Sequential(nn.Module):
    """0.6.1's non-reversible stack: for each (f, g) of blocks, x = x + f(x), then x = x + g(x)."""

    def __init__(self, blocks: Sequence[Sequence[nn.Module]]) -> None:
        super().__init__()
        self.blocks = blocks

    def forward(self, x: Tensor) -> Tensor:
        for f, g in self.blocks:
            x = x + f(x)
            x = x + g(x)
        return x


class PermuteToFrom(nn.Module):
    """Permute x by `permutation` (the attended axis, then the embedding, last), fold every other axis
    into the batch, run fn on (batch', length, dim), and restore x's layout."""

    def __init__(self, permutation: Sequence[int], fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        _, inv_permutation = sort_and_return_indices(permutation)
        self.permutation = permutation
        self.inv_permutation = inv_permutation

    def forward(self, x: Tensor, **kwargs: Any) -> Tensor:
        if x.ndim != len(self.permutation):
            raise ValueError(f"x has {x.ndim} dims, PermuteToFrom(permutation={list(self.permutation)}) expects "
                             f"{len(self.permutation)}")
        axial = x.permute(*self.permutation)
        shape = axial.shape
        out = self.fn(axial.reshape(-1, *shape[-2:]), **kwargs)
        return out.reshape(*shape[:-1], out.shape[-1]).permute(*self.inv_permutation).contiguous()


# ---------------------------------------------------------------------------------------------------
# attention


class SelfAttention(AxisAttention):
    """0.6.1's attention over a sequence: x (batch, length, dim) -> (batch, length, dim).

    kv: (batch, length_kv, dim) to take keys and values from instead of x (cross-attention).
    `AxisAttention` along axis 1 with 0.6.1's arguments: dim_heads defaults to dim // heads (no
    divisibility rule), and the parameters `to_q`, `to_kv`, `to_out` are 0.6.1's.
    """

    def __init__(self, dim: int, heads: int, dim_heads: Optional[int] = None) -> None:
        check_int("dim", dim)
        check_int("heads", heads)
        super().__init__(dim, 1, heads, dim // heads if dim_heads is None else dim_heads)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, dim_heads={self.dim_heads}"

    def __setstate__(self, state: dict) -> None:
        if "axis" not in state:  # pickled by 0.6.1: the attributes AxisAttention has and it had not
            state = {**state, "dim": state["_modules"]["to_q"].in_features, "axis": 1, "causal": False,
                     "dropout": 0.0}
        super().__setstate__(state)

    def forward(self, x: Tensor, kv: Optional[Tensor] = None) -> Tensor:
        layout = f"batch, length, {self.dim}"
        check_input(x, name="x", owner=self, ndim=3, layout=layout, dim_index=-1, dim=self.dim)
        if kv is not None:
            check_input(kv, name="kv", owner=self, ndim=3, layout=layout, dim_index=-1, dim=self.dim)
            if kv.shape[0] != x.shape[0]:
                raise ValueError(f"kv has batch {kv.shape[0]} but x has {x.shape[0]} for {describe(self)}")
        k, v = self.project_kv(x if kv is None else kv)
        dropout_p = self.dropout if self.training else 0.0
        return self.to_out(attend_along_axis(self.to_q(x), k, v, 1, self.heads, dropout_p=dropout_p))
