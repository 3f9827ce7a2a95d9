"""Each example script runs, at small sizes, as a user would launch it."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "script, args",
    [
        ("image_feature_maps.py", ["--size", "32", "--channels", "16", "--heads", "2", "--batch", "2"]),
        ("channel_last_latents.py", ["--dim", "16", "--heads", "2", "--sizes", "6", "4"]),
        ("video_causal_time.py", ["--frames", "4", "--size", "6", "--channels", "8", "--heads", "2"]),
        ("attention_maps.py", ["--size", "12", "--dim", "8", "--heads", "2", "--pixel", "5", "3", "--scale", "2"]),
        ("segmentation_backbone.py", ["--steps", "10", "--size", "32", "--width", "0.0625", "--batch", "4",
                                      "--heads", "2", "--threads", "1"]),
    ],
)
def test_example_runs(script, args, tmp_path):
    if script == "attention_maps.py":
        args = [*args, "--out", str(tmp_path / "attention.png")]
    result = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    if script == "segmentation_backbone.py":  # ten steps on the synthetic squares: the loss goes down
        first, last = map(float, re.search(r"loss ([\d.]+) -> ([\d.]+)", result.stdout).groups())
        assert last < first, result.stdout
    if script == "attention_maps.py":
        from PIL import Image

        with Image.open(tmp_path / "attention.png") as png:
            # one row per head (2), each a row panel and a column panel of 12x12 cells, drawn at 2 px a cell
            assert png.size == (2 * 12 * 2, 2 * 12 * 2)
