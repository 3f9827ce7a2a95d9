"""Axial attention for images, video and any N-dimensional tensor.

layers/ (attention and its companions), models/ (built from the layers), training/ (the `axial-attention`
command and its loop), compat/ (0.6.1 checkpoints and module names, official Axial-DeepLab checkpoints,
earlier module paths); validation.py holds the argument and input checks all of them share.
"""
from ._version import __version__  # noqa: F401  (axial_attention.__version__)
from .compat import convert_axial_deeplab_state_dict, convert_lucidrains_state_dict
from .compat.module_paths import serve_old_paths
from .compat.timm_models import register_timm_models  # imports timm only when called
from .layers import (
    AxialAttention,
    AxialPositionalEmbedding,
    AxisAttention,
    PastNeighbourhoodAttention,
    PositionSensitiveAxialAttention,
    ReversibleSequence,
    attend_along_axis,
)
from .models import (
    AutoregressiveAxialTransformer,
    AxialBlock,
    AxialImageTransformer,
    AxialResNet,
    axial_resnet26s,
    axial_resnet50l,
    axial_resnet50m,
    axial_resnet50s,
)

serve_old_paths()

# 0.6.1's module path axial_attention.axial_attention; importing it runs the installation check
from . import axial_attention  # noqa: E402,F401

# 0.6.1's SelfAttention is exported here too, as in 0.6.1
from .compat.lucidrains_axial_attention import SelfAttention  # noqa: E402

__all__ = [
    "AutoregressiveAxialTransformer",
    "AxialAttention",
    "AxialBlock",
    "AxialImageTransformer",
    "AxialPositionalEmbedding",
    "AxialResNet",
    "AxisAttention",
    "PastNeighbourhoodAttention",
    "PositionSensitiveAxialAttention",
    "ReversibleSequence",
    "SelfAttention",
    "attend_along_axis",
    "axial_resnet26s",
    "axial_resnet50l",
    "axial_resnet50m",
    "axial_resnet50s",
    "convert_axial_deeplab_state_dict",
    "convert_lucidrains_state_dict",
    "register_timm_models",
]
