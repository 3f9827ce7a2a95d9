"""How good a model's samples look, measured: what bits/dim cannot say.

A likelihood can be low while samples dissolve: a video model pays few bits for frames 2.. of a clip it
can predict from frame 1, yet its drawn clips may lose their digit a few frames in, each frame's errors
copied into the next. Two measures a reader of the sample pictures would agree with:

- **digit agreement**: a small CNN trained on the real training frames (its accuracy on the real test
  frames is the ceiling) classifies each sampled image or frame; a class-conditional sample should be
  classified as the label it was drawn for, a continuation of a test clip as that clip's digit;
- **ink**: the sum of a frame's intensities relative to its clip's first frame. A moving digit keeps its
  ink (1.0 on the real clips, which bounce inside the canvas); a dissolving one loses it.

`benchmarks/sample_quality.py` runs these on a trained run folder and writes the docs' tables.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..models.autoregressive import AutoregressiveAxialTransformer
from .devices import cpu_threads
from .evaluation import completions_of


class DigitClassifier(nn.Module):
    """Images (N, 1, H, W) in [0, levels) -> class logits (N, classes), for any H, W >= 4: three 3x3
    convolutions and a global max pool, so a digit is recognised wherever it sits in a larger frame."""

    def __init__(self, levels: int, classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.levels = levels
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(2 * width, classes),
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images.float() / (self.levels - 1))

    @torch.no_grad()
    def predict(self, images: Tensor, batch: int = 512) -> Tensor:
        """The most likely class of each image, (N,)."""
        was_training = self.training
        self.eval()
        out = torch.cat([self(part).argmax(-1) for part in images.split(batch)]) if len(images) else images.new_zeros(0)
        self.train(was_training)
        return out


def train_classifier(images: Tensor, labels: Tensor, levels: int, steps: int = 800, batch: int = 128,
                     seed: int = 0) -> DigitClassifier:
    """A DigitClassifier fitted to real images (N, 1, H, W) and their labels (N,) with Adam; deterministic
    for a seed. About 20 s on 2 CPU cores for 16x16 frames."""
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be (N, 1, H, W) single-channel images, got shape {tuple(images.shape)}")
    if len(images) != len(labels):
        raise ValueError(f"labels must have one entry per image ({len(images)}), got {len(labels)}")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    classifier = DigitClassifier(levels, int(labels.max()) + 1)
    optimiser = torch.optim.Adam(classifier.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=2e-3, total_steps=steps)
    for _ in range(steps):
        pick = torch.randint(0, len(images), (min(batch, len(images)),), generator=generator)
        loss = F.cross_entropy(classifier(images[pick]), labels[pick])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    return classifier.eval()


def accuracy(classifier: DigitClassifier, images: Tensor, labels: Tensor) -> float:
    """The share of images (N, 1, H, W) classified as their label."""
    return float((classifier.predict(images) == labels).float().mean())


def ink(clips: Tensor) -> Tensor:
    """Clips (N, C, T, H, W) -> the ink of each frame, (N, T): the sum of its intensities."""
    return clips.double().sum(dim=(1, 3, 4))


def clip_quality(clips: Tensor, labels: Tensor, classifier: DigitClassifier) -> dict:
    """Per frame of clips (N, 1, T, H, W) with labels (N,): the mean ink relative to each clip's first
    frame, and the share of frames the classifier calls the clip's digit. Clips whose first frame is empty
    are left out of the ink ratio."""
    amount = ink(clips)
    inked = amount[:, 0] > 0
    ratio = (amount[inked] / amount[inked, :1]).mean(0)
    frames = rearrange(clips, "n c t h w -> (n t) c h w")
    agree = rearrange(classifier.predict(frames), "(n t) -> n t", n=len(clips)) == labels[:, None].to(clips.device)
    return {"ink_vs_frame_1": ratio.tolist(), "agreement": agree.float().mean(0).tolist()}


def continuation_quality(model: AutoregressiveAxialTransformer, clips: Tensor, labels: Tensor,
                         classifier: DigitClassifier, temperature: float = 1.0, keep: int = 1,
                         seed: int = 0) -> dict:
    """`clip_quality` of the model's continuations of `clips` from their first `keep` frames (labels are
    given to a class-conditional model and used to score)."""
    generator = torch.Generator(device=model.device).manual_seed(seed)
    given = labels if model.num_classes is not None else None
    completed = completions_of(model, clips, given, keep, 1, temperature, generator)[:, 0]
    return clip_quality(completed, labels, classifier)


def conditional_quality(model: AutoregressiveAxialTransformer, classifier: DigitClassifier, per_class: int,
                        temperature: float = 1.0, seed: int = 0) -> tuple[float, Tensor]:
    """Class-conditional samples, `per_class` of each class: (the share of images, or of frames for a video
    model, classified as the label asked for; the samples (N, C, *axes))."""
    if model.num_classes is None:
        raise ValueError("model: conditional_quality needs a class-conditional model (built with num_classes)")
    labels = torch.arange(model.num_classes).repeat_interleave(per_class).to(model.device)
    generator = torch.Generator(device=model.device).manual_seed(seed)
    with cpu_threads(model.device):
        samples = model.sample(len(labels), labels, temperature, generator).cpu()
    if samples.ndim == 5:  # videos: every frame should show the label
        frames = rearrange(samples, "n c t h w -> (n t) c h w")
        wanted = labels.cpu().repeat_interleave(samples.shape[2])
    else:
        frames, wanted = samples, labels.cpu()
    return accuracy(classifier, frames, wanted), samples


def real_frames(images: Tensor, labels: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """Images (N, 1, H, W) or clips (N, 1, T, H, W) -> single images and their labels, to train or test the
    classifier on."""
    if labels is None:
        raise ValueError("labels: the sample-quality measure needs labelled data (digits, moving-digits)")
    if images.ndim == 5:
        return rearrange(images, "n c t h w -> (n t) c h w"), labels.repeat_interleave(images.shape[2])
    return images, labels
