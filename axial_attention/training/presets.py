"""The Axial Transformer paper's ImageNet configurations, as presets for `axial-attention train --preset`.

Every number comes from the official configurations released with the paper (Ho et al. 2019, "Axial
Attention in Multidimensional Transformers", arXiv 1912.12180), the files `axial/config_imagenet32.py`
and `axial/config_imagenet64.py` of the google-research/google-research repository:

    official field                      imagenet32   imagenet64   here
    model_config.ardec.emb_dim          1536         2048         dim
    model_config.ardec.num_heads        16           16           heads
    model_config.ardec.num_outer_layers 8            8            depth (the outer decoder)
    model_config.ardec.num_inner_layers 8            8            inner_depth
    model_config.optim.max_lr           1e-4         2e-4         lr
    model_config.optim.ema              0.99995      0.99995      ema, ema_decay
    model_config.optim.optimizer        adam         adam         weight_decay 0 (AdamW without decay is Adam)
    model_config.dropout                0.04         0.0          dropout (residual); attn_dropout 0
    total_bs                            64           64           batch_size (over all processes)
    model_config.img_size               32           64           size; levels 256 (8-bit images)
    model_config.optim.grad_clip_norm   1.0          1.0          the trainer always clips at 1.0
    model_config.optim.warmup           5000         5000         warmup

What the presets cannot carry, so a run with them is the paper's setting only in these fields:
- the schedule after the warm-up: the trainer decays by a cosine to 5% of the peak; the official
  schedule after warm-up is not reproduced.
- `ardec.num_exterior_layers` 8: the official model orders the channels outermost and encodes the
  earlier channels with that stack; this package orders them innermost, which needs no such stack.
- `ardec.hdim_factor` 1, `emb_init_scale` 5.0, `res_init_scale` 1e-10: initialisation and feed-forward
  width of the official code, not exposed by the trainer (its feed-forward is 4x the width).
- The number of training steps is not in the official configurations; `--steps` is yours to set.
- `total_bs` is the batch over all devices, and so is `--batch-size` (images per optimiser step over all
  processes and micro-batches): under torchrun keep 64, each of N processes then takes 64 / N a step.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable, Optional, Sequence

# The shared fields of both presets (see the module docstring for their sources).
_COMMON: dict[str, Any] = {"heads": 16, "depth": 8, "inner_depth": 8, "ema": True, "ema_decay": 0.99995,
                           "weight_decay": 0.0, "attn_dropout": 0.0, "batch_size": 64, "levels": 256, "warmup": 5000}

PRESETS: dict[str, dict[str, Any]] = {
    "imagenet32": {**_COMMON, "dim": 1536, "lr": 1e-4, "dropout": 0.04, "size": 32},
    "imagenet64": {**_COMMON, "dim": 2048, "lr": 2e-4, "dropout": 0.0, "size": 64},
}


def preset(name: str) -> dict[str, Any]:
    """The training options of preset `name` (TrainConfig field names), e.g. `train(**preset("imagenet32"), ...)`."""
    if name not in PRESETS:
        raise ValueError(f"preset: expected one of {', '.join(sorted(PRESETS))}, got {name!r}")
    return dict(PRESETS[name])


def apply_preset(args: argparse.Namespace, argv: Optional[Sequence[str]],
                 build_parser: Callable[[], argparse.ArgumentParser]) -> argparse.Namespace:
    """Fill `args` (parsed from `argv`) with `args.preset`'s options, except those given as flags in `argv`.

    The flags given are found by parsing `argv` again with every default of `train` suppressed, so an
    explicit flag wins even when it repeats the default value.
    """
    if args.command != "train" or getattr(args, "preset", None) is None:
        return args
    options = preset(args.preset)
    quiet = build_parser()
    for action in quiet._actions:  # the `train` sub-parser, with no defaults: only what was typed remains
        if isinstance(action, argparse._SubParsersAction):
            for sub_action in action.choices["train"]._actions:
                sub_action.default = argparse.SUPPRESS
    given = vars(quiet.parse_args(argv))
    for key, value in options.items():
        if key not in given:
            setattr(args, key, value)
    return args
