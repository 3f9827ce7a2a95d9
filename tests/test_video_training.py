"""Video data and the video workflow of the trainer: moving digits, .npy videos, and train -> sample ->
complete -> evaluate on a video model through the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from axial_attention import AutoregressiveAxialTransformer
from axial_attention.training import DataError, load_images
from axial_attention.training.cli import main as cli
from axial_attention.training.data import bounce, frames_of, moving_digits

TINY = ["--dim", "8", "--heads", "2", "--depth", "1", "--batch-size", "4", "--samples-per-row", "2", "--no-progress",
        "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py


# -- moving digits ---------------------------------------------------------------------------------------
def test_bounce_moves_at_constant_speed_and_reflects_inside_the_span():
    start, velocity = np.array([0, 3, 8, 5]), np.array([2, -1, 1, -2])
    positions = bounce(start, velocity, 12, span=8)
    assert positions.min() >= 0 and positions.max() <= 8
    assert positions[:, 0].tolist() == start.tolist()
    assert positions[0].tolist() == [0, 2, 4, 6, 8, 6, 4, 2, 0, 2, 4, 6]
    assert positions[2].tolist() == [8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3]
    assert positions[3].tolist() == [5, 3, 1, 1, 3, 5, 7, 7, 5, 3, 1, 1]  # off each wall as a mirror would
    assert (np.abs(np.diff(positions, axis=1)) <= np.abs(velocity)[:, None]).all()


def test_moving_digits_are_the_bundled_digits_moving_in_a_canvas():
    from sklearn.datasets import load_digits

    clips, labels, levels = moving_digits()
    digits = load_digits()
    assert clips.shape == (len(digits.images), 1, 8, 16, 16) and levels == 17
    assert np.array_equal(labels, digits.target)
    assert clips.min() >= 0 and clips.max() < 17
    for i in (0, 1, 500, len(clips) - 1):  # every frame holds the whole digit, somewhere in the canvas
        digit = digits.images[i].astype(np.int64)
        for frame in clips[i, 0]:
            found = [(y, x) for y in range(9) for x in range(9) if np.array_equal(frame[y:y + 8, x:x + 8], digit)]
            assert found and frame.sum() == digit.sum()
    moved = [(clips[i, 0, 1:] != clips[i, 0, :1]).any() for i in range(len(clips))]
    assert all(moved)  # no clip stands still (a frame may repeat where a 2-pixel step meets a wall)
    assert np.array_equal(moving_digits()[0], clips)  # fixed: the same clips for every run


def test_frame_data_set_is_split_by_clip():
    videos, frames = load_images("moving-digits"), load_images("moving-digit-frames")
    assert videos.image_shape == (1, 8, 16, 16) and frames.image_shape == (1, 16, 16)
    for name in ("train", "test"):
        clips, labels = videos.split(name)
        expected_x, expected_y = frames_of(clips, labels)
        x, y = frames.split(name)
        assert torch.equal(x, expected_x) and torch.equal(y, expected_y)
    assert len(frames.test_images) == 8 * len(videos.test_images)


# -- .npy videos ---------------------------------------------------------------------------------------
def clips_file(tmp_path: Path, shape=(20, 3, 4, 4), dtype=np.uint8, name="clips.npy") -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / name
    np.save(path, rng.integers(0, 256, shape).astype(dtype))
    return path


@pytest.mark.parametrize("shape,expected", [((20, 3, 4, 5), (1, 3, 4, 5)), ((20, 3, 2, 4, 5), (2, 3, 4, 5))])
def test_npy_videos_become_channels_first(tmp_path, shape, expected):
    path = clips_file(tmp_path, shape)
    data = load_images(str(path), video=True)
    assert data.image_shape == expected and data.levels == 256
    array = torch.from_numpy(np.load(path).astype(np.int64))
    if len(shape) == 5:
        array = array.transpose(1, 2)  # (N, T, C, H, W) -> (N, C, T, H, W)
    else:
        array = array[:, None]
    together, _ = data.split("all")
    assert sorted(map(tuple, together.flatten(1).tolist())) == sorted(map(tuple, array.flatten(1).tolist()))


@pytest.mark.parametrize("shape,dtype,message", [
    ((20, 4, 4), np.uint8, r"expected a non-empty array of shape \(N, T, H, W\) or \(N, T, C, H, W\) \(a video\), "
                           r"got \(20, 4, 4\)"),
    ((20, 3, 1, 1, 4, 4), np.uint8, r"got \(20, 3, 1, 1, 4, 4\)"),
    ((20, 0, 4, 4), np.uint8, r"got \(20, 0, 4, 4\)"),
    ((20, 3, 4, 4), np.complex64, "expected uint8, float or integer values, got dtype complex64"),
    ((20, 3, 4, 4), np.bool_, "expected uint8, float or integer values, got dtype bool"),
])
def test_videos_of_the_wrong_shape_or_dtype_are_named(tmp_path, shape, dtype, message):
    path = clips_file(tmp_path, shape, dtype)
    with pytest.raises(DataError, match=r"source .*clips\.npy: .*" + message):
        load_images(str(path), video=True)


# -- the CLI round trip on a video model -------------------------------------------------------------------
@pytest.fixture(scope="module")
def video_run(tmp_path_factory) -> Path:
    """A tiny video model trained on 20 random 3-frame 4x4 clips: every command on its folder."""
    folder = tmp_path_factory.mktemp("video")
    data = clips_file(folder, (20, 3, 4, 4))
    out = folder / "run"
    assert cli(["train", *TINY, "--data", str(data), "--video", "--levels", "4", "--steps", "4", "--eval-every", "2",
                "--out", str(out)]) == 0
    return out


def test_training_a_video_model_writes_clips_and_an_animation(video_run):
    from PIL import Image

    model = AutoregressiveAxialTransformer.from_pretrained(video_run)
    assert model.image_shape == (1, 3, 4, 4) and model.num_levels == 4 and model.num_classes is None
    results = json.loads((video_run / "results.json").read_text())
    assert results["status"] == "finished" and results["args"]["video"] is True
    # samples.png: 2 sampled clips (samples-per-row, no labels), then 4 test clips each followed by two
    # continuations of its first frame; a row of 3 frames (6x6 tiles with their frames) per clip
    with Image.open(video_run / "samples.png") as img:
        scale = img.size[0] // (3 * 6)
        assert img.size == (3 * 6 * scale, (2 + 4 * 3) * 6 * scale)
    with Image.open(video_run / "samples.gif") as gif:
        assert gif.n_frames == 3


def test_sample_complete_and_evaluate_a_video_model(video_run, tmp_path, capsys):
    from PIL import Image

    assert cli(["sample", str(video_run), "--num", "4", "--per-row", "2", "--out", str(tmp_path / "s.gif")]) == 0
    with Image.open(tmp_path / "s.gif") as gif:
        assert gif.n_frames == 3
    assert cli(["complete", str(video_run), "--keep", "1", "--num", "2", "--samples", "2",
                "--out", str(tmp_path / "c.png")]) == 0
    with Image.open(tmp_path / "c.png") as img:  # per clip: original, kept, 2 completions; rows of 3 frames
        scale = img.size[0] // (3 * 6)
        grid = np.asarray(img)[::scale, ::scale]
    assert grid.shape == (2 * 4 * 6, 3 * 6)
    frames = grid.reshape(2, 4, 6, 3, 6)[:, :, 1:-1, :, 1:-1].transpose(0, 1, 3, 2, 4)  # (clip, row, frame, 4, 4)
    for clip in frames:
        for row in clip[1:]:
            assert np.array_equal(row[0], clip[0][0])  # every row keeps the first frame
        assert not clip[1][1:].any()  # the kept row is blank after it
    capsys.readouterr()
    assert cli(["evaluate", str(video_run)]) == 0
    expected = json.loads((video_run / "results.json").read_text())["test_bits_per_dim"]
    assert f"test bits/dim: {expected:.4f}" in capsys.readouterr().out


def test_keep_beyond_the_frames_is_named(video_run, capsys):
    assert cli(["complete", str(video_run), "--keep", "4"]) == 2
    assert "--keep must be in [0, 3] (the model's frames), got 4" in capsys.readouterr().err
    model = AutoregressiveAxialTransformer.from_pretrained(video_run)
    with pytest.raises(ValueError, match=r"keep must be in \[0, 3\] \(the size of the first axis, frames\), got 4"):
        model.complete(torch.zeros(1, 1, 3, 4, 4, dtype=torch.long), 4)


def test_images_given_to_a_video_model_are_refused_with_both_shapes(video_run, tmp_path, capsys):
    images = clips_file(tmp_path, (10, 4, 4), name="images.npy")
    assert cli(["evaluate", str(video_run), "--data", str(images)]) == 2
    err = capsys.readouterr().err
    assert "--data" in err and "(N, T, H, W)" in err and "Traceback" not in err
    other = clips_file(tmp_path, (10, 5, 4, 4), name="longer.npy")
    assert cli(["evaluate", str(video_run), "--data", str(other)]) == 2
    assert ("items of shape (1, 5, 4, 4) (channels, frames, height, width) do not fit the model in "
            f"{video_run}, which models (1, 3, 4, 4)") in capsys.readouterr().err
