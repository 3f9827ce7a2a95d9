"""Whole models pickled by axial_attention 0.2.0 (tests/fixtures/make_pickles_0_2_0.py, run at the flat layout
of commit e0d7659) still load and compute what they computed then: a pickle names each class by the module
it was defined in, so every module path 0.2.0 had must keep resolving to the class."""
from pathlib import Path

import pytest
import torch

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
