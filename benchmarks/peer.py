"""lucidrains' `axial-attention` 0.6.1, the peer we compare against and convert checkpoints from.

It imports under the same name as this package, so it lives in its own directory (never in the
project's environment) and is imported with that directory first on sys.path, then this package's
modules are put back.
"""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType

PEER_VERSION = "0.6.1"
PEER_DIR = Path(__file__).resolve().parent.parent / ".peer" / f"axial-attention-{PEER_VERSION}"


def ensure_installed(target: Path = PEER_DIR) -> Path:
    if not (target / "axial_attention" / "__init__.py").exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
             f"axial-attention=={PEER_VERSION}"],
            check=True,
        )
    return target


def load_peer(target: Path = PEER_DIR) -> ModuleType:
    """Import the peer package as a module object without disturbing our `axial_attention`."""
    ensure_installed(target)
    ours = {name: mod for name, mod in sys.modules.items() if name.split(".")[0] == "axial_attention"}
    for name in ours:
        del sys.modules[name]
    sys.path.insert(0, str(target))
    try:
        peer = importlib.import_module("axial_attention")
        if not str(Path(peer.__file__)).startswith(str(target)):
            raise ImportError(f"expected the peer from {target}, imported {peer.__file__}")
        peer_modules = {n: m for n, m in sys.modules.items() if n.split(".")[0] == "axial_attention"}
    finally:
        sys.path.remove(str(target))
        for name in [n for n in sys.modules if n.split(".")[0] == "axial_attention"]:
            del sys.modules[name]
        sys.modules.update(ours)
    peer.__peer_modules__ = peer_modules  # keep its submodules alive for pickling/introspection
    return peer
