"""The layers: attention along the axes of an N-dimensional tensor, and the pieces models stack with it.

  primitive.py            attend_along_axis (the primitive: SDPA along one axis, masks, windows, biases)
  attention.py            AxisAttention, AxialAttention, with rotary.py (rotary positions) and chunking.py
                          (bounded memory: chunks recomputed in backward)
  positional.py           AxialPositionalEmbedding
  reversible.py           ReversibleSequence (two-stream coupling; activation memory flat in depth)
  neighbourhood.py        PastNeighbourhoodAttention (a window of earlier slices, for the video model)
  position_sensitive.py   PositionSensitiveAxialAttention (Axial-DeepLab), its kernels in position_sensitive_kernels.py

Layers import only validation.py, compat/lucidrains_state_dicts.py (their 0.6.1 load hooks) and each other.
"""
from .attention import AxialAttention, AxisAttention
from .neighbourhood import PastNeighbourhoodAttention
from .position_sensitive import PositionSensitiveAxialAttention
from .positional import AxialPositionalEmbedding
from .primitive import attend_along_axis
from .reversible import ReversibleSequence

__all__ = ["AxialAttention", "AxialPositionalEmbedding", "AxisAttention", "PastNeighbourhoodAttention",
           "PositionSensitiveAxialAttention", "ReversibleSequence", "attend_along_axis"]
