"""Axial attention inside a convolutional network, on (batch, channels, height, width) feature maps.

    python examples/image_feature_maps.py --size 64 --channels 64

A conv stem, then residual blocks of axial attention (global context along rows and columns at
O(H*W*(H+W)) cost) with learned axial positional embeddings, then a classifier head.
"""
import argparse
import time

import torch
from torch import nn

from axial_attention import AxialAttention, AxialPositionalEmbedding


class AxialResidualBlock(nn.Module):
    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.norm = nn.GroupNorm(1, channels)
        self.attn = AxialAttention(channels, num_dimensions=2, heads=heads, dim_index=1)

    def forward(self, x):
        return x + self.attn(self.norm(x))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=64, help="input height and width")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--blocks", type=int, default=2)
    args = parser.parse_args(argv)

    feature_size = args.size // 4
    model = nn.Sequential(
        nn.Conv2d(3, args.channels, kernel_size=7, stride=4, padding=3),
        AxialPositionalEmbedding(args.channels, shape=(feature_size, feature_size)),  # emb_dim_index=1
        *[AxialResidualBlock(args.channels, args.heads) for _ in range(args.blocks)],
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(args.channels, 10),
    )
    images = torch.randn(args.batch, 3, args.size, args.size)
    start = time.perf_counter()
    logits = model(images)
    logits.logsumexp(-1).mean().backward()
    print(f"images {tuple(images.shape)} -> feature maps {(args.batch, args.channels, feature_size, feature_size)}"
          f" -> logits {tuple(logits.shape)}; forward+backward {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
