"""lucidrains' `axial-attention` 0.6.1's module `axial_attention.axial_attention`, defined in
compat/lucidrains_axial_attention.py; this directory serves its names at 0.6.1's path (looked up on use,
so the module here and there are one) and runs the installation check.

A package directory rather than `axial_attention.py` on purpose: `pip install axial-attention` over
this package writes its own `axial_attention.py` and `__init__.py`; Python imports this directory
before a module file of the same name, and 0.6.1's `__init__.py` imports `axial_attention.axial_attention`
first, so the installation check below runs (and says how to repair the clash) whichever `__init__.py`
is in place.
"""
from ..compat.installation import check_installation

check_installation()

from typing import Any  # noqa: E402

from ..compat import lucidrains_axial_attention, lucidrains_reversible  # noqa: E402

__all__ = lucidrains_axial_attention.__all__
# 0.2.0 defined 0.6.1's other reversible names here; whole models it pickled name them at this path.
_REVERSIBLE = ("Deterministic", "IrreversibleBlock", "ReversibleBlock")


def __getattr__(name: str) -> Any:
    return getattr(lucidrains_reversible if name in _REVERSIBLE else lucidrains_axial_attention, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *dir(lucidrains_axial_attention), *_REVERSIBLE})
