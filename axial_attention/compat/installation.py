"""The install clash with lucidrains' `axial-attention`: both distributions ship the package `axial_attention`.

Installing `axial-attention` after this package (`torch-axial-attention`) overwrites our `__init__.py`
with its own (and its `reversible.py` hides our `axial_attention.reversible`, an old path served by
module_paths.py); uninstalling it then deletes `__init__.py`. pip says nothing, so the import
says it: `check_installation()` runs once per process from `axial_attention/axial_attention/`, the one
file of ours that 0.6.1's `__init__.py` imports and cannot overwrite. It costs one metadata lookup
(~0.1 ms) when `axial-attention` is absent; only when it is present does it read the two
distributions' file lists to say what happened and how to repair it.
"""
from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import json
import shlex
import sys
import warnings
from base64 import urlsafe_b64encode
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlparse

OURS = "torch-axial-attention"
THEIRS = "axial-attention"
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the axial_attention package, where both install files


class InstallationClashWarning(UserWarning):
    """`axial-attention` is installed beside this package and shares its files."""


def _pip(*args: str) -> str:
    """The pip command for this interpreter (a bare `pip` may belong to another environment)."""
    return " ".join([shlex.quote(sys.executable), "-m", "pip", *args])


def _reinstall_spec(ours: metadata.Distribution) -> Optional[str]:
    """What to reinstall this package from (None: an editable install, whose files pip never touched)."""
    try:
        direct = json.loads(ours.read_text("direct_url.json") or "null")
    except ValueError:
        direct = None
    if not direct:  # from an index
        return f"{OURS}=={ours.version}"
    if direct.get("dir_info", {}).get("editable"):
        return None
    url = direct.get("url", "")
    if "vcs_info" in direct:
        vcs = direct["vcs_info"]
        return shlex.quote(f"{vcs.get('vcs', 'git')}+{url}@{vcs.get('commit_id', '')}")
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
        return shlex.quote(str(path)) if path.exists() else f"{OURS}=={ours.version}"
    return shlex.quote(url)


def _overwritten(theirs: metadata.Distribution, ours: Optional[metadata.Distribution]) -> list[str]:
    """The files both distributions install here that are, byte for byte, axial-attention's right now."""
    shared = {Path(str(entry.locate())).resolve() for entry in (ours.files or [])} if ours else set()
    found = []
    for entry in theirs.files or []:
        path = Path(str(entry.locate())).resolve()
        if path.parent != PACKAGE_DIR or path not in shared or not entry.hash or not path.is_file():
            continue
        digest = urlsafe_b64encode(hashlib.new(entry.hash.mode, path.read_bytes()).digest()).rstrip(b"=").decode()
        if digest == entry.hash.value:
            found.append(path.name)
    return sorted(found)


def clash_message(theirs: metadata.Distribution) -> str:
    """What happened and the command that repairs it."""
    try:
        ours: Optional[metadata.Distribution] = metadata.distribution(OURS)
    except metadata.PackageNotFoundError:
        ours = None
    overwritten = _overwritten(theirs, ours)
    what = (
        f"{THEIRS} {theirs.version} (lucidrains' package) is installed beside "
        f"{OURS + ' ' + ours.version if ours else 'this axial_attention'}, and both install the Python package "
        f"axial_attention. "
    )
    if overwritten:
        what += (f"Its files replaced this package's {', '.join(overwritten)}, so `import axial_attention` runs "
                 f"a mix of the two. ")
    else:
        what += f"Uninstalling {THEIRS} would delete files it shares with this package. "
    spec = _reinstall_spec(ours) if ours else None
    fix = _pip("uninstall", "-y", THEIRS)
    if spec is not None:
        fix += " && " + _pip("install", "--force-reinstall", "--no-deps", spec)
    return what + f"Code written for {THEIRS} 0.6.1 runs on this package alone. To repair, run:\n    {fix}"


def check_installation() -> None:
    """Warn (InstallationClashWarning) if `axial-attention` is installed too."""
    try:
        theirs = metadata.distribution(THEIRS)
    except metadata.PackageNotFoundError:
        return
    warnings.warn(clash_message(theirs), InstallationClashWarning, stacklevel=2)
