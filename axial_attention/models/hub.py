"""The Hugging Face Hub's side of model files: repo ids, downloads into the Hub's cache, model cards, the repo.

`huggingface_hub` (the [hub] extra) is imported only inside these functions, so the package imports and
loads local folders without it. This module imports nothing of the package but `_version`: pretrained.py
(`from_pretrained`, `push_to_hub`) calls it, and training/hub.py (`push_run`) builds on both.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._version import __version__

LIBRARY = "axial_attention"  # the card's library_name, and the user agent of downloads
HUB_EXTRA = "pip install 'torch-axial-attention[hub]'"
# The Hub's rules for a repo id (huggingface_hub's validate_repo_id): "name" or "owner/name", each part of
# letters, digits, '-', '_' and '.', starting and ending with a letter, digit or '_', the name at most 96
# characters, no '--' or '..', no '.git' at the end.
_PART = r"\w(?:[\w.-]*\w)?"
_REPO_ID = re.compile(rf"(?:{_PART}/)?{_PART}", flags=re.ASCII)
_COMMIT = re.compile(r"[0-9a-f]{40}")


def import_hub() -> Any:
    """The `huggingface_hub` module, or an ImportError that names the extra to install."""
    try:
        import huggingface_hub
    except ImportError as error:
        raise ImportError(f"the Hugging Face Hub needs huggingface_hub, which is not installed ({error}); "
                          f"install it with: {HUB_EXTRA}") from error
    return huggingface_hub


def is_repo_id(text: str, owner: bool = False) -> bool:
    """Whether `text` is a valid Hub repo id; with `owner`, only "owner/name" (what a download needs to be told
    apart from a mistyped folder)."""
    if not _REPO_ID.fullmatch(text) or (owner and "/" not in text):
        return False
    return len(text.rpartition("/")[2]) <= 96 and "--" not in text and ".." not in text and not text.endswith(".git")


def check_repo_id(repo_id: Any, argument: str = "repo_id") -> str:
    """`repo_id` if it is a valid Hub repo id ("name" or "owner/name"), else a TypeError / ValueError naming it."""
    if not isinstance(repo_id, str):
        raise TypeError(f"{argument} must be a Hub repo id, a str such as 'owner/name', got {type(repo_id).__name__}")
    if not is_repo_id(repo_id):
        raise ValueError(f"{argument} must be a Hub repo id, 'owner/name' or 'name' (letters, digits, '-', '_' and "
                         f"'.'; no '--' or '..'; the name at most 96 characters), got {repo_id!r}")
    return repo_id


def download(repo_id: str, filenames: Sequence[str], *, revision: str | None = None,
             cache_dir: str | os.PathLike[str] | None = None, local_files_only: bool = False,
             token: str | bool | None = None, argument: str = "name_or_folder") -> Path:
    """The folder of the Hub's cache that holds `filenames` of the model repo `repo_id` (one commit: the first
    file's commit pins the others, so a push between the downloads cannot mix two versions).

    Errors name what is missing: FileNotFoundError for a repo, file or cached copy that is not there (offline
    or `local_files_only` with nothing cached included), ValueError for an unknown revision."""
    hub = import_hub()
    from huggingface_hub.utils import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = repo_id if revision is None else f"{repo_id} at revision {revision!r}"
    pinned, folders = revision, []
    for filename in filenames:
        try:
            path = Path(hub.hf_hub_download(repo_id, filename, revision=pinned, cache_dir=cache_dir,
                                            local_files_only=local_files_only, token=token, library_name=LIBRARY,
                                            library_version=__version__))
        except LocalEntryNotFoundError as error:  # (before EntryNotFoundError, its base)
            cache = f"cache_dir {os.fspath(cache_dir)}" if cache_dir is not None else "the default cache"
            raise FileNotFoundError(f"{argument}: {where}: {filename} is not in the Hub's cache ({cache}) and could "
                                    f"not be downloaded ({error})") from error
        except GatedRepoError as error:  # (before RepositoryNotFoundError, its base)
            raise FileNotFoundError(f"{argument}: {repo_id} is a gated repository: accept its conditions on the Hub, "
                                    f"then pass token= or log in ({error})") from error
        except RepositoryNotFoundError as error:
            raise FileNotFoundError(f"{argument}: {repo_id!r} is neither a folder here nor a model repository on the "
                                    f"Hub (a private one needs token= or a login)") from error
        except RevisionNotFoundError as error:
            raise ValueError(f"revision: {repo_id} has no revision {revision!r} ({error})") from error
        except EntryNotFoundError as error:
            raise FileNotFoundError(f"{argument}: {where} has no {filename}: an axial_attention model repository "
                                    f"holds {' and '.join(filenames)} (push_to_hub or `axial-attention push` "
                                    f"writes them)") from error
        folders.append(path.parent)
        if len(folders) == 1:
            commit = path.parent.name  # the cache's snapshots/<commit>/ folder
            if path.parent.parent.name == "snapshots" and _COMMIT.fullmatch(commit):
                pinned = commit
    if len(set(folders)) != 1:
        raise RuntimeError(f"{where}: hf_hub_download put {', '.join(filenames)} into different folders "
                           f"({', '.join(map(str, folders))})")
    return folders[0]


def model_card(repo_id: str, model_type: str, config: Mapping[str, Any], parameters: int, *,
               description: str | None = None, sections: Sequence[tuple[str, str]] = (),
               tags: Sequence[str] = (), pipeline_tag: str | None = None, eval_results: Sequence[Any] = (),
               card_data: Mapping[str, Any] | None = None) -> Any:
    """A `huggingface_hub.ModelCard` for a model saved by save_pretrained: metadata by ModelCardData
    (library_name, tags, pipeline_tag, eval_results as the card's model-index, and `card_data`: any other
    ModelCardData field, e.g. license, datasets, language; its tags join ours), then a text saying what the
    model is, how to load it, `sections` ((title, markdown) pairs) and the architecture (the config)."""
    hub = import_hub()
    extra = dict(card_data.to_dict() if hasattr(card_data, "to_dict") else card_data or {})
    name = repo_id.rpartition("/")[2]
    data = hub.ModelCardData(
        library_name=LIBRARY, pipeline_tag=extra.pop("pipeline_tag", pipeline_tag),
        tags=list(dict.fromkeys(["axial-attention", "pytorch", *tags, *(extra.pop("tags", None) or ())])),
        model_name=extra.pop("model_name", name), eval_results=list(eval_results) or None, **extra)
    text = description or f"An `{model_type}` of axial_attention."
    body = [
        f"# {name}", "", text, "",
        f"Saved by axial_attention {__version__}: `config.json` holds the constructor arguments of `{model_type}`, "
        f"`model.safetensors` its weights ({parameters:,} parameters).", "",
        "## Use", "", "```bash", HUB_EXTRA, "```", "", "```python", f"from axial_attention import {model_type}", "",
        f'model = {model_type}.from_pretrained("{repo_id}")  # in eval mode; device="cuda" to load onto a GPU', "```",
    ]
    for title, markdown in sections:
        body += ["", f"## {title}", "", markdown.strip()]
    body += ["", "## Architecture", "", f"`{model_type}` with these arguments (`config.json`):", "", "```json",
             json.dumps(dict(config), indent=2), "```", ""]
    return hub.ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def create_repo(repo_id: str, *, token: str | bool | None = None, private: bool | None = None,
                revision: str | None = None) -> tuple[Any, str]:
    """An `HfApi` and the full id of model repo `repo_id`, created if it does not exist (private: True / False,
    None for the Hub's default; an existing repo keeps its visibility), with branch `revision` if given."""
    check_repo_id(repo_id)
    if revision is not None and (not isinstance(revision, str) or not revision):
        raise ValueError(f"revision must be a branch name (a non-empty str) or None, got {revision!r}")
    if private is not None and not isinstance(private, bool):
        raise TypeError(f"private must be True, False or None, got {private!r}")
    api = import_hub().HfApi(token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    repo_id = getattr(url, "repo_id", None) or repo_id  # "name" alone becomes "owner/name"
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
    return api, repo_id
