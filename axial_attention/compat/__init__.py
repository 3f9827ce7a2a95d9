"""Compatibility: what lets code, checkpoints and installs made for other packages or earlier versions work here.

  lucidrains_state_dicts.py    0.6.1 state dicts and whole pickled models into this package's modules
  lucidrains_axial_attention.py, lucidrains_reversible.py
                               0.6.1's modules `axial_attention.axial_attention` and `.reversible`, name for name
  axial_deeplab.py             the official Axial-DeepLab checkpoints into AxialResNet
  timm_models.py               the Axial-ResNets registered with timm (register_timm_models; timm imported lazily)
  installation.py              the install clash with `axial-attention` (both ship `axial_attention`)
  module_paths.py              this package's own earlier module paths, and 0.6.1's, served at their old names

This package's `__init__` imports only the state-dict converters, which import nothing of the package: the
layers import them (for their load hooks), so importing a layer never runs the 0.6.1 modules, which import
the layers. `axial_attention.compat` was 0.2.0's module for the 0.6.1 converters; its names stay here.
"""
from typing import Any

from . import lucidrains_state_dicts
from .axial_deeplab import convert_axial_deeplab_state_dict
from .lucidrains_state_dicts import LucidrainsConversionWarning, convert_lucidrains_state_dict

__all__ = ["LucidrainsConversionWarning", "convert_axial_deeplab_state_dict", "convert_lucidrains_state_dict"]


def __getattr__(name: str) -> Any:  # 0.2.0's axial_attention.compat's other names
    try:
        return getattr(lucidrains_state_dicts, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
