"""Model files in the Hugging Face Hub layout: a folder with `config.json` + `model.safetensors`.

`config.json` holds the constructor arguments (plus the model's class name and the file format's
version, so that a folder of another model or a newer format is refused by name instead of failing
somewhere inside `load_state_dict`); `model.safetensors` holds the state dict. It is the layout
`huggingface_hub`'s PyTorchModelHubMixin writes, so a run folder can be pushed to or pulled from the
Hub as it is, but nothing here needs that package or the network.

Every file is written atomically (a temporary file in the same folder, then a rename), so a crash
mid-write leaves the previous version intact.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar, Union

import torch
from torch import nn

from .._version import __version__

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1

PathLike = Union[str, "os.PathLike[str]"]
ModelT = TypeVar("ModelT", bound="PretrainedMixin")


class ModelFileError(ValueError):
    """A model file that exists but cannot be used (another model, a newer format, truncated): the
    message names the file and what is wrong with it."""


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(temporary_path)`, then move the result over `path` in one rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_config(folder: PathLike, model_type: str) -> dict[str, Any]:
    """The constructor arguments stored in `folder/config.json`, checked to describe `model_type`."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; a model folder holds {CONFIG_NAME} and {WEIGHTS_NAME} "
                                f"(written by save_pretrained or `axial-attention train`)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ModelFileError(f"{path}: expected a JSON object of constructor arguments, got {type(config).__name__}")
    found = config.pop("model_type", None)
    if found != model_type:
        raise ModelFileError(f"{path}: describes a model of type {found!r}, not {model_type!r}")
    version = config.pop("format_version", None)
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ModelFileError(f"{path}: format_version {version!r} is not one this package reads (1..{FORMAT_VERSION}); "
                             f"it was written by another version of axial_attention")
    config.pop("package_version", None)
    return config


def read_weights(folder: PathLike, device: Union[str, torch.device] = "cpu") -> dict[str, torch.Tensor]:
    """The state dict stored in `folder/model.safetensors`."""
    from safetensors.torch import load_file

    path = Path(folder) / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; a model folder holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        return load_file(path, device=str(device))
    except Exception as error:  # safetensors raises its own error types for truncated or foreign files
        raise ModelFileError(f"{path}: not a readable safetensors file ({error}); was it truncated?") from None


class PretrainedMixin:
    """`save_pretrained(folder)` / `from_pretrained(folder)` for a module whose constructor arguments are
    JSON values, recorded in `self.config` by its `__init__`."""

    config: dict[str, Any]

    def save_pretrained(self, folder: PathLike) -> Path:
        """Write `folder/config.json` and `folder/model.safetensors` (weights on the CPU); returns the folder."""
        from safetensors.torch import save_file

        assert isinstance(self, nn.Module)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {name: t.detach().to("cpu").contiguous() for name, t in self.state_dict().items()}
        write_atomically(folder / WEIGHTS_NAME, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
        config = {"model_type": type(self).__name__, "format_version": FORMAT_VERSION,
                  "package_version": __version__, **self.config}
        text = json.dumps(config, indent=2) + "\n"
        write_atomically(folder / CONFIG_NAME, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        return folder

    @classmethod
    def from_pretrained(cls: type[ModelT], folder: PathLike,
                        device: Optional[Union[str, torch.device]] = None) -> ModelT:
        """The model saved in `folder` by `save_pretrained`, in eval mode, on `device` (default CPU)."""
        folder = Path(folder)
        config = read_config(folder, cls.__name__)
        try:
            model = cls(**config)
        except TypeError as error:  # an unknown or missing argument
            raise ModelFileError(f"{folder / CONFIG_NAME}: does not match {cls.__name__}'s arguments "
                                 f"({error})") from None
        except ValueError as error:
            raise ModelFileError(f"{folder / CONFIG_NAME}: invalid arguments for {cls.__name__} ({error})") from None
        assert isinstance(model, nn.Module)
        state = read_weights(folder)
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            first = str(error).strip().splitlines()
            raise ModelFileError(f"{folder / WEIGHTS_NAME}: does not fit the model in {CONFIG_NAME} "
                                 f"({' '.join(line.strip() for line in first[:3])})") from None
        return model.to(device or "cpu").eval()
