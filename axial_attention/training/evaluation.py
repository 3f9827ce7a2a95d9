"""What a run measures and shows: test bits/dim (per frame for video), completions and sample grids."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
from einops import rearrange, repeat
from torch import Tensor, nn

from ..models.autoregressive import AutoregressiveAxialTransformer
from .devices import cpu_threads
from .pictures import save_animation, save_grid

EVAL_TOKENS = 256 * 64  # tokens per evaluation batch: 256 digits, 8 clips of 8 x 16 x 16


@torch.no_grad()
def evaluate_bits(model: nn.Module, images: Tensor, labels: Optional[Tensor],
                  rank: int = 0, world: int = 1, batch: Optional[int] = None) -> tuple[float, list[float]]:
    """Mean bits/dim over `images` in float32, and the mean bits of each slice of the first axis (each
    frame of a video, each row of an image) given the slices before it; each rank scores its shard and all
    ranks get the totals. `batch`: items per forward pass (default: about 16k tokens, 256 digits)."""
    batch = batch or max(1, EVAL_TOKENS // images[0].numel())
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = torch.zeros(1 + images.shape[2], dtype=torch.float64, device=device)  # count, bits of each slice
    for part in torch.arange(rank, len(images), world).split(batch):
        y = None if labels is None else labels[part].to(device)
        total[1:] += model.bits_per_slice(images[part].to(device), y).double().sum(0)
        total[0] += len(part)
    model.train(was_training)
    if world > 1:
        dist.all_reduce(total)
    per_slice = total[1:] / total[0]
    return float(per_slice.sum() / images[0].numel()), per_slice.tolist()


def evaluate_bits_per_dim(model: nn.Module, images: Tensor, labels: Optional[Tensor],
                          rank: int = 0, world: int = 1, batch: Optional[int] = None) -> float:
    """Mean bits/dim over `images` (see `evaluate_bits`)."""
    return evaluate_bits(model, images, labels, rank, world, batch)[0]


def format_frames(per_frame: list[float]) -> str:
    """One line: the bits of each frame, and the later frames' mean against the first's."""
    line = f"bits per frame: {', '.join(f'{b:.1f}' for b in per_frame)}"
    if len(per_frame) > 1 and per_frame[0] > 0:
        later = sum(per_frame[1:]) / (len(per_frame) - 1)
        line += f"   (frames 2..{len(per_frame)}: {later / per_frame[0]:.2f} of frame 1's)"
    return line


def frame_record(model: AutoregressiveAxialTransformer, per_slice: list[float]) -> dict:
    """What a video run logs beside its bits/dim: the test bits of each frame (empty for images: their
    slices are rows, which all cost alike only by accident)."""
    return {"test_bits_per_frame": per_slice} if model.num_axes > 2 else {}


def completions_of(model: AutoregressiveAxialTransformer, originals: Tensor, labels: Optional[Tensor], keep: int,
                   samples: int, temperature: float = 1.0, generator: Optional[torch.Generator] = None) -> Tensor:
    """`samples` completions of each of `originals` (N, C, *axes), its first `keep` slices kept:
    (N, samples, C, *axes) on the CPU. Labels are used only by a class-conditional model."""
    repeated = repeat(originals, "n ... -> (n samples) ...", samples=samples).to(model.device)
    if labels is not None and model.num_classes is not None:
        labels = repeat(labels, "n -> (n samples)", samples=samples).to(model.device)
    else:
        labels = None
    with cpu_threads(model.device):
        completed = model.complete(repeated, keep, labels, temperature, generator)
    return rearrange(completed, "(n samples) ... -> n samples ...", samples=samples).cpu()


def save_samples(model: AutoregressiveAxialTransformer, path: Path, per_row: int, seed: int,
                 test: tuple[Tensor, Optional[Tensor]], continued: int = 4) -> None:
    """Images (or sequences): a PNG grid, one row of samples per class (class-conditional) or a square
    grid. Videos (more than two axes): one sampled clip per class (or `per_row` clips without labels),
    then `continued` test clips, each followed by two continuations sampled from its first frame: a row
    of frames per clip in the PNG, and all of them playing in a GIF beside it."""
    generator = torch.Generator(device=model.device).manual_seed(seed)
    video = model.num_axes > 2
    per_class = 1 if video else per_row
    count = per_class * (model.num_classes or per_row)
    labels = None
    if model.num_classes is not None:
        labels = torch.arange(model.num_classes, device=model.device).repeat_interleave(per_class)
    with cpu_threads(model.device):
        items = model.sample(count, labels=labels, generator=generator).cpu()
    if video:
        clips, clip_labels = test[0][:continued], None if test[1] is None else test[1][:continued]
        continuations = completions_of(model, clips, clip_labels, 1, 2, generator=generator)
        items = torch.cat([items, torch.cat([clips[:, None], continuations], dim=1).flatten(0, 1)])
    save_grid(items, model.num_levels, path, per_row)
    if video:
        save_animation(items, model.num_levels, path.with_suffix(".gif"), per_row=3)
