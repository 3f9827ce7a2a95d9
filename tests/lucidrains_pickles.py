"""Run under axial-attention 0.6.1 (its directory first on PYTHONPATH): save whole models (torch.save(model)),
their state dicts, inputs and outputs into the directory given, for tests/test_lucidrains.py to load here."""
import sys
from pathlib import Path

import axial_attention
import torch
from axial_attention import AxialAttention, AxialImageTransformer, AxialPositionalEmbedding
from axial_attention.reversible import ReversibleSequence
from torch import nn

import lucidrains_project

MODELS = {  # name: (model factory, input)
    "attention": (lambda: AxialAttention(16, heads=4), lambda: torch.randn(2, 5, 6, 16)),
    "attention_video_sequential": (lambda: AxialAttention(12, 3, heads=3, dim_heads=5, dim_index=2,
                                                          sum_axial_out=False), lambda: torch.randn(1, 4, 12, 3, 5)),
    "positional": (lambda: AxialPositionalEmbedding(8, (5, 6)), lambda: torch.randn(2, 8, 5, 6)),
    "positional_last": (lambda: AxialPositionalEmbedding(8, (4, 5, 1), emb_dim_index=4),
                        lambda: torch.randn(2, 4, 5, 1, 8)),
    "transformer": (lambda: AxialImageTransformer(8, 2, heads=2, axial_pos_emb_shape=(5, 6)),
                    lambda: torch.randn(2, 8, 5, 6)),
    # 0.6.1's transformer runs only channels-first (its convolutions and norm take dim 1)
    "transformer_residual": (lambda: AxialImageTransformer(8, 1, heads=4, dim_heads=3, reversible=False),
                             lambda: torch.randn(2, 8, 5, 6)),
    "reversible": (lambda: ReversibleSequence([(nn.Linear(8, 8), nn.Linear(8, 8)) for _ in range(2)]),
                   lambda: torch.randn(2, 3, 8)),
    "nested": (lambda: nn.Sequential(nn.Conv2d(3, 8, 1), AxialAttention(8, heads=2, dim_index=1),
                                     AxialImageTransformer(8, 1, heads=2)), lambda: torch.randn(2, 3, 4, 5)),
}

if __name__ == "__main__":
    out = Path(sys.argv[1])
    torch.manual_seed(0)
    for name, (factory, make_input) in MODELS.items():
        model, x = factory().eval(), make_input()
        with torch.no_grad():
            y = model(x)
        torch.save(model, out / f"{name}.model.pt")
        torch.save({"state_dict": model.state_dict(), "x": x, "y": y}, out / f"{name}.data.pt")
    model = lucidrains_project.AxialLayer(16).eval()
    x, memory = lucidrains_project.inputs()
    with torch.no_grad():
        y = model(x, memory)
    torch.save(model, out / "project.model.pt")
    torch.save({"state_dict": model.state_dict(), "x": (x, memory), "y": y}, out / "project.data.pt")
    model = lucidrains_project.AxialStack().eval()
    x = lucidrains_project.stack_input()
    with torch.no_grad():
        y = model(x)
    torch.save({"state_dict": model.state_dict(), "x": x, "y": y}, out / "stack.data.pt")
    print(axial_attention.__file__)
