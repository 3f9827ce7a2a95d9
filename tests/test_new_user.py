"""What a new user tripped over (issue: samples and the trainer as a new user meets them), one test each:
run folders usable from any directory, Python callers told Python names, one --batch-size rule, raw
8-bit images explained, class names by name, extending a finished run, every flag explained, a shorter
evaluation, readable curves, an ambiguous .npy named."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from axial_attention import AutoregressiveAxialTransformer
from axial_attention.training import RunError, load_images, presets, train
from axial_attention.training.cli import build_parser
from axial_attention.training.cli import main as cli
from axial_attention.training.pictures import curve_limits

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--dim", "8", "--heads", "2", "--depth", "1", "--batch-size", "4", "--samples-per-row", "2", "--no-progress",
        "--device", "cpu", "--steps", "2"]
PY_TINY = dict(dim=8, heads=2, depth=1, batch_size=4, samples_per_row=2, progress=False, device="cpu")

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py


def png_folder(root: Path, classes=("cats", "dogs"), per_class: int = 5) -> Path:
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.random.default_rng(10 * k + i).integers(0, 256, (8, 8), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> Path:
    """A run trained on a folder named relative to the directory it was trained from."""
    base = tmp_path_factory.mktemp("relative")
    png_folder(base / "pngs")
    with pytest.MonkeyPatch.context() as m:
        m.chdir(base)
        assert cli(["train", "--data", "pngs", "--out", "run", *TINY]) == 0
    return base / "run"


def test_a_run_on_a_relative_folder_is_evaluated_and_completed_from_another_directory(folder_run, tmp_path,
                                                                                     monkeypatch, capsys):
    recorded = json.loads((folder_run / "results.json").read_text())["args"]["data"]
    assert Path(recorded).is_absolute() and Path(recorded).is_dir()
    monkeypatch.chdir(tmp_path)  # nothing called pngs here
    assert cli(["evaluate", str(folder_run), "--device", "cpu"]) == 0
    assert cli(["complete", str(folder_run), "--keep", "4", "--num", "1", "--samples", "1", "--device", "cpu",
                "--out", str(tmp_path / "c.png")]) == 0
    assert "test bits/dim" in capsys.readouterr().out


def test_class_names_are_recorded_and_sample_takes_them(folder_run, tmp_path, capsys):
    assert json.loads((folder_run / "results.json").read_text())["class_names"] == ["cats", "dogs"]
    assert load_images(str(folder_run.parent / "pngs")).class_names == ("cats", "dogs")
    assert cli(["sample", str(folder_run), "--labels", "dogs", "cats", "--num", "2", "--device", "cpu",
                "--out", str(tmp_path / "s.png")]) == 0
    assert cli(["sample", str(folder_run), "--labels", "lions", "--num", "1", "--device", "cpu",
                "--out", str(tmp_path / "t.png")]) == 2
    err = capsys.readouterr().err
    assert "'lions' is not a class of this run (its classes: cats, dogs)" in err


def test_python_callers_are_told_python_arguments_and_the_cli_its_flags(tmp_path, capsys):
    train(out=str(tmp_path / "run"), steps=1, **PY_TINY)
    with pytest.raises(RunError) as error:
        train(out=str(tmp_path / "run"), steps=1, **PY_TINY)
    message = str(error.value)
    assert "resume=True" in message and "overwrite=True" in message and "--" not in message
    with pytest.raises(RunError, match=r"^lr must be > 0"):
        train(out=str(tmp_path / "other"), lr=0.0, **PY_TINY)
    assert cli(["train", "--out", str(tmp_path / "run"), *TINY]) == 2
    assert "pass --resume to continue it, --overwrite to start it again" in capsys.readouterr().err


def test_batch_size_means_one_thing_in_the_help_the_presets_and_the_docs():
    train_parser = build_parser()._subparsers._group_actions[0].choices["train"]
    help_text = next(a.help for a in train_parser._actions if "--batch-size" in a.option_strings)
    assert "over all processes" in help_text
    for text in (presets.__doc__, (ROOT / "docs" / "autoregressive.md").read_text()):
        batch_lines = [line for line in text.splitlines() if "total_bs" in line or "batch-size" in line]
        assert batch_lines and not [line for line in batch_lines if "divide" in line or "per process" in line]


def test_raw_8_bit_images_are_told_how_to_quantise():
    model = AutoregressiveAxialTransformer((1, 4, 4), 17, dim=8, heads=2, depth=1)
    raw = torch.full((1, 1, 4, 4), 200, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"got values in \[200, 200\]; quantise 8-bit images .*load_images"):
        model.bits_per_dim(raw)


def test_resume_extends_a_finished_run_and_refuses_to_shorten_it(tmp_path):
    out = str(tmp_path / "run")
    train(out=out, steps=2, **PY_TINY)
    results = train(out=out, steps=4, resume=True, **PY_TINY)
    assert results["steps"] == 4
    assert torch.load(tmp_path / "run" / "training_state.pt", weights_only=True)["step"] == 4
    with pytest.raises(RunError, match=r"is at step 4, past steps 3"):
        train(out=out, steps=3, resume=True, **PY_TINY)


def test_dim_heads_is_a_flag_and_every_flag_is_explained(tmp_path):
    assert cli(["train", "--out", str(tmp_path / "run"), *TINY, "--heads", "3", "--dim-heads", "4"]) == 0
    assert AutoregressiveAxialTransformer.from_pretrained(tmp_path / "run").config["dim_heads"] == 4
    commands = build_parser()._subparsers._group_actions[0].choices
    silent = [f"{name} {action.option_strings or action.dest}" for name, parser in commands.items()
              for action in parser._actions if not action.help]
    assert not silent


def test_eval_items_shortens_every_evaluation(tmp_path):
    results = train(out=str(tmp_path / "run"), steps=2, eval_items=3, **PY_TINY)
    assert results["test_images_evaluated"] == 3 and results["test_images"] > 3


def test_the_curves_of_a_short_run_show_its_test_point_and_the_uniform_line():
    low, high = curve_limits([5.0, 3.9, 3.6], [3.8], uniform=4.09)  # two logged steps and one evaluation
    assert low < 3.6 and high > 4.09
    low, high = curve_limits([6.0] + [1.8 - i / 100 for i in range(50)], [1.75], uniform=4.09)
    assert high < 4.09 and high > 1.8  # a long run: the range stays on the curve, the line is annotated


def test_an_npy_of_clips_read_as_images_is_named(tmp_path):
    clips = tmp_path / "clips.npy"
    np.save(clips, np.zeros((10, 8, 4, 4), dtype=np.uint8))
    with pytest.warns(UserWarning, match=r"read as 8-channel images .* pass video=True"):
        load_images(str(clips))
    rgb = tmp_path / "rgb.npy"
    np.save(rgb, np.zeros((10, 3, 4, 4), dtype=np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_images(str(rgb))
