"""How an error spells an option: `--batch-size` to whoever typed the command, `batch_size` to a Python
caller of `train(...)`. The messages are the same sentences; only the caller knows which names it used,
so the command line says so (`command_line()`) and everything else is a Python call."""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_FROM_COMMAND_LINE = contextvars.ContextVar("axial_attention_from_command_line", default=False)


@contextlib.contextmanager
def command_line() -> Iterator[None]:
    """Inside this block, errors name the command's flags."""
    token = _FROM_COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _FROM_COMMAND_LINE.reset(token)


def option(name: str) -> str:
    """Option `name` (TrainConfig's field) as the caller wrote it: `--past-window` or `past_window`."""
    return f"--{name.replace('_', '-')}" if _FROM_COMMAND_LINE.get() else name


def switch(name: str, value: bool = True) -> str:
    """How the caller turns option `name` on (or off): `--resume` / `--no-ema`, or `resume=True`."""
    if _FROM_COMMAND_LINE.get():
        return option(name) if value else f"--no-{name.replace('_', '-')}"
    return f"{name}={value}"
