"""Axial attention for images, video and any N-dimensional tensor."""
from .attention import AxialAttention, AxisAttention, attend_along_axis
from .autoregressive import AutoregressiveAxialTransformer
from .axial_resnet import (
    AxialBlock,
    AxialResNet,
    axial_resnet26s,
    axial_resnet50l,
    axial_resnet50m,
    axial_resnet50s,
)
from .compat import convert_lucidrains_state_dict
from .deeplab import PositionSensitiveAxialAttention
from .deeplab_compat import convert_axial_deeplab_state_dict
from .image_transformer import AxialImageTransformer
from .neighbourhood import PastNeighbourhoodAttention
from .positional import AxialPositionalEmbedding
from .reversible import ReversibleSequence

# lucidrains' axial-attention 0.6.1's module surface (its SelfAttention is exported here too, as in 0.6.1)
from .axial_attention import SelfAttention  # noqa: E402  (imports the modules above)

__version__ = "0.2.0"

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
]
