"""The sample-quality measure: ink and digit agreement per frame, against constructed clips whose answer is
known, a classifier that really learns the digits, and the benchmark script end to end on a tiny run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from axial_attention.training import load_images, train
from axial_attention.training.sample_quality import (
    DigitClassifier,
    accuracy,
    clip_quality,
    conditional_quality,
    continuation_quality,
    ink,
    real_frames,
    train_classifier,
)

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py


class ByInk(DigitClassifier):
    """A stand-in whose answer is known: class 1 for a frame with any ink, else 0."""

    def forward(self, images):
        inked = images.flatten(1).sum(1) > 0
        return torch.stack([~inked, inked], 1).float()


def test_ink_and_agreement_per_frame_of_constructed_clips():
    clips = torch.zeros(2, 1, 3, 4, 4, dtype=torch.long)
    clips[:, :, 0, 1:3, 1:3] = 4  # frame 1: 16 units of ink
    clips[0, :, 1, 0:2, 0:2] = 4  # clip 0 keeps it in frame 2 (moved), loses half in frame 3
    clips[0, :, 2, 0, 0:2] = 4
    clips[1, :, 1, 0, 0] = 4  # clip 1 keeps a quarter in frame 2, nothing in frame 3
    assert ink(clips).tolist() == [[16, 16, 8], [16, 4, 0]]
    got = clip_quality(clips, torch.tensor([1, 1]), ByInk(5, classes=2))
    assert got["ink_vs_frame_1"] == pytest.approx([1.0, (1 + 0.25) / 2, 0.25])
    assert got["agreement"] == pytest.approx([1.0, 1.0, 0.5])


def test_the_classifier_learns_the_digits_far_above_chance():
    data = load_images("digits")
    classifier = train_classifier(*real_frames(data.train_images, data.train_labels), data.levels, steps=150)
    assert accuracy(classifier, *real_frames(data.test_images, data.test_labels)) > 0.85  # chance: 0.1


def test_real_frames_refuse_unlabelled_data_and_shapes_other_than_single_channel():
    with pytest.raises(ValueError, match="labels"):
        real_frames(torch.zeros(2, 1, 4, 4), None)
    with pytest.raises(ValueError, match=r"images must be \(N, 1, H, W\)"):
        train_classifier(torch.zeros(2, 3, 4, 4, dtype=torch.long), torch.zeros(2, dtype=torch.long), 17, steps=1)


@pytest.fixture(scope="module")
def video_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("video")
    train(data="moving-digits", out=str(out), steps=2, dim=8, heads=2, depth=1, batch_size=4, samples_per_row=2,
          eval_items=4, progress=False, device="cpu")
    return out


def test_continuations_keep_the_kept_frame_and_score_every_frame(video_run):
    from axial_attention import AutoregressiveAxialTransformer

    model = AutoregressiveAxialTransformer.from_pretrained(video_run)
    clips, labels = load_images("moving-digits").split("test")
    got = continuation_quality(model, clips[:3], labels[:3], ByInk(17, classes=10), keep=1)
    assert got["ink_vs_frame_1"][0] == pytest.approx(1.0)  # frame 1 is the real one
    assert len(got["agreement"]) == clips.shape[2]
    share, samples = conditional_quality(model, ByInk(17, classes=10), per_class=1)
    assert samples.shape == (10, *model.image_shape) and 0.0 <= share <= 1.0


@pytest.mark.slow
def test_the_benchmark_writes_its_tables_for_a_video_run(video_run, tmp_path):
    results = tmp_path / "quality.json"
    subprocess.run([sys.executable, "-m", "benchmarks.sample_quality", str(video_run), "--quick", "--results",
                    str(results), "--device", "cpu"], cwd=ROOT, check=True, capture_output=True, timeout=300)
    entry = json.loads(results.read_text())["moving-digits"]
    assert entry["results"]["real"]["ink_vs_frame_1"] == pytest.approx([1.0] * 8)
    assert "frame 8" in entry["tables"][0]["markdown"]
