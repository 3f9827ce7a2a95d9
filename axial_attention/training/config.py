"""What a run is: `TrainConfig` (the flags of `axial-attention train`), its checks, and the errors a run raises."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..models.autoregressive import POSITION_SCHEMES
from .defaults import CHOSEN_FOR_DATA, data_defaults
from .options import option


class RunError(ValueError):
    """A run folder or flag that cannot be used as asked; the message names the file or flag."""


class NonFiniteLossError(RuntimeError):
    """Training stopped on a NaN/inf loss; the last good checkpoint is left as it was."""


@dataclass
class TrainConfig:
    """Everything `axial-attention train` takes (same names as its flags)."""

    data: str = "digits"
    video: bool = False
    levels: Optional[int] = None
    size: Optional[int] = None
    out: Optional[str] = None  # default: runs/<data set name>, e.g. runs/digits
    # None: chosen for the data (defaults.py): the digits' tuned values, lighter ones for larger items
    steps: Optional[int] = None
    batch_size: Optional[int] = None
    grad_accum: int = 1
    lr: float = 2e-3
    warmup: Optional[int] = None  # steps; None: 10% of --steps, at most 100
    weight_decay: float = 0.1
    dim: Optional[int] = None
    heads: int = 4
    dim_heads: Optional[int] = None  # None: dim // heads
    depth: Optional[int] = None
    inner_depth: Optional[int] = None
    dropout: Optional[float] = None
    attn_dropout: Optional[float] = None
    past_window: Optional[int] = None  # 0: off
    past_slices: int = 1
    pos_emb: str = "learned"  # or "rotary"
    activation_checkpointing: bool = False
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    compile: bool = False
    ema: bool = True
    ema_decay: float = 0.998
    eval_every: int = 250
    eval_items: Optional[int] = None  # test items scored by each evaluation (None: all)
    log_every: int = 25
    checkpoint_every: int = 250
    samples_per_row: int = 10
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.out is None:
            self.out = str(Path("runs") / (Path(self.data.rstrip("/\\")).stem or "data"))

    def for_data(self, image_shape: Sequence[int]) -> TrainConfig:
        """This configuration with the options left as None chosen for items of `image_shape`."""
        chosen = data_defaults(image_shape)
        return dataclasses.replace(self, **{k: chosen[k] for k in CHOSEN_FOR_DATA if getattr(self, k) is None})


def check_config(config: TrainConfig, world: int) -> None:
    positive = ("steps", "batch_size", "grad_accum", "dim", "heads", "depth", "eval_every", "log_every",
                "checkpoint_every", "samples_per_row", "dim_heads", "eval_items")
    optional = ("dim_heads", "eval_items")
    for name in positive:
        value = getattr(config, name)
        if value is None and name in optional:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RunError(f"{option(name)} must be a positive integer, got {value!r}")
    if config.batch_size % (world * config.grad_accum):
        raise RunError(f"{option('batch_size')} ({config.batch_size}) must be divisible by processes x "
                       f"{option('grad_accum')} ({world} x {config.grad_accum})")
    if not config.lr > 0:
        raise RunError(f"{option('lr')} must be > 0, got {config.lr}")
    for name in ("dropout", "attn_dropout", "ema_decay"):
        if not 0.0 <= getattr(config, name) < 1.0:
            raise RunError(f"{option(name)} must be in [0, 1), got {getattr(config, name)}")
    if config.past_window < 0 or (config.past_window and config.past_window % 2 == 0):
        raise RunError(f"{option('past_window')} must be 0 (off) or odd (a centre and the same reach on each side), "
                       f"got {config.past_window}")
    if config.pos_emb not in POSITION_SCHEMES:
        raise RunError(f"{option('pos_emb')} must be one of {', '.join(map(repr, POSITION_SCHEMES))}, "
                       f"got {config.pos_emb!r}")
    if config.warmup is not None and config.warmup < 0:
        raise RunError(f"{option('warmup')} must be >= 0 steps, got {config.warmup}")
