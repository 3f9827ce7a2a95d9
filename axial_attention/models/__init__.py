"""The models built from the layers.

  image_transformer.py    AxialImageTransformer (a stack of axial blocks, reversible or residual)
  autoregressive.py       AutoregressiveAxialTransformer (Ho et al. 2019), with
    decoder.py              its blocks, sampling.py its cached sampler, pretrained.py save/from_pretrained
  axial_resnet.py         AxialBlock, AxialResNet and the paper's sizes (Axial-DeepLab, Wang et al. 2020)

Models import layers, validation.py and compat/lucidrains_state_dicts.py; nothing here imports training/.
"""
from .autoregressive import AutoregressiveAxialTransformer
from .axial_resnet import AxialBlock, AxialResNet, axial_resnet26s, axial_resnet50l, axial_resnet50m, axial_resnet50s
from .image_transformer import AxialImageTransformer

__all__ = ["AutoregressiveAxialTransformer", "AxialBlock", "AxialImageTransformer", "AxialResNet", "axial_resnet26s",
           "axial_resnet50l", "axial_resnet50m", "axial_resnet50s"]
