"""Sizing a run to its data and its machine: the trainer's defaults, chosen for the data it is given, and
what a step will need in memory.

`axial-attention train` with no flags but `--data` must run on a laptop (2 cores, 16 GB) for every data
set, not only for the 8x8 digits its first defaults were tuned on. Those defaults (batch 32, width 64,
4 + 4 layers, attention-weight dropout) cost 15.7 GB and 19 s a step on 8-frame 16x16 videos and
13.4 GB on 32x32x3 images (issue 18): attention-weight dropout makes SDPA keep every weight, and the
batch was counted in items however many tokens an item has. So the defaults depend on the tokens per
item (channels x positions):
- small images (at most 256 tokens, e.g. digits 8x8): the tuned main job, unchanged;
- anything larger: fused attention (no attention-weight dropout), two layers per level, lighter residual
  dropout, and a batch of at most 16k tokens a step, a power of two (8 clips of 8 x 16 x 16, 4 images of
  32x32x3);
- videos (three axes or more) also get attention into a 5-wide window of the previous frame
  (past_window, neighbourhood.py), which is what lets the model follow motion (moving digits' speeds
  are at most 2 pixels a frame, so 5 covers them); larger ones width 48 and 800 steps, so that the
  default run on moving digits takes about 15 minutes on 2 CPU cores.
Explicit flags and presets always win (the fields below are None until chosen).
"""
from __future__ import annotations

import math
import re
from typing import Any, Optional, Sequence

import torch
from torch import nn

from ..models.decoder import DecoderBlock

CHOSEN_FOR_DATA = ("steps", "batch_size", "dim", "depth", "dropout", "attn_dropout", "past_window")
SMALL_ITEM_TOKENS = 256
TOKENS_PER_STEP = 16384
MAX_BATCH = 32

SMALL = {"steps": 1200, "batch_size": 32, "dim": 64, "depth": 4, "dropout": 0.3, "attn_dropout": 0.3}
LARGE = {"steps": 1200, "dim": 64, "depth": 2, "dropout": 0.1, "attn_dropout": 0.0}
VIDEO = {"steps": 800, "dim": 48, "past_window": 5}


def data_defaults(image_shape: Sequence[int]) -> dict[str, Any]:
    """The trainer options CHOSEN_FOR_DATA for items of `image_shape` (channels, *axes)."""
    tokens, video = math.prod(image_shape), len(image_shape) > 3
    if tokens <= SMALL_ITEM_TOKENS:
        chosen = dict(SMALL)
    else:
        # a power of two, so that it splits evenly over 2, 4 or 8 processes
        batch = 2 ** int(math.log2(max(1, min(MAX_BATCH, TOKENS_PER_STEP // tokens))))
        chosen = {**LARGE, "batch_size": batch}
    chosen["past_window"] = 0
    if video:
        chosen.update(VIDEO if tokens > SMALL_ITEM_TOKENS else {"past_window": VIDEO["past_window"]})
    return chosen


# Bytes a training step keeps per token, width unit and decoder block (the block's input, norms, q/k/v,
# attention output, the 4x feed-forward, dropout masks), fitted to step peaks measured on the CPU (resident
# memory above the level before the step; issue 18): 8-frame 16x16 clips, width 48, 12 blocks, batch 8:
# 504 MiB (56 bytes); 32x32x3 images, width 64, 6 blocks: 345 MiB at batch 5 (61 bytes), 504 MiB at
# batch 8 (56 bytes).
BYTES_PER_TOKEN_DIM_BLOCK = 60
# The attention weights that attention-weight dropout makes SDPA materialise and keep, per weight. With the
# two figures above, the earlier video defaults (batch 32, width 64, 24 blocks, weight dropout 0.3) come
# to 6.0 GiB against 4.7 GiB measured: the estimate errs on the safe side.
BYTES_PER_ATTENTION_WEIGHT = 4
# The past-slice attention's gathered windows of keys and values, per window entry: the clips above with
# past_window 5 peaked 231 MiB higher (12 bytes).
BYTES_PER_WINDOW_ENTRY = 12


def step_memory(model: nn.Module, batch: int, activation_checkpointing: bool = False) -> int:
    """About how many bytes of activations a training step of `model` (an AutoregressiveAxialTransformer)
    keeps for a (micro-)batch of `batch` items: what decides whether a run fits the machine."""
    tokens, dim = math.prod(model.image_shape), model.token_emb.embedding_dim
    blocks = [m for m in model.modules() if isinstance(m, DecoderBlock)]
    per_block = batch * tokens * dim * BYTES_PER_TOKEN_DIM_BLOCK
    weights = []  # the materialised attention weights of each block with attention-weight dropout
    for block in blocks:
        if block.attn.dropout > 0:
            length = (*model.image_shape[1:-1], model.image_shape[-1] * model.image_shape[0])[block.attn.axis - 1]
            weights.append(batch * block.attn.heads * tokens * length * BYTES_PER_ATTENTION_WEIGHT)
    if activation_checkpointing:  # each block's input, and one block's activations while it is recomputed
        total = len(blocks) * batch * tokens * dim * 4 + per_block + max(weights, default=0)
    else:
        total = len(blocks) * per_block + sum(weights)
    if model.past is not None:
        pixels = tokens // model.image_shape[0]
        total += batch * pixels * model.past.past_slices * model.past.offsets * dim * BYTES_PER_WINDOW_ENTRY
    return total


def available_memory(device: torch.device) -> Optional[int]:
    """Bytes the run may still use on `device`: free GPU memory, or the kernel's MemAvailable (Linux); None
    where it cannot be read."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            return int(re.search(r"MemAvailable:\s+(\d+) kB", f.read()).group(1)) * 1024
    except (OSError, AttributeError):
        return None
