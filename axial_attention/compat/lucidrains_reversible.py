"""lucidrains' `axial-attention` 0.6.1, module `axial_attention.reversible`, served at that path (see
compat/module_paths.py): this package's reversible sequence under 0.6.1's names, and 0.6.1's other names
(Deterministic, ReversibleBlock, IrreversibleBlock) with their arguments and semantics; Deterministic runs
on the reversible sequence's random-state replay.

The private classes of layers/reversible.py are here too: a whole model pickled by this package 0.2.0
names them at this path.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

import torch
from torch import Tensor, nn
from torch.autograd.function import Function  # noqa: F401  (0.6.1's module imported these names)
from torch.utils.checkpoint import get_device_states, set_device_states  # noqa: F401

from ..layers.reversible import (  # noqa: F401
    CouplingBlock,
    ReversibleSequence,
    _CouplingFunction,
    _RngState,
    _Tape,
)

__all__ = ["Deterministic", "IrreversibleBlock", "ReversibleBlock", "ReversibleSequence"]
_NO_ARGS: Mapping[str, Any] = MappingProxyType({})  # 0.6.1's `f_args={}` default, immutable


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
