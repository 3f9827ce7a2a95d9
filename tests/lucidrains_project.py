"""A model file as projects written against axial-attention 0.6.1 have them: its own axial layer built
from 0.6.1's helpers. The tests import it under 0.6.1 (in a subprocess) and under this package."""
import torch
from torch import nn

from axial_attention import AxialAttention, AxialPositionalEmbedding
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


class AxialStack(nn.Module):
    """A public project's layout: its own blocks, each with its own `axial_attentions` list of
    PermuteToFrom(SelfAttention) (keys `axial_attns.0.axial_attentions.0.fn.to_q.weight`, the same names
    0.6.1's AxialAttention gives its sublayers), beside a real AxialAttention whose 0.6.1 keys do need
    converting. Input (batch, dim, height, width)."""

    class Block(nn.Module):
        def __init__(self, dim, heads):
            super().__init__()
            self.axial_attentions = nn.ModuleList(
                PermuteToFrom(p, SelfAttention(dim, heads)) for p in calculate_permutations(2, 1))

        def forward(self, x):
            return x + sum(attn(x) for attn in self.axial_attentions)

    def __init__(self, dim=16, heads=4, depth=2):
        super().__init__()
        self.axial_attns = nn.ModuleList(self.Block(dim, heads) for _ in range(depth))
        self.mixer = AxialAttention(dim, 2, heads=heads, dim_index=1)

    def forward(self, x):
        for block in self.axial_attns:
            x = block(x)
        return x + self.mixer(x)


def stack_input(seed=0):
    return torch.randn(2, 16, 4, 5, generator=torch.Generator().manual_seed(seed))


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 4, 5, 16, generator=g), torch.randn(2, 7, 16, generator=g)
