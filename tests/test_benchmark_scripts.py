"""The benchmark scripts run (--quick), and the DeepLab benchmark times each closure in its own mode."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks.deeplab import step_fn

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("part", ["forward", "profile"])
def test_deeplab_benchmark_runs_quick(part):
    done = subprocess.run([sys.executable, "-m", "benchmarks.deeplab", "--quick", "--part", part], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Machine: CPU")
    assert "|---|" in done.stdout and "Results: not written" in done.stdout


def test_each_timed_closure_runs_its_model_in_its_mode():
    # The eval and training closures of one model alternate: building the training one must not leave
    # the eval one timing a training-mode forward (as it once did).
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(10))
    x, y = torch.randn(2, 3, 6, 6), torch.tensor([1, 2])
    modes = []
    model[1].register_forward_hook(lambda module, args, out: modes.append(module.training))
    evaluate, train = step_fn(model, "eval", x, y), step_fn(model, "train", x, y)
    evaluate(), train(), evaluate()
    assert modes == [False, True, False]
