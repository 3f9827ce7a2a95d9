"""The layers: attention along the axes of an N-dimensional tensor, and the pieces models stack with it.

  attention.py            attend_along_axis (the primitive: SDPA along one axis), AxisAttention, AxialAttention
  positional.py           AxialPositionalEmbedding
  reversible.py           ReversibleSequence (two-stream coupling; activation memory flat in depth)
  neighbourhood.py        PastNeighbourhoodAttention (a window of earlier slices, for the video model)
  position_sensitive.py   PositionSensitiveAxialAttention (Axial-DeepLab), its kernels in position_sensitive_kernels.py

Layers import only validation.py, compat/lucidrains_state_dicts.py (their 0.6.1 load hooks) and each other.
"""
from .attention import AxialAttention, AxisAttention, attend_along_axis
from .neighbourhood import PastNeighbourhoodAttention
from .position_sensitive import PositionSensitiveAxialAttention
from .positional import AxialPositionalEmbedding
from .reversible import ReversibleSequence

__all__ = ["AxialAttention", "AxialPositionalEmbedding", "AxisAttention", "PastNeighbourhoodAttention",
           "PositionSensitiveAxialAttention", "ReversibleSequence", "attend_along_axis"]
