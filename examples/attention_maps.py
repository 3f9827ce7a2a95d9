"""Draw what one pixel attends to along each axis: a PNG per head, row weights on the left and
column weights on the right, over the input image.

    python examples/attention_maps.py --pixel 20 12 --out attention.png

The layer here is randomly initialised on a fixed random projection of a digit from scikit-learn;
pass `need_weights=True` to any AxialAttention in your own model to get the same maps.
"""
import argparse

import numpy as np
import torch
from PIL import Image

from axial_attention import AxialAttention, AxialPositionalEmbedding


def heat(weights: np.ndarray) -> np.ndarray:
    """Weights in [0, 1] -> RGB uint8 (dark blue to yellow)."""
    w = weights / max(weights.max(), 1e-12)
    return np.stack([w * 255, w * 220, (1 - w) * 120], axis=-1).astype(np.uint8)


def load_image(size: int) -> torch.Tensor:
    from sklearn.datasets import load_digits

    digit = torch.tensor(load_digits().images[0], dtype=torch.float32)[None, None] / 16
    return torch.nn.functional.interpolate(digit, size=(size, size), mode="bilinear", align_corners=False)[0, 0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--pixel", type=int, nargs=2, default=[16, 10], metavar=("ROW", "COL"))
    parser.add_argument("--scale", type=int, default=8, help="pixels per image cell in the PNG")
    parser.add_argument("--out", default="attention.png")
    args = parser.parse_args(argv)
    row, col = args.pixel
    if not (0 <= row < args.size and 0 <= col < args.size):
        raise ValueError(f"--pixel must lie inside the {args.size}x{args.size} image, got {row} {col}")

    torch.manual_seed(0)
    image = load_image(args.size)
    embed = torch.nn.Conv2d(1, args.dim, 3, padding=1)
    pos_emb = AxialPositionalEmbedding(args.dim, (args.size, args.size))
    attn = AxialAttention(args.dim, num_dimensions=2, heads=args.heads, dim_index=1)
    with torch.no_grad():
        _, (along_height, along_width) = attn(pos_emb(embed(image[None, None])), need_weights=True)
    # (batch, heads, H, W, L): what pixel (row, col) gives each position of its column / row
    column_weights = along_height[0, :, row, col]  # (heads, H)
    row_weights = along_width[0, :, row, col]  # (heads, W)

    base = (image.numpy() * 255).astype(np.uint8)
    panels = []
    for h in range(args.heads):
        canvas = np.stack([base] * 3, axis=-1).astype(np.float32) * 0.35
        for name, weights in (("row", row_weights[h]), ("column", column_weights[h])):
            overlay = canvas.copy()
            colours = heat(weights.numpy()).astype(np.float32)
            if name == "row":
                overlay[row, :] = colours
            else:
                overlay[:, col] = colours
            overlay[row, col] = (255, 0, 0)
            panels.append(overlay.astype(np.uint8))
    grid = np.concatenate([np.concatenate(panels[i : i + 2], axis=1) for i in range(0, len(panels), 2)], axis=0)
    picture = Image.fromarray(grid).resize((grid.shape[1] * args.scale, grid.shape[0] * args.scale), Image.NEAREST)
    picture.save(args.out)
    print(f"wrote {args.out}: {args.heads} heads x (row, column) attention of pixel ({row}, {col})")


if __name__ == "__main__":
    main()
