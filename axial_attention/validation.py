"""Argument checks for the public classes: every check that more than one of them makes, and every
check of a forward input, lives here; what only one class asks of its arguments stays beside them.

Every message names the argument, what was expected and what came, so a user's mistake never
surfaces as a shape error deep inside torch. Messages about a module's input name the module as
`describe(module)` does: its class and its `extra_repr`, the way `print(model)` shows it. The checks
take the module itself as `owner` and describe it only when they raise, so a forward that passes
builds no string.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import nn


def describe(module: nn.Module) -> str:
    """How error messages name a module: `AxialAttention(dim=8, num_dimensions=2, ...)`, as print(module) does."""
    return f"{type(module).__name__}({module.extra_repr()})"


def check_divisible(name: str, value: int, by_name: str, by: int, hint: str = "") -> None:
    """`value` (the argument `name`) is a multiple of `by` (the argument `by_name`)."""
    if value % by != 0:
        raise ValueError(f"{name} ({value}) must be divisible by {by_name} ({by}){hint}")


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """One of `choices`, e.g. `stem="imagenet"`."""
    if isinstance(value, bool) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} ({value!r})")
    return value


def check_bool_pair(name: str, value: Any) -> tuple[bool, bool]:
    """Two bools, e.g. ReversibleSequence's `arg_route=(True, False)`."""
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(isinstance(v, bool) for v in value):
        raise TypeError(f"{name} must be a pair of bools, got {value!r}")
    return bool(value[0]), bool(value[1])


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_odd(name: str, value: Any) -> int:
    """A positive odd int: a window with a centre and the same reach on each side."""
    check_int(name, value)
    if value % 2 == 0:
        raise ValueError(f"{name} must be odd (a centre and the same reach on each side), got {value}")
    return value


def check_positive_number(name: str, value: Any) -> float:
    """A real number > 0 (a scale such as width_multiplier or temperature)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__} ({value!r})")
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return float(value)


def check_pair(name: str, value: Any) -> tuple[int, int]:
    """An int or a (height, width) pair of positive ints, e.g. `span=56` or `image_size=(224, 320)`."""
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise TypeError(f"{name} must be an int or a (height, width) pair of ints, got {value!r}")
    return check_int(f"{name}[0]", pair[0]), check_int(f"{name}[1]", pair[1])


def check_shape(name: str, value: Any, length: Optional[int] = None, what: str = "axial lengths") -> tuple[int, ...]:
    """A sequence of positive ints (`length` of them when given), e.g. `shape=(64, 64)`."""
    expected = f"{length} {what}" if length is not None else what
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence of {expected}, e.g. (64, 64), got {value!r}")
    if len(value) == 0 or (length is not None and len(value) != length):
        raise ValueError(f"{name} must list {expected}, got {len(value)}: {tuple(value)!r}")
    for i, entry in enumerate(value):
        check_int(f"{name}[{i}]", entry)
    return tuple(value)


def check_probability(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1), got {type(value).__name__} ({value!r})")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return float(value)


def check_axis_flags(name: str, value: Any, num_axes: int) -> tuple[bool, ...]:
    """A bool for every axis, or one bool per axis (e.g. `causal=(True, False, False)`)."""
    if isinstance(value, bool):
        return (value,) * num_axes
    if not isinstance(value, Sequence) or not all(isinstance(v, bool) for v in value):
        raise TypeError(f"{name} must be a bool or a tuple of {num_axes} bools, got {value!r}")
    if len(value) != num_axes:
        raise ValueError(
            f"{name} must have one bool per axial dimension ({num_axes}), got {len(value)}: {tuple(value)!r}"
        )
    return tuple(value)


def check_window(name: str, value: Any) -> Optional[int]:
    """None (attend along the whole axis) or a reach >= 1: keys within `value` positions of the query."""
    return None if value is None else check_int(name, value)


def check_axis_windows(name: str, value: Any, num_axes: int) -> tuple[Optional[int], ...]:
    """One window for every axis (None or an int), or one per axis (e.g. `window=(None, 7, 7)`)."""
    if value is None or isinstance(value, int) and not isinstance(value, bool):
        return (check_window(name, value),) * num_axes
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise TypeError(f"{name} must be None, an int or a tuple of {num_axes} (None or int), got {value!r}")
    if len(value) != num_axes:
        raise ValueError(f"{name} must have one entry per axial dimension ({num_axes}), got {len(value)}: "
                         f"{tuple(value)!r}")
    return tuple(check_window(f"{name}[{i}]", v) for i, v in enumerate(value))


def check_attn_bias(bias: Any, *, name: str, owner: nn.Module, axis: int, query_shape: Sequence[int], heads: int,
                    len_k: int) -> torch.Tensor:
    """An additive attention bias for attention along `axis` of a channel-last query (batch, *axial, channels):
    either (batch, heads, Lq, Lk), shared by every line along the attended axis (AlphaFold's pair bias for row
    attention), or (batch, *axial without `axis`, heads, Lq, Lk); every size 1 or the expected one.
    Returns it in the second form."""
    batch, *axial = query_shape[:-1]
    others = axial[: axis - 1] + axial[axis:]
    full = (batch, *others, heads, axial[axis - 1], len_k)
    shared = (batch, heads, axial[axis - 1], len_k)
    if not isinstance(bias, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(bias).__name__}")
    if not bias.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (added to the scores), got dtype {bias.dtype}")
    given = tuple(bias.shape)
    if bias.ndim == len(shared) and bias.ndim != len(full):
        bias = bias.reshape(bias.shape[0], *(1,) * len(others), *bias.shape[1:])
    if bias.ndim != len(full) or any(got not in (1, want) for got, want in zip(bias.shape, full)):
        raise ValueError(
            f"{name} for attention along axial axis {axis} of {describe(owner)} must be broadcastable to (batch, "
            f"heads, Lq, Lk) = {shared} or (batch, *other axes, heads, Lq, Lk) = {full}; got {given}")
    return bias


def check_chunk_size(name: str, value: Any) -> Optional[int]:
    """None (no chunking) or the most positions a chunk of the bounded-memory path holds."""
    return None if value is None else check_int(name, value)


def normalize_dim_index(name: str, dim_index: Any, num_dimensions: int) -> int:
    """Resolve an embedding-axis index of a (batch, ...) tensor with `num_dimensions` axial axes.

    Index 0 is the batch axis and is refused; negative indices count from the end as usual.
    """
    check_int(name, dim_index, minimum=-(num_dimensions + 1))
    total = num_dimensions + 2
    resolved = dim_index % total
    if dim_index >= total or resolved == 0:
        raise ValueError(
            f"{name} must index a non-batch axis of a {total}-dim input (1..{total - 1} or "
            f"-{total - 1}..-1), got {dim_index}"
        )
    return resolved


def spatial_axis(name: str, value: Any) -> int:
    """The dim of an NCHW map that `value` names: "height" / 2 / -2 -> 2, "width" / 3 / -1 -> 3."""
    by_name, by_index = {"height": 2, "width": 3}, {2: 2, 3: 3, -2: 2, -1: 3}
    if isinstance(value, str) and value in by_name:
        return by_name[value]
    if isinstance(value, int) and not isinstance(value, bool) and value in by_index:
        return by_index[value]
    raise ValueError(f"{name} must be 'height' or 'width' (or 2 / 3, -2 / -1 of NCHW), got {value!r}")


def check_input(
    x: Any, *, name: str, owner: nn.Module, ndim: int, layout: str, dim_index: int, dim: int, or_more: bool = False
) -> None:
    """Check a forward input's type, rank (exactly `ndim`, or at least with `or_more`) and embedding size."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < ndim or (x.ndim > ndim and not or_more):
        expected = f"at least {ndim}" if or_more else f"{ndim}"
        raise ValueError(f"{name} has {x.ndim} dims; {describe(owner)} expects {expected} ({layout}), "
                         f"got shape {tuple(x.shape)}")
    if x.shape[dim_index] != dim:
        raise ValueError(
            f"{name} has size {x.shape[dim_index]} on its embedding axis (dim {dim_index}); {describe(owner)} "
            f"expects {dim}"
            f" (input shape {tuple(x.shape)})"
        )
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    check_dtype(x, name=name, owner=owner)


def check_dtype(x: torch.Tensor, *, name: str, owner: nn.Module) -> None:
    """A floating input must have the dtype of the module's parameters, unless autocast casts for them (as
    nn.Linear would: outside autocast it raises a RuntimeError about m1 and m2 that names neither)."""
    param = next(owner.parameters(), None)
    if param is None or x.dtype == param.dtype or torch.is_autocast_enabled(x.device.type):
        return
    raise TypeError(f"{name} has dtype {x.dtype} but {describe(owner)} has {param.dtype} parameters: cast the "
                    f"input (x.to({param.dtype})) or the module (module.to({x.dtype})), or run under torch.autocast")


def check_axial_input(x: Any, module: nn.Module, num_axes: int, dim_index: int, dim: int) -> None:
    """x of a module taking (batch, `num_axes` axial axes, embedding of size `dim` at `dim_index`)."""
    check_input(x, name="x", owner=module, ndim=num_axes + 2, layout=f"batch, {num_axes} axial, embedding",
                dim_index=dim_index, dim=dim)


def check_mask(mask: Any, expected_shape: Sequence[int], input_description: str) -> None:
    """A padding mask: bool, the input's shape without the embedding axis, True = valid."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a bool torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must have dtype torch.bool (True = valid), got {mask.dtype}")
    if tuple(mask.shape) != tuple(expected_shape):
        raise ValueError(
            f"mask must have the input's shape without the embedding axis, {tuple(expected_shape)}, for "
            f"{input_description}; got {tuple(mask.shape)}"
        )


def check_axial_lengths(x: torch.Tensor, *, name: str, owner: nn.Module, axes: dict[int, str], reason: str) -> None:
    """Every listed axis of x has length >= 1 (`axes` maps a dim of x to its name, e.g. {2: "height"}).

    For modules with convolutions or pooling, which cannot take a zero-length axis; an empty batch is fine.
    """
    for axis, label in axes.items():
        if x.shape[axis] == 0:
            raise ValueError(
                f"{name} has length 0 on its {label} axis (dim {axis}) for {describe(owner)}, which needs every "
                f"axial length >= 1 ({reason}); got shape {tuple(x.shape)}"
            )


def check_levels(x: Any, name: str, shape: tuple[int, ...], layout: str, num_levels: int, owner: nn.Module) -> None:
    """An integer tensor of the given shape (after the batch axis) with values in [0, num_levels)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of integers, got {type(x).__name__}")
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name} must have an integer dtype (e.g. torch.long), got {x.dtype}")
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise ValueError(f"{name} must have shape (batch, {layout}) = (batch, {', '.join(map(str, shape))}) "
                         f"for {describe(owner)}, got {tuple(x.shape)}")
    if x.numel():
        low, high = torch.aminmax(x)  # one pass, and one device sync for both bounds
        low, high = int(low), int(high)
        if low < 0 or high >= num_levels:
            hint = ""
            if low >= 0 and high < 256 and num_levels < 256:  # raw 8-bit images, most likely
                hint = (f"; quantise 8-bit images to the model's levels first: x * {num_levels} // 256, or "
                        f"axial_attention.training.load_images(path, levels={num_levels})")
            raise ValueError(f"{name} values must be in [0, {num_levels}) for {describe(owner)}, "
                             f"got values in [{low}, {high}]{hint}")


def check_generator(generator: Any, device: torch.device) -> Optional[torch.Generator]:
    """None, or a torch.Generator on `device`'s type (a CPU generator cannot drive CUDA sampling)."""
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if generator.device.type != device.type:
        raise ValueError(f"generator is on {generator.device}, the model on {device}: "
                         f"create it with torch.Generator(device={str(device.type)!r})")
    return generator
