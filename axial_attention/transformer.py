"""The image transformer's module under its earlier name: it is `image_transformer.py` now, so that the name
`transformer` is not mistaken for the Axial Transformer (which is in `autoregressive.py`)."""
# The private classes too: a whole model pickled (torch.save(model)) before the move names them here.
from .image_transformer import (  # noqa: F401
    AxialImageTransformer,
    _ChanLayerNorm,
    _ChanNorm,
    _ConvFeedForward,
    _PreNormAttention,
    _ResidualSequence,
)

__all__ = ["AxialImageTransformer"]
