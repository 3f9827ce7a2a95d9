"""Old module paths, served at their old names: the one table of where each module went.

A pickle names every class by the module it was defined in (`axial_attention.attention.AxialAttention` for a
model pickled by 0.2.0), and users' code imports from the paths it knew; both keep working. Importing an old
path gives a small module of that name whose attributes are the new module's (PEP 562 `__getattr__`), so
`from axial_attention.deeplab import PositionSensitiveAxialAttention` gets the very class, and nothing is
imported until an old path is.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
from typing import Any, Optional, Sequence

# old module -> the module that now holds its names
MOVED = {
    # 0.6.1's module paths that are not a file of this package (axial_attention.axial_attention is a directory)
    "axial_attention.reversible": "axial_attention.compat.lucidrains_reversible",
    "axial_attention.transformer": "axial_attention.models.image_transformer",
    # 0.2.0's flat layout
    "axial_attention.attention": "axial_attention.layers.attention",
    "axial_attention.positional": "axial_attention.layers.positional",
    "axial_attention.neighbourhood": "axial_attention.layers.neighbourhood",
    "axial_attention.deeplab": "axial_attention.layers.position_sensitive",
    "axial_attention.image_transformer": "axial_attention.models.image_transformer",
    "axial_attention.autoregressive": "axial_attention.models.autoregressive",
    "axial_attention.decoder": "axial_attention.models.decoder",
    "axial_attention.sampling": "axial_attention.models.sampling",
    "axial_attention.pretrained": "axial_attention.models.pretrained",
    "axial_attention.axial_resnet": "axial_attention.models.axial_resnet",
    "axial_attention.deeplab_compat": "axial_attention.compat.axial_deeplab",
    "axial_attention.installation": "axial_attention.compat.installation",
    # axial_attention.compat (0.2.0's 0.6.1 converters) is the compat package, which keeps its names
}


class _OldPathFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Optional[Sequence[str]] = None,
                  target: Optional[types.ModuleType] = None) -> Optional[importlib.machinery.ModuleSpec]:
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

    def exec_module(self, module: types.ModuleType) -> None:
        new = importlib.import_module(MOVED[module.__name__])

        def __getattr__(name: str) -> Any:
            return getattr(new, name)

        module.__doc__ = f"Moved to {new.__name__} (see axial_attention/compat/module_paths.py)."
        module.__getattr__ = __getattr__
        module.__dir__ = lambda: dir(new)
        module.__all__ = list(getattr(new, "__all__", [n for n in vars(new) if not n.startswith("_")]))


def serve_old_paths() -> None:
    """Put the finder on sys.meta_path (once per process)."""
    if not any(isinstance(finder, _OldPathFinder) for finder in sys.meta_path):
        sys.meta_path.append(_OldPathFinder())
