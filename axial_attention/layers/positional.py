"""Learned axial positional embeddings: one table per axis, broadcast over the others."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..compat.lucidrains_state_dicts import upgrade_lucidrains_pickle
from ..validation import check_axial_input, check_bool, check_int, check_shape, describe, normalize_dim_index


class AxialPositionalEmbedding(nn.Module):
    """Adds a learned embedding per axial axis to x.

    x: (batch, ...) with len(shape) axial axes and the embedding (size `dim`) at `emb_dim_index`;
    returns x + embedding, same shape. `shape` lists the axial lengths in the order they appear in x.

    axial_dims=None: every axis gets a `dim`-wide table and the tables are summed (0.6.1's behaviour);
    axial_dims=(d1, d2, ...) summing to `dim`: axis i gets a d_i-wide table and they are concatenated,
    which costs sum(L_i * d_i) parameters instead of dim * sum(L_i).
    An input shorter than `shape` along an axis uses the leading part of that axis' table. A longer
    one is an error, unless interpolate=True, which resamples the table linearly to the new length.

    Parameters are `param_{i}` shaped to broadcast against x, as in `axial-attention` 0.6.1, so its
    state dicts load as they are. `emb_dim_index` is what AxialAttention calls `dim_index` (see the axis
    convention in attention.py); it keeps 0.6.1's name, and its default 1, so 0.6.1's code runs unchanged.
    """

    def __init__(
        self,
        dim: int,
        shape: Sequence[int],
        emb_dim_index: int = 1,
        axial_dims: Optional[Sequence[int]] = None,
        interpolate: bool = False,
    ) -> None:
        super().__init__()
        check_int("dim", dim)
        self.dim, self.shape = dim, check_shape("shape", shape)
        self.num_axes = len(shape)
        self.emb_dim_index = normalize_dim_index("emb_dim_index", emb_dim_index, self.num_axes)
        if axial_dims is None:
            widths = (dim,) * self.num_axes
        else:
            axial_dims = check_shape("axial_dims", axial_dims, self.num_axes,
                                     what=f"widths, one width per axis of shape={self.shape}")
            if sum(axial_dims) != dim:
                raise ValueError(
                    f"axial_dims must sum to dim ({dim}), got {tuple(axial_dims)} summing to {sum(axial_dims)}"
                )
            widths = tuple(axial_dims)
        self.concatenate = axial_dims is not None
        self.axial_dims = None if axial_dims is None else widths
        self.interpolate = check_bool("interpolate", interpolate)

        total = self.num_axes + 2
        self.axial_indices = [i for i in range(1, total) if i != self.emb_dim_index]
        for i, (length, width, axis) in enumerate(zip(self.shape, widths, self.axial_indices)):
            param_shape = [1] * total
            param_shape[self.emb_dim_index] = width
            param_shape[axis] = length
            setattr(self, f"param_{i}", nn.Parameter(torch.randn(param_shape)))

    def __setstate__(self, state: dict) -> None:
        if not upgrade_lucidrains_pickle(self, state):  # a whole AxialPositionalEmbedding pickled by 0.6.1
            super().__setstate__(state)

    @property
    def num_axials(self) -> int:
        """0.6.1's name for num_axes."""
        return self.num_axes

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, shape={self.shape}, emb_dim_index={self.emb_dim_index}, "
                f"axial_dims={self.axial_dims}, interpolate={self.interpolate}")

    def _table(self, i: int, length: int) -> Tensor:
        """Axis i's embedding at `length` positions (sliced, or resampled when interpolating)."""
        param, axis = getattr(self, f"param_{i}"), self.axial_indices[i]
        built = self.shape[i]
        if length <= built:
            return param.narrow(axis, 0, length)
        if not self.interpolate:
            raise ValueError(
                f"x has length {length} on axial dim {axis} but {describe(self)} was built for at most "
                f"{built}; pass interpolate=True to resample the embedding"
            )
        table = param.movedim(axis, -1).reshape(1, -1, built)  # (1, width, built)
        table = F.interpolate(table, size=length, mode="linear", align_corners=False)
        out_shape = list(param.shape)
        out_shape[axis] = length
        return table.reshape(*[s for j, s in enumerate(out_shape) if j != axis], length).movedim(-1, axis)

    def embedding(self, sizes: Sequence[int]) -> Tensor:
        """The embedding at axial lengths `sizes`, shaped to broadcast against x (size 1 on the batch axis)."""
        if len(sizes) != self.num_axes:
            raise ValueError(f"sizes must list {self.num_axes} axial lengths, got {tuple(sizes)}")
        tables = [self._table(i, length) for i, length in enumerate(sizes)]
        if not self.concatenate:
            embedding = tables[0]
            for t in tables[1:]:
                embedding = embedding + t  # broadcasts to one example's worth
            return embedding
        full = [1] * (self.num_axes + 2)
        for axis, length in zip(self.axial_indices, sizes):
            full[axis] = length
        expanded = []
        for t in tables:
            full[self.emb_dim_index] = t.shape[self.emb_dim_index]
            expanded.append(t.expand(full))
        return torch.cat(expanded, dim=self.emb_dim_index)

    def forward(self, x: Tensor) -> Tensor:
        check_axial_input(x, self, self.num_axes, self.emb_dim_index, self.dim)
        return x + self.embedding([x.shape[axis] for axis in self.axial_indices]).to(x.dtype)
