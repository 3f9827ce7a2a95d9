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


class PeerUnavailable(RuntimeError):
    """The peer is not installed here and pip could not install it (offline, or no package index)."""


def ensure_installed(target: Path = PEER_DIR, timeout_s: float = 300) -> Path:
    """Install the peer into `target` unless it is there; PeerUnavailable (with pip's reason) if that fails."""
    if not (target / "axial_attention" / "__init__.py").exists():
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                   f"axial-attention=={PEER_VERSION}"]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.CalledProcessError as error:
            reason = (error.stderr or error.stdout or "").strip().splitlines()[-1:] or [f"exit {error.returncode}"]
            raise PeerUnavailable(f"pip could not install axial-attention=={PEER_VERSION}: {reason[0]}") from None
        except OSError as error:  # the interpreter itself could not be started
            raise PeerUnavailable(f"pip could not be run to install axial-attention=={PEER_VERSION}: {error}") from None
        except subprocess.TimeoutExpired:
            raise PeerUnavailable(f"pip did not install axial-attention=={PEER_VERSION} within {timeout_s:.0f} s "
                                  f"(no network?)") from None
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
