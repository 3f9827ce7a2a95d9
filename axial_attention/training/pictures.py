"""The pictures a run writes: sample grids (videos as rows of frames, and as a GIF), completion sheets
and the learning curves."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

FRAME = 96  # grey between tiles, so dark digits stay separate
GIF_FRAME_MS = 250


def as_frames(x: Tensor) -> Tensor:
    """(N, C, *axes) -> (N, F, C, H, W), the pictures of each item: an image is one frame, a video its
    frames, a sequence one row of pixels; further leading axes are flattened into frames."""
    if x.ndim == 3:  # a sequence: one row of pixels
        x = x.unsqueeze(2)
    return rearrange(x, "n c ... h w -> n (...) c h w")


def _tile(frames: Tensor, levels: int, per_row: int):
    """Integer frames (N, C, H, W) in [0, levels) -> a PIL image, `per_row` to a row with grey frames
    (the last row padded with grey), scaled up to about 256 pixels so 8x8 digits are visible."""
    from PIL import Image

    pixels = F.pad(frames.long().cpu() * 255 // (levels - 1), (1, 1, 1, 1), value=FRAME).to(torch.uint8)
    n, c, h, w = pixels.shape
    rows = -(-n // per_row)
    if rows * per_row > n:
        pixels = torch.cat([pixels, pixels.new_full((rows * per_row - n, c, h, w), FRAME)])
    grid = rearrange(pixels, "(rows per_row) c h w -> (rows h) (per_row w) c", per_row=per_row).numpy()
    img = Image.fromarray(grid[..., 0] if c == 1 else grid)
    scale = max(1, 256 // max(rows * h, per_row * w), 48 // h)  # small tiles at least ~48 pixels high
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def save_grid(images: Tensor, levels: int, path: Path, per_row: int) -> None:
    """Items (N, C, *axes) as a PNG: images (or sequences) `per_row` to a row; videos one clip per row,
    its frames in order (`per_row` is then ignored)."""
    frames = as_frames(images)
    path.parent.mkdir(parents=True, exist_ok=True)
    _tile(frames.flatten(0, 1), levels, frames.shape[1] if frames.shape[1] > 1 else per_row).save(path)


def save_animation(videos: Tensor, levels: int, path: Path, per_row: int) -> None:
    """Videos (N, C, *axes) as an animated GIF: the clips tiled `per_row` to a row, all playing at once."""
    frames = as_frames(videos)
    pictures = [_tile(frames[:, t], levels, per_row) for t in range(frames.shape[1])]
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=GIF_FRAME_MS, loop=0)


def save_completions(originals: Tensor, completions: Tensor, keep: int, levels: int, path: Path) -> None:
    """originals (N, C, *axes), completions (N, S, C, *axes). Images: one row per image — the original,
    the kept rows (the rest blanked), then its completions. Videos: those as rows of frames, per clip, or
    with a .gif path all of them playing, one row per clip."""
    kept = originals.clone()
    kept[:, :, keep:] = 0
    items = torch.cat([originals[:, None], kept[:, None], completions], dim=1)  # (N, 2 + S, C, *axes)
    if path.suffix.lower() == ".gif":
        save_animation(items.flatten(0, 1), levels, path, per_row=items.shape[1])
    else:
        save_grid(items.flatten(0, 1), levels, path, per_row=items.shape[1])


def curve_limits(train: list[float], test: list[float], uniform: Optional[float]) -> Optional[tuple[float, float]]:
    """The bits/dim axis of the curves: from the lowest value to the 90th percentile of the training curve
    (its first steps are far above the rest), widened to every test point, and to the uniform baseline
    when that is less than the plotted range again above it (a short run's curves start near it)."""
    values = train + test
    if not values:
        return None
    low = min(values)
    high = max([sorted(train)[int(0.9 * (len(train) - 1))]] if train else [], default=low)
    high = max([high, *test])
    if uniform is not None and uniform - high <= max(high - low, 1e-3):
        high = max(high, uniform)
    span = high - low + 1e-3
    return low - 0.05 * span, high + 0.1 * span


def save_curves(metrics_path: Path, path: Path, uniform: Optional[float] = None) -> None:
    """Train and test bits/dim against steps, from metrics.jsonl; for videos a second panel with the test
    bits of frame 1 against the mean of frames 2..T (they separate once the model uses the past)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    train, test, frames = [], [], []
    for line in metrics_path.read_text().splitlines():
        record = json.loads(line)
        if "train_bits_per_dim" in record:
            train.append((record["step"], record["train_bits_per_dim"]))
        if "test_bits_per_dim" in record:
            test.append((record["step"], record["test_bits_per_dim"]))
        if len(record.get("test_bits_per_frame", ())) > 1:
            frames.append((record["step"], record["test_bits_per_frame"]))
    fig, axes = plt.subplots(1, 2 if frames else 1, figsize=(11 if frames else 6, 4), dpi=100, squeeze=False)
    ax = axes[0, 0]
    if train:
        ax.plot(*zip(*train), label="train (running mean)", color="tab:blue", alpha=0.8)
    if test:
        ax.plot(*zip(*test), "o-", label="test", color="tab:orange")
    if uniform is not None:
        ax.axhline(uniform, color="grey", linestyle=":", label=f"uniform ({uniform:.2f})")
    limits = curve_limits([v for _, v in train], [v for _, v in test], uniform)
    if limits:
        ax.set_ylim(*limits)
        if uniform is not None and uniform > limits[1]:  # said where it would be, not drawn off the plot
            ax.annotate(f"uniform {uniform:.2f} (above)", (0.99, 0.98), xycoords="axes fraction", ha="right",
                        va="top", color="grey")
    ax.set_xlabel("step")
    ax.set_ylabel("bits/dim")
    ax.grid(alpha=0.3)
    ax.legend()
    if frames:
        steps = [step for step, _ in frames]
        ax = axes[0, 1]
        ax.plot(steps, [bits[0] for _, bits in frames], "o-", label="frame 1", color="tab:red")
        ax.plot(steps, [sum(bits[1:]) / len(bits[1:]) for _, bits in frames], "o-",
                label=f"frames 2..{len(frames[0][1])} (mean)", color="tab:green")
        ax.set_xlabel("step")
        ax.set_ylabel("test bits per frame")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
