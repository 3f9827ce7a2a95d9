"""The image transformer's module under its earlier name: it is `image_transformer.py` now, so that the name
`transformer` is not mistaken for the Axial Transformer (which is in `autoregressive.py`)."""
from .image_transformer import AxialImageTransformer

__all__ = ["AxialImageTransformer"]
