"""Reversible residual sequences: training memory that does not grow with depth.

Two-stream additive coupling (Gomez et al. 2017, "The Reversible Residual Network", arXiv:1707.04585):

    y1 = x1 + f(x2)        x2 = y2 - g(y1)
    y2 = x2 + g(y1)        x1 = y1 - f(x2)

Because every block's inputs can be recomputed from its outputs, the forward keeps no activations:
each block is its own autograd node that saves nothing, and its backward rebuilds its inputs from its
outputs (handed down by the block above through a shared `_Tape`), reruns f and g with the exact random
and autocast state of the forward, and returns the gradients of the inputs *and of the parameters*.
Returning parameter gradients (instead of accumulating them behind autograd's back) is what makes
the parameters train when the input needs no gradient, lets DistributedDataParallel see every
gradient through its usual hooks, and frees each block's gradients as soon as they are accumulated.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import torch
from torch import Tensor, nn

from ..compat.lucidrains_state_dicts import convert_lucidrains_on_load, upgrade_lucidrains_pickle
from ..validation import check_bool, check_bool_pair, describe


class CouplingBlock(nn.Module):
    """One (f, g) pair of a two-stream sequence; g may be None (then y2 = x2)."""

    def __init__(self, f: nn.Module, g: Optional[nn.Module] = None) -> None:
        super().__init__()
        for name, fn in (("f", f), ("g", g)):
            if fn is not None and not isinstance(fn, nn.Module):
                raise TypeError(f"{name} must be an nn.Module (or None for g), got {type(fn).__name__}")
        self.f, self.g = f, g

    def forward(
        self, x1: Tensor, x2: Tensor, arg_route: tuple[bool, bool] = (True, True), **kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        route_f, route_g = arg_route
        y1 = x1 + self.f(x2, **(kwargs if route_f else {}))
        y2 = x2 if self.g is None else x2 + self.g(y1, **(kwargs if route_g else {}))
        return y1, y2


# ---------------------------------------------------------------------------------------------------
# Replaying the forward's random and autocast state


_AUTOCAST_DEVICES = ("cpu", "cuda")


def _autocast_state() -> dict[str, tuple[bool, torch.dtype]]:
    return {d: (torch.is_autocast_enabled(d), torch.get_autocast_dtype(d)) for d in _AUTOCAST_DEVICES}


@contextlib.contextmanager
def _autocast_as(state: dict[str, tuple[bool, torch.dtype]], cache_enabled: bool):
    with contextlib.ExitStack() as stack:
        for device, (enabled, dtype) in state.items():
            if device == "cuda" and not torch.cuda.is_available():
                continue
            stack.enter_context(
                torch.autocast(device_type=device, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)
            )
        yield


@dataclass
class _RngState:
    cpu: Tensor
    cuda_devices: list[int]
    cuda: list[Tensor]

    @classmethod
    def capture(cls, tensors: Iterable[Tensor]) -> _RngState:
        # Only generators already in use can have been consumed; touching CUDA otherwise would initialise it.
        devices = sorted({t.get_device() for t in tensors if t.is_cuda}) if torch.cuda.is_initialized() else []
        return cls(torch.get_rng_state(), devices, [torch.cuda.get_rng_state(d) for d in devices])

    @contextlib.contextmanager
    def replay(self):
        # fork_rng puts the generators back afterwards, so recomputation leaves the user's stream untouched.
        with torch.random.fork_rng(devices=self.cuda_devices):
            torch.set_rng_state(self.cpu)
            for device, state in zip(self.cuda_devices, self.cuda):
                torch.cuda.set_rng_state(state, device)
            yield


@dataclass
class _Tape:
    """What one forward of a ReversibleSequence passes from each block's backward to the one below."""

    kwargs: dict[str, Any]
    preserve_rng_state: bool
    arg_route: tuple[bool, bool]  # whether f, and whether g, gets the kwargs
    outputs: Optional[tuple[Tensor, Tensor]] = None  # the current block's (y1, y2), rebuilt top-down
    owned: tuple[bool, bool] = (False, False)  # whether each was rebuilt here (else it is a saved output)
    rng: list[tuple[Optional[_RngState], Optional[_RngState]]] = field(default_factory=list)


def _call(fn: nn.Module, inp: Tensor, tape: _Tape, kw_names: list[str], kw_values: tuple, which: int) -> Tensor:
    """fn (f: which=0, g: which=1) on inp, with the kwargs if arg_route sends them to it."""
    if not tape.arg_route[which]:
        return fn(inp)
    return fn(inp, **tape.kwargs, **dict(zip(kw_names, kw_values)))


class _CouplingFunction(torch.autograd.Function):
    """One coupling block as an autograd node that keeps no activations.

    Inputs after the streams: the tensors among the kwargs, then the block's parameters, so that the
    node's outputs require grad whenever a parameter does, whatever the input.
    """

    @staticmethod
    def forward(ctx, x1, x2, block, tape, index, is_last, kw_names, n_kw, *tensors):
        kw_values = tensors[:n_kw]
        ctx.block, ctx.tape, ctx.index, ctx.is_last, ctx.kw_names = block, tape, index, is_last, kw_names
        ctx.params = tensors[n_kw:]  # leaves, so holding them here costs nothing
        ctx.kw_tensors = [t.detach() for t in kw_values]  # the caller's tensors: no extra memory
        ctx.autocast, ctx.autocast_cache = _autocast_state(), torch.is_autocast_cache_enabled()
        capture = (lambda: _RngState.capture((x1, x2))) if tape.preserve_rng_state else (lambda: None)
        rng_f = capture()
        y1 = x1 + _call(block.f, x2, tape, kw_names, kw_values, 0)
        rng_g = capture()
        y2 = x2.clone() if block.g is None else x2 + _call(block.g, y1, tape, kw_names, kw_values, 1)
        tape.rng.append((rng_f, rng_g))
        if is_last:
            ctx.save_for_backward(y1, y2)
        return y1, y2

    @staticmethod
    def backward(ctx, dy1, dy2):
        tape: _Tape = ctx.tape
        if ctx.is_last:  # every backward starts here, so retain_graph=True backwards work too
            tape.outputs, tape.owned = tuple(t.detach() for t in ctx.saved_tensors), (False, False)
        (y1, y2), (own1, own2) = tape.outputs, tape.owned
        tape.outputs = None  # let each stream go as soon as the block below no longer needs it
        rng_f, rng_g = tape.rng[ctx.index]
        n_kw = len(ctx.kw_tensors)
        kw = [t.requires_grad_(need) for t, need in zip(ctx.kw_tensors, ctx.needs_input_grad[8 : 8 + n_kw])]
        # Differentiating f and g with respect to all of the block's parameters keeps a parameter shared
        # by f and g correct; autograd answers None for the ones a function does not use.
        wrt = [*ctx.params, *(t for t in kw if t.requires_grad)]
        grads: list[Optional[Tensor]] = [None] * len(wrt)

        def vjp(fn: nn.Module, which: int, inp: Tensor, rng: Optional[_RngState], grad_out: Tensor
                ) -> tuple[Tensor, Tensor]:
            """Recompute fn(inp) exactly as in the forward; return it and grad_out's pull-back to inp."""
            inp = inp.detach().requires_grad_(True)
            with torch.enable_grad(), _autocast_as(ctx.autocast, ctx.autocast_cache):
                with rng.replay() if rng is not None else contextlib.nullcontext():
                    out = _call(fn, inp, tape, ctx.kw_names, kw, which)
            # Outside autocast, as autograd runs any backward: autocast governs the forward ops only.
            d_inp, *d_wrt = torch.autograd.grad(out, [inp, *wrt], grad_out, allow_unused=True)
            for i, g in enumerate(d_wrt):
                if g is not None:
                    grads[i] = g if grads[i] is None else grads[i] + g
            return out.detach(), (torch.zeros_like(inp) if d_inp is None else d_inp)

        def minus(a: Tensor, b: Tensor, owned: bool) -> Tensor:
            # A stream this backward rebuilt is overwritten in place: one stream-sized buffer less at the peak.
            return a.sub_(b) if owned else a - b

        with torch.no_grad():
            if ctx.block.g is None:
                x2, dx1 = y2, dy1
            else:
                gy1, dg = vjp(ctx.block.g, 1, y1, rng_g, dy2)
                x2, dx1, own2 = minus(y2, gy1, own2), dy1 + dg, True
                del y2, gy1, dg
            fx2, df = vjp(ctx.block.f, 0, x2, rng_f, dx1)
            x1, dx2 = minus(y1, fx2, own1), dy2 + df
            del y1, fx2, df
        if ctx.index > 0:
            tape.outputs, tape.owned = (x1, x2), (True, own2)

        param_grads = grads[: len(ctx.params)]
        kw_grads = iter(grads[len(ctx.params) :])
        kw_out = [next(kw_grads) if t.requires_grad else None for t in kw]
        return (dx1, dx2, None, None, None, None, None, None, *kw_out, *param_grads)


class ReversibleSequence(nn.Module):
    """A sequence of reversible two-stream coupling blocks (Gomez et al. 2017).

    blocks: (f, g) pairs of modules mapping a tensor to one of the same shape; g may be None.
        Block i computes y1 = x1 + f(x2), y2 = x2 + g(y1).
    forward(x, arg_route=(True, True), **kwargs): x of any shape -> the same shape. Both streams start as
        x and the output is their mean (as in `axial-attention` 0.6.1). `forward_streams(x1, x2)` runs two
        given streams. kwargs go to every f (if arg_route[0]) and every g (if arg_route[1]), as in 0.6.1;
        tensors among them may require grad and receive it.

    While gradients are needed, activations are recomputed in backward instead of stored, so memory
    does not grow with the number of blocks; the recomputation replays the forward's CPU and CUDA
    random state (dropout gives the same mask) and autocast state. Gradients equal those of running
    the same blocks with plain autograd, up to the rounding of rebuilding inputs from outputs.
    Needs f and g to be deterministic given their input and random state: buffers they update
    (batch-norm statistics) are updated again by the recomputation.
    """

    def __init__(self, blocks: Iterable[Any], preserve_rng_state: bool = True) -> None:
        super().__init__()
        coupled = []
        for i, block in enumerate(blocks):
            if isinstance(block, CouplingBlock):
                coupled.append(block)
                continue
            try:
                f, g = block
            except (TypeError, ValueError):
                raise TypeError(f"blocks[{i}] must be an (f, g) pair of modules, got {type(block).__name__}") from None
            coupled.append(CouplingBlock(f, g))
        if not coupled:
            raise ValueError("blocks must hold at least one (f, g) pair, got none")
        self.blocks = nn.ModuleList(coupled)
        self.preserve_rng_state = check_bool("preserve_rng_state", preserve_rng_state)
        self.register_load_state_dict_pre_hook(convert_lucidrains_on_load)

    def __setstate__(self, state: dict[str, Any]) -> None:
        if not upgrade_lucidrains_pickle(self, state):  # a whole ReversibleSequence pickled by 0.6.1
            super().__setstate__(state)

    def extra_repr(self) -> str:
        return f"blocks={len(self.blocks)}, preserve_rng_state={self.preserve_rng_state}"

    def forward(self, x: Tensor, arg_route: tuple[bool, bool] = (True, True), **kwargs: Any) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        y1, y2 = self.forward_streams(x, x, arg_route, **kwargs)
        return (y1 + y2) * 0.5

    def forward_streams(
        self, x1: Tensor, x2: Tensor, arg_route: tuple[bool, bool] = (True, True), **kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        """Run both streams, (x1, x2) -> (y1, y2), each of x1's shape."""
        arg_route = check_bool_pair("arg_route", arg_route)
        for name, t in (("x1", x1), ("x2", x2)):
            if not isinstance(t, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if x1.shape != x2.shape:
            raise ValueError(f"x1 and x2 must have the same shape for {describe(self)}, got {tuple(x1.shape)} and "
                             f"{tuple(x2.shape)}")
        kw_names = [k for k, v in kwargs.items() if isinstance(v, Tensor)]
        kw_values = [kwargs[k] for k in kw_names]
        needs_grad = any(t.requires_grad for t in (x1, x2, *kw_values, *self.parameters()))
        if not (torch.is_grad_enabled() and needs_grad):
            for block in self.blocks:
                x1, x2 = block(x1, x2, arg_route, **kwargs)
            return x1, x2
        tape = _Tape({k: v for k, v in kwargs.items() if k not in kw_names}, self.preserve_rng_state, arg_route)
        last = len(self.blocks) - 1
        for index, block in enumerate(self.blocks):
            block_params = [p for p in block.parameters() if p.requires_grad]
            x1, x2 = _CouplingFunction.apply(
                x1, x2, block, tape, index, index == last, kw_names, len(kw_values), *kw_values, *block_params
            )
        return x1, x2
