"""Axial attention over channel-last latents (batch, height, width, dim), e.g. a VAE's latent grid,
with a padding mask for a batch of latents of different sizes.

    python examples/channel_last_latents.py --dim 128

Latents of different sizes are padded to a common grid; the mask (True = valid) keeps the padding
from ever being attended to, so each latent's output equals what it would get on its own.
"""
import argparse

import torch

from axial_attention import AxialAttention, AxialPositionalEmbedding


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 14, 9], help="square latent sizes in the batch")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    side = max(args.sizes)
    pos_emb = AxialPositionalEmbedding(args.dim, shape=(side, side), emb_dim_index=-1)
    attn = AxialAttention(args.dim, num_dimensions=2, heads=args.heads, dim_index=-1).eval()

    latents = [torch.randn(1, s, s, args.dim) for s in args.sizes]
    batch = torch.zeros(len(latents), side, side, args.dim)
    mask = torch.zeros(len(latents), side, side, dtype=torch.bool)
    for i, (latent, s) in enumerate(zip(latents, args.sizes)):
        batch[i, :s, :s] = latent[0]
        mask[i, :s, :s] = True

    with torch.no_grad():
        out = attn(pos_emb(batch), mask=mask)
        for i, (latent, s) in enumerate(zip(latents, args.sizes)):
            alone = attn(pos_emb(latent))
            gap = (out[i, :s, :s] - alone[0]).abs().max().item()
            print(f"latent {s}x{s}: padded-batch output vs alone, max difference {gap:.2e}")
            assert gap < 1e-4, "padding leaked into a latent's attention"


if __name__ == "__main__":
    main()
