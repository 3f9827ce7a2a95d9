"""Every module path of 0.2.0 keeps working (compat/module_paths.py): its names import from it, and whole
models pickled by 0.2.0 (tests/fixtures/make_pickles_0_2_0.py, run at the flat layout of commit e0d7659) load
and compute what they computed then; a pickle names each class by the module it was defined in."""
import importlib
import importlib.util
import json
from pathlib import Path

import pytest
import torch

import axial_attention
from axial_attention.compat.module_paths import MOVED

PICKLES = sorted((Path(__file__).parent / "fixtures" / "pickles_0_2_0").glob("*.pt"))


def test_the_fixtures_are_there():
    assert len(PICKLES) == 11, [p.name for p in PICKLES]


@pytest.mark.parametrize("path", PICKLES, ids=lambda p: p.stem)
def test_a_whole_model_pickled_by_0_2_0_loads_and_gives_its_output(path):
    saved = torch.load(path, weights_only=False)
    model = saved["model"].eval()
    with torch.no_grad():
        y = model(*saved["args"])
    torch.testing.assert_close(y, saved["y"], atol=1e-6, rtol=1e-5)


# The names each module of 0.2.0 defined (and, for the package, its training package and the transformer.py shim,
# re-exported), read from commit e0d7659's sources: public names, and private classes, which pickles name; left
# out are Axial-DeepLab's kernel classes (two autograd Functions and a scratch buffer), never part of a model.
NAMES_0_2_0 = json.loads((Path(__file__).parent / "fixtures" / "names_0_2_0.json").read_text())


@pytest.mark.parametrize("module", sorted(NAMES_0_2_0))
def test_every_module_path_of_0_2_0_imports_with_its_names(module):
    imported = importlib.import_module(module)
    missing = [name for name in NAMES_0_2_0[module] if not hasattr(imported, name)]
    assert not missing, f"{module} lacks {missing}"


def test_an_old_path_serves_the_very_objects_of_the_new_module():
    from axial_attention.deeplab import PositionSensitiveAxialAttention
    from axial_attention.reversible import ReversibleBlock, ReversibleSequence

    from axial_attention.layers.position_sensitive import PositionSensitiveAxialAttention as moved

    assert PositionSensitiveAxialAttention is moved
    assert ReversibleSequence is axial_attention.ReversibleSequence
    assert ReversibleBlock.__module__ == "axial_attention.compat.lucidrains_reversible"
    assert "axial_attention.layers.position_sensitive" in importlib.import_module("axial_attention.deeplab").__doc__


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_the_table_names_modules_that_exist_and_no_file_shadows_an_old_path(old, new):
    assert importlib.util.find_spec(new) is not None
    package = Path(axial_attention.__file__).parent
    relative = Path(*old.split(".")[1:])
    assert not (package / relative.with_suffix(".py")).exists() and not (package / relative).is_dir()


def test_an_unknown_name_at_an_old_path_is_an_attribute_error():
    import axial_attention.deeplab as old

    with pytest.raises(AttributeError, match="no_such_name"):
        old.no_such_name  # noqa: B018  (the attribute access is the test)
