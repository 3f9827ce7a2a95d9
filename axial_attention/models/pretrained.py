"""Model files in the Hugging Face Hub layout: a folder with `config.json` + `model.safetensors`.

`config.json` holds the constructor arguments (plus the model's class name and the file format's
version, so that a folder of another model or a newer format is refused by name instead of failing
somewhere inside `load_state_dict`); `model.safetensors` holds the state dict. It is the layout
`huggingface_hub`'s PyTorchModelHubMixin writes, so a run folder can be pushed to or pulled from the
Hub as it is. A local folder needs neither that package nor the network; `from_pretrained("owner/name")`
and `push_to_hub` do, through hub.py (which imports huggingface_hub when called: the [hub] extra).

Every file is written atomically (a temporary file in the same folder, then a rename), so a crash
mid-write leaves the previous version intact.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, TypeVar, Union

import torch
from torch import nn

from .._version import __version__
from . import hub

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


def read_weights(folder: PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
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
    def from_pretrained(cls: type[ModelT], name_or_folder: PathLike,
                        device: str | torch.device | None = None, *, revision: str | None = None,
                        cache_dir: PathLike | None = None, local_files_only: bool = False,
                        token: str | bool | None = None) -> ModelT:
        """The model saved by `save_pretrained`, in eval mode, on `device` (default CPU), from a folder or the Hub.

        `name_or_folder`: an existing folder loads as it is (no network, no extra). Otherwise a Hub repo id,
        "owner/name": its config.json and model.safetensors are downloaded into the Hub's cache by
        `huggingface_hub.hf_hub_download` (the [hub] extra), with `revision` (a branch, tag or commit; default the
        main branch), `cache_dir`, `local_files_only` (only the cache: no network; so does HF_HUB_OFFLINE=1) and
        `token` (default: the login's, or HF_TOKEN) passed through, and loaded the same way."""
        folder = _model_folder(name_or_folder, revision=revision, cache_dir=cache_dir,
                               local_files_only=local_files_only, token=token)
        if folder is None:
            return cls._load_folder(Path(name_or_folder), device)
        try:
            return cls._load_folder(folder, device)
        except ModelFileError as error:
            where = name_or_folder if revision is None else f"{name_or_folder} at revision {revision!r}"
            raise ModelFileError(f"{where} (the Hub): {error}") from None

    @classmethod
    def _load_folder(cls: type[ModelT], folder: Path, device: str | torch.device | None) -> ModelT:
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

    def push_to_hub(self, repo_id: str, *, token: str | bool | None = None, private: bool | None = None,
                    revision: str | None = None, commit_message: str | None = None,
                    description: str | None = None, card_data: dict[str, Any] | None = None) -> Any:
        """Upload the model to the Hub repo `repo_id` ("owner/name", or "name" under the token's account) in one
        commit: config.json and model.safetensors as save_pretrained writes them, and a README.md model card
        (huggingface_hub's ModelCard: library_name axial_attention, tags, the architecture; `description` its
        first paragraph, `card_data` more ModelCardData fields such as license or datasets).

        The repo is created if missing (`private`: True / False, None for the Hub's default; an existing repo
        keeps its visibility), and branch `revision` too if given. Returns huggingface_hub's CommitInfo (a str:
        the commit's URL; `.oid` its hash). Needs the [hub] extra. For a whole run folder of `axial-attention
        train` (samples, curves, results), use `axial_attention.training.push_run`."""
        import tempfile

        assert isinstance(self, nn.Module)
        api, repo_id = hub.create_repo(repo_id, token=token, private=private, revision=revision)
        with tempfile.TemporaryDirectory(prefix="axial_attention_push_") as tmp:
            folder = self.save_pretrained(tmp)
            card = hub.model_card(repo_id, type(self).__name__, self.config, sum(p.numel() for p in self.parameters()),
                                  description=description or _summary(type(self)), card_data=card_data)
            card.save(folder / "README.md")
            return api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model", revision=revision,
                                     commit_message=commit_message or f"Upload {type(self).__name__}")


def _summary(cls: type) -> str:
    """The first paragraph of the class's docstring: what the card says the model is."""
    doc = (cls.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(line.strip() for line in doc.splitlines()) or f"An `{cls.__name__}` of axial_attention."


def _model_folder(name_or_folder: Any, **download: Any) -> Path | None:
    """None for an existing local folder (loaded as it is); else the Hub cache's folder of the repo it names."""
    argument = "name_or_folder"
    if not isinstance(name_or_folder, (str, os.PathLike)):
        raise TypeError(f"{argument} must be a folder (str or os.PathLike) or a Hub repo id 'owner/name', got "
                        f"{type(name_or_folder).__name__}")
    path = Path(name_or_folder)
    if path.is_dir():
        if download["revision"] is not None:
            raise ValueError(f"revision={download['revision']!r} is for a Hub repo, but {argument} {path} is a "
                             f"local folder (which is loaded as it is); rename or move it to load the repo")
        return None
    if path.exists():
        raise FileNotFoundError(f"{argument}: {path} is a file; pass the folder that holds {CONFIG_NAME} and "
                                f"{WEIGHTS_NAME}")
    if isinstance(name_or_folder, str) and hub.is_repo_id(name_or_folder, owner=True):
        return hub.download(name_or_folder, (CONFIG_NAME, WEIGHTS_NAME), argument=argument, **download)
    raise FileNotFoundError(f"{argument}: {str(name_or_folder)!r} is neither a folder here nor a Hub repo id "
                            f"('owner/name': letters, digits, '-', '_' and '.'); a model folder holds {CONFIG_NAME} "
                            f"and {WEIGHTS_NAME} (written by save_pretrained or `axial-attention train`)")
