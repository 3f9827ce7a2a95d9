"""A model file as projects written against axial-attention 0.6.1 have them: its own axial layer built
from 0.6.1's helpers. The tests import it under 0.6.1 (in a subprocess) and under this package."""
import torch
from torch import nn

from axial_attention import AxialPositionalEmbedding
from axial_attention.axial_attention import PermuteToFrom, SelfAttention, calculate_permutations


class AxialLayer(nn.Module):
    """Self-attention along each axis of (batch, frames, height, width, dim), summed, then cross-attention
    of every row to a memory sequence."""

    def __init__(self, dim, heads=4, num_dimensions=3, dim_index=-1):
        super().__init__()
        self.pos = AxialPositionalEmbedding(dim, (3, 4, 5), emb_dim_index=dim_index % (num_dimensions + 2))
        self.attns = nn.ModuleList(
            PermuteToFrom(p, SelfAttention(dim, heads)) for p in calculate_permutations(num_dimensions, dim_index)
        )
        self.cross = SelfAttention(dim, heads, dim_heads=6)

    def forward(self, x, memory):
        x = self.pos(x)
        x = x + sum(attn(x) for attn in self.attns)
        rows = x.reshape(x.shape[0], -1, x.shape[-1])
        return x + self.cross(rows, kv=memory).reshape(x.shape)


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 4, 5, 16, generator=g), torch.randn(2, 7, 16, generator=g)
