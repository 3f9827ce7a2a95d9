"""Axial attention for images, video and any N-dimensional tensor."""
from .attention import AxialAttention, AxisAttention, attend_along_axis
from .autoregressive import AutoregressiveAxialTransformer
from .compat import convert_lucidrains_state_dict
from .positional import AxialPositionalEmbedding
from .reversible import ReversibleSequence
from .transformer import AxialImageTransformer

__all__ = [
    "AutoregressiveAxialTransformer",
    "AxialAttention",
    "AxialImageTransformer",
    "AxialPositionalEmbedding",
    "AxisAttention",
    "ReversibleSequence",
    "attend_along_axis",
    "convert_lucidrains_state_dict",
]
