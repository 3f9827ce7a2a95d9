"""lucidrains' `axial-attention` 0.6.1, module `axial_attention.axial_attention`: its names, for code and
whole pickled models written against it.

0.6.1's public classes are this package's own (`AxialAttention`, `AxialPositionalEmbedding`,
`AxialImageTransformer`, `ReversibleSequence`); its helpers are kept here with their arguments and
semantics, as thin wrappers over this package's code where it has the same piece (SelfAttention runs
on `attend_along_axis`, ChanLayerNorm on the transformer's norm, Deterministic on the reversible
sequence's random-state replay). 0.6.1's `axial_attention.reversible` names that ours lacks
(Deterministic, ReversibleBlock, IrreversibleBlock) are defined here too and served by our
reversible.py. None of our modules depends on anything here.

A package directory rather than `axial_attention.py` on purpose: `pip install axial-attention` over
this package writes its own `axial_attention.py` and `__init__.py`; Python imports this directory
before a module file of the same name, and 0.6.1's `__init__.py` imports `axial_attention.axial_attention`
first, so the installation check below runs (and says how to repair the clash) whichever `__init__.py`
is in place.
"""
from ..installation import check_installation

check_installation()

# 0.6.1's module imports these names too; they stay importable from here.
from operator import itemgetter  # noqa: E402
from types import MappingProxyType  # noqa: E402
from typing import Any, Mapping, Optional, Sequence  # noqa: E402

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.autograd.function import Function  # noqa: E402
from torch.utils.checkpoint import get_device_states, set_device_states  # noqa: E402

from ..attention import AxialAttention, AxisAttention, attend_along_axis  # noqa: E402
from ..image_transformer import AxialImageTransformer, _ChanNorm  # noqa: E402
from ..positional import AxialPositionalEmbedding  # noqa: E402
from ..reversible import ReversibleSequence, _RngState  # noqa: E402
from ..validation import check_input, check_int, describe, normalize_dim_index  # noqa: E402

__all__ = [
    "AxialAttention", "AxialImageTransformer", "AxialPositionalEmbedding", "ChanLayerNorm", "PermuteToFrom",
    "PreNorm", "ReversibleSequence", "SelfAttention", "Sequential", "calculate_permutations", "exists",
    "map_el_ind", "sort_and_return_indices",
]
_NO_ARGS: Mapping[str, Any] = MappingProxyType({})  # 0.6.1's `f_args={}` default, immutable


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


# ---------------------------------------------------------------------------------------------------
# axial_attention.reversible's other names


class Deterministic(nn.Module):
    """net, able to record the random state of one call (record_rng=True) and replay it (set_rng=True)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.cpu_state = None
        self.cuda_in_fwd = None
        self.gpu_devices = None
        self.gpu_states = None

    def record_rng(self, *args: Any) -> None:
        state = _RngState.capture(t for t in args if isinstance(t, Tensor))
        self.cpu_state = state.cpu
        if torch.cuda.is_initialized():
            self.cuda_in_fwd = True
            self.gpu_devices, self.gpu_states = state.cuda_devices, state.cuda

    def forward(self, *args: Any, record_rng: bool = False, set_rng: bool = False, **kwargs: Any) -> Any:
        if record_rng:
            self.record_rng(*args)
        if not set_rng:
            return self.net(*args, **kwargs)
        devices = self.gpu_devices if self.cuda_in_fwd else []
        with _RngState(self.cpu_state, devices, self.gpu_states if self.cuda_in_fwd else []).replay():
            return self.net(*args, **kwargs)


class ReversibleBlock(nn.Module):
    """0.6.1's coupling block on x = cat([x1, x2], dim=1): y1 = x1 + f(x2), y2 = x2 + g(y1), computed
    without gradients; `backward_pass(y, dy)` rebuilds x from y and returns (x, dx)."""

    def __init__(self, f: nn.Module, g: nn.Module) -> None:
        super().__init__()
        self.f = Deterministic(f)
        self.g = Deterministic(g)

    def forward(self, x: Tensor, f_args: Mapping[str, Any] = _NO_ARGS, g_args: Mapping[str, Any] = _NO_ARGS) -> Tensor:
        x1, x2 = torch.chunk(x, 2, dim=1)
        with torch.no_grad():
            y1 = x1 + self.f(x2, record_rng=self.training, **f_args)
            y2 = x2 + self.g(y1, record_rng=self.training, **g_args)
        return torch.cat([y1, y2], dim=1)

    def backward_pass(self, y: Tensor, dy: Tensor, f_args: Mapping[str, Any] = _NO_ARGS,
                      g_args: Mapping[str, Any] = _NO_ARGS) -> tuple[Tensor, Tensor]:
        """Inputs rebuilt from outputs, and the gradient pulled back through the block (parameters
        accumulate theirs in .grad)."""
        y1, y2 = torch.chunk(y, 2, dim=1)
        dy1, dy2 = torch.chunk(dy, 2, dim=1)
        with torch.enable_grad():
            y1 = y1.detach().requires_grad_(True)
            gy1 = self.g(y1, set_rng=True, **g_args)
            torch.autograd.backward(gy1, dy2)
        with torch.no_grad():
            x2 = y2 - gy1
            dx1 = dy1 + y1.grad
        with torch.enable_grad():
            x2.requires_grad_(True)
            fx2 = self.f(x2, set_rng=True, **f_args)
            torch.autograd.backward(fx2, dx1)
        with torch.no_grad():
            x1 = y1 - fx2
            dx2 = dy2 + x2.grad
            return torch.cat([x1, x2.detach()], dim=1), torch.cat([dx1, dx2], dim=1)


class IrreversibleBlock(nn.Module):
    """ReversibleBlock's arithmetic with ordinary autograd: cat([x1 + f(x2), x2 + g(y1)], dim=1)."""

    def __init__(self, f: nn.Module, g: nn.Module) -> None:
        super().__init__()
        self.f = f
        self.g = g

    def forward(self, x: Tensor, f_args: dict, g_args: dict) -> Tensor:
        x1, x2 = torch.chunk(x, 2, dim=1)
        y1 = x1 + self.f(x2, **f_args)
        y2 = x2 + self.g(y1, **g_args)
        return torch.cat([y1, y2], dim=1)
