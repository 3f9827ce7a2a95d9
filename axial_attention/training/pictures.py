"""The PNGs a run writes: sample grids, completion sheets and the learning curves."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

FRAME = 96  # grey between tiles, so dark digits stay separate


def _to_pixels(images: Tensor, levels: int) -> Tensor:
    """Integer images (N, C, H, W) in [0, levels) -> uint8 (N, C, H + 2, W + 2) with a grey frame."""
    pixels = images.long().cpu() * 255 // (levels - 1)
    return F.pad(pixels, (1, 1, 1, 1), value=FRAME).to(torch.uint8)


def save_grid(images: Tensor, levels: int, path: Path, per_row: int) -> None:
    """Images (N, C, H, W) tiled `per_row` to a row (the last row padded with grey), scaled up to
    about 256 pixels so 8x8 digits are visible."""
    from PIL import Image

    pixels = _to_pixels(images, levels)
    n, c, h, w = pixels.shape
    rows = -(-n // per_row)
    if rows * per_row > n:
        pixels = torch.cat([pixels, pixels.new_full((rows * per_row - n, c, h, w), FRAME)])
    grid = pixels.reshape(rows, per_row, c, h, w).permute(0, 3, 1, 4, 2).reshape(rows * h, per_row * w, c).numpy()
    img = Image.fromarray(grid[..., 0] if c == 1 else grid)
    scale = max(1, 256 // max(rows * h, per_row * w))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(path)


def save_completions(originals: Tensor, completions: Tensor, keep: int, levels: int, path: Path) -> None:
    """One row per image: the original, the kept rows (the rest blanked), then its completions.
    originals (N, C, H, W); completions (N, S, C, H, W)."""
    kept = originals.clone()
    kept[:, :, keep:] = 0
    tiles = torch.cat([originals[:, None], kept[:, None], completions], dim=1)  # (N, 2 + S, C, H, W)
    save_grid(tiles.flatten(0, 1), levels, path, per_row=tiles.shape[1])


def save_curves(metrics_path: Path, path: Path, uniform: Optional[float] = None) -> None:
    """Train and test bits/dim against steps, from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    train, test = [], []
    for line in metrics_path.read_text().splitlines():
        record = json.loads(line)
        if "train_bits_per_dim" in record:
            train.append((record["step"], record["train_bits_per_dim"]))
        if "test_bits_per_dim" in record:
            test.append((record["step"], record["test_bits_per_dim"]))
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train (running mean)", color="tab:blue", alpha=0.8)
    if test:
        ax.plot(*zip(*test), "o-", label="test", color="tab:orange")
    if uniform is not None:
        ax.axhline(uniform, color="grey", linestyle=":", label=f"uniform ({uniform:.2f})")
    values = [v for _, v in train + test]
    if values:  # the first steps are far above the rest: keep the interesting range readable
        low, high = min(values), sorted(values)[int(0.9 * (len(values) - 1))]
        ax.set_ylim(low - 0.05 * (high - low + 1e-3), high + 0.25 * (high - low + 1e-3))
    ax.set_xlabel("step")
    ax.set_ylabel("bits/dim")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
