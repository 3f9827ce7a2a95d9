"""Data sets for the trainer: scikit-learn's bundled digits, moving-digit videos made from them, a
folder of images, an .npy array of images or videos.

Every source becomes integer tensors (N, C, *axes) in [0, levels) — images (N, C, H, W), videos
(N, C, T, H, W) — optional labels (N,), and a fixed train/test split (the same for every run, rank and
resume), so test bits/dim are comparable across runs.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from einops import rearrange, repeat
from torch import Tensor

from .options import option, switch

DIGITS = "digits"
MOVING_DIGITS = "moving-digits"  # clips of one digit moving inside a larger canvas
MOVING_DIGIT_FRAMES = "moving-digit-frames"  # the same clips' frames as separate images (same split)
BUILT_IN = (DIGITS, MOVING_DIGITS, MOVING_DIGIT_FRAMES)
CLIP_FRAMES, CLIP_CANVAS, MOTION_SEED = 8, 16, 4321
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
IMAGE_CHANNELS = (1, 3, 4)  # grey, RGB, RGBA: any other count in an (N, C, H, W) array is more likely frames
SPLIT_SEED, TEST_FRACTION = 1234, 5  # one image in five is a test image


class DataError(ValueError):
    """A data source that cannot be read as images; the message names the flag and the source."""


@dataclass
class ImageData:
    """Integer images or videos (N, C, *axes) in [0, levels) with a fixed train/test split; labels are
    None without classes. `class_names[label]` is what a label stands for: a folder's sub-folder name,
    the digit of the built-in sets."""

    train_images: Tensor
    train_labels: Optional[Tensor]
    test_images: Tensor
    test_labels: Optional[Tensor]
    levels: int
    num_classes: Optional[int]
    class_names: Optional[tuple[str, ...]] = None

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train_images.shape[1:])

    def split(self, name: str) -> tuple[Tensor, Optional[Tensor]]:
        """'train', 'test' or 'all': images and labels."""
        if name == "train":
            return self.train_images, self.train_labels
        if name == "test":
            return self.test_images, self.test_labels
        labels = None if self.train_labels is None else torch.cat([self.train_labels, self.test_labels])
        return torch.cat([self.train_images, self.test_images]), labels


def quantise(values: np.ndarray, source_levels: int, levels: int) -> np.ndarray:
    """Integers in [0, source_levels) -> [0, levels), bucketing evenly."""
    return (values.astype(np.int64) * levels) // source_levels


def _digits() -> tuple[np.ndarray, np.ndarray, int]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("--data digits needs scikit-learn: pip install scikit-learn "
                        "(or the package's [examples] extra)") from None
    digits = load_digits()  # bundled with scikit-learn: no download
    return digits.images.astype(np.int64)[:, None], digits.target.astype(np.int64), 17


def bounce(start: np.ndarray, velocity: np.ndarray, steps: int, span: int) -> np.ndarray:
    """Positions in [0, span] of points moving at constant velocity and reflecting off both ends:
    start (...), velocity (...) -> (..., steps)."""
    if span == 0:
        return np.zeros((*start.shape, steps), dtype=np.int64)
    unfolded = start[..., None] + velocity[..., None] * np.arange(steps)
    folded = np.mod(unfolded, 2 * span)  # one period: out to the far end and back
    return np.where(folded > span, 2 * span - folded, folded)


def moving_digits(frames: int = CLIP_FRAMES, canvas: int = CLIP_CANVAS) -> tuple[np.ndarray, np.ndarray, int]:
    """One clip per bundled digit: the 8x8 digit moving at a constant velocity of 1 or 2 pixels per frame
    along each axis, bouncing off the edges of a `canvas` x `canvas` black frame (after Moving MNIST,
    Srivastava et al. 2015, but made from scikit-learn's digits so that nothing is downloaded).
    Returns clips (N, 1, frames, canvas, canvas) in [0, 17), the digits as labels, and 17."""
    images, labels, levels = _digits()
    n, size = len(images), images.shape[-1]
    rng = np.random.default_rng(MOTION_SEED)  # fixed: every run sees the same clips
    start = rng.integers(0, canvas - size + 1, size=(n, 2))
    velocity = rng.choice(np.array([-2, -1, 1, 2]), size=(n, 2))
    y, x = rearrange(bounce(start, velocity, frames, canvas - size), "n yx t -> yx n t")  # each (n, frames)
    clips = np.zeros((n, 1, frames, canvas, canvas), dtype=np.int64)
    for i in range(n):
        for t in range(frames):
            clips[i, 0, t, y[i, t] : y[i, t] + size, x[i, t] : x[i, t] + size] = images[i, 0]
    return clips, labels, levels


def class_folders(folder: Path) -> list[str]:
    """The sub-folders of an image folder that name its classes, in label order (sorted by name)."""
    return sorted(d.name for d in folder.iterdir() if d.is_dir())


def _folder(folder: Path, size: Optional[int], flag: str) -> tuple[np.ndarray, Optional[np.ndarray], int]:
    from PIL import Image

    classes = class_folders(folder)
    groups = [(i, folder / c) for i, c in enumerate(classes)] if classes else [(None, folder)]
    paths, labels = [], []
    for label, root in groups:
        found = sorted(f for f in root.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        paths += found
        labels += [label] * len(found)
    if not paths:
        raise DataError(f"{flag} {folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    with Image.open(paths[0]) as first:
        mode = "L" if first.mode in ("1", "L", "LA", "I", "I;16") else "RGB"
    arrays = []
    for path in paths:
        try:
            with Image.open(path) as img:
                img = img.convert(mode)
                if size:
                    img = img.resize((size, size), Image.BILINEAR)
                arrays.append(np.asarray(img))
        except OSError as error:
            raise DataError(f"{flag} {folder}: cannot read {path.name} ({error})") from None
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(f"{flag} {folder}: images have different sizes {sorted(shapes)}; pass {option('size')}")
    images = np.stack(arrays)
    images = images[:, None] if images.ndim == 3 else rearrange(images, "n h w c -> n c h w")
    return images, (np.asarray(labels) if classes else None), 256


def _npy(path: Path, levels: Optional[int], flag: str, video: bool) -> tuple[np.ndarray, None, int]:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"{flag} {path}: not a readable .npy array ({error})") from None
    expected = "(N, T, H, W) or (N, T, C, H, W) (a video)" if video else "(N, H, W) or (N, C, H, W)"
    if array.ndim not in ((4, 5) if video else (3, 4)) or 0 in array.shape:
        raise DataError(f"{flag} {path}: expected a non-empty array of shape {expected}, got {array.shape}")
    if not video and array.ndim == 4 and array.shape[1] not in IMAGE_CHANNELS:
        warnings.warn(f"{flag} {path}: read as {array.shape[1]}-channel images (N, C, H, W) = {array.shape}; if it "
                      f"holds clips (N, T, H, W), pass {switch('video')}", UserWarning, stacklevel=3)
    if array.ndim == (4 if video else 3):
        array = array[:, None]  # one channel
    elif video:
        array = rearrange(array, "n t c h w -> n c t h w")  # the model's layout
    if array.dtype == np.uint8:
        return array, None, 256
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise DataError(f"{flag} {path}: float arrays must lie in [0, 1], got [{array.min()}, {array.max()}]")
        fine = 1 << 16
        return np.minimum(array * fine, fine - 1).astype(np.int64), None, fine
    if not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{flag} {path}: expected uint8, float or integer values, got dtype {array.dtype}")
    source = levels or int(array.max()) + 1
    if array.min() < 0 or array.max() >= source:
        raise DataError(f"{flag} {path}: integer values must lie in [0, {source}), got [{array.min()}, {array.max()}]")
    return array.astype(np.int64), None, source


def resolvable(source: str) -> str:
    """`source` as a run folder records it: a built-in data set by name, a folder or file by its absolute path,
    so that `evaluate RUN` or `complete RUN` finds it from any directory."""
    return source if source in BUILT_IN else str(Path(source).expanduser().resolve())


def load_images(source: str = DIGITS, levels: Optional[int] = None, size: Optional[int] = None,
                flag: Optional[str] = None, video: bool = False) -> ImageData:
    """Load `source` — 'digits', 'moving-digits' (videos), 'moving-digit-frames' (their frames as
    images), a folder of images whose sub-folders name the classes, or an .npy array (uint8 read as
    8-bit, float as [0, 1], other integers as levels already; with `video`, (N, T, H, W) or
    (N, T, C, H, W)) — quantised to `levels` (default: the source's own, at most 256), split 4:1 into
    train and test. `flag`: how errors name the source (default: `source`; the CLI passes its flag)."""
    flag = flag or option("source")
    if source == DIGITS:
        images, labels, source_levels = _digits()
    elif source in (MOVING_DIGITS, MOVING_DIGIT_FRAMES):
        images, labels, source_levels = moving_digits()
    else:
        path = Path(source)
        if path.is_dir():
            images, labels, source_levels = _folder(path, size, flag)
        elif path.suffix == ".npy" and path.is_file():
            images, labels, source_levels = _npy(path, levels, flag, video)
        else:
            raise DataError(f"{flag} must be '{DIGITS}', '{MOVING_DIGITS}', '{MOVING_DIGIT_FRAMES}', a folder of "
                            f"images or an existing .npy file, got {source!r}")
    levels = levels or min(source_levels, 256)
    if levels < 2:
        raise DataError(f"{option('levels')} must be >= 2, got {levels}")
    images = torch.from_numpy(quantise(images, source_levels, levels))
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_test = max(1, len(images) // TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    if len(train) == 0:
        raise DataError(f"{flag} {source}: {len(images)} image(s) are too few to split into train and test")
    labels = None if labels is None else torch.from_numpy(labels)
    parts = [(images[i], None if labels is None else labels[i]) for i in (train, test)]
    if source == MOVING_DIGIT_FRAMES:  # split by clip, then frames: no test clip's frame is trained on
        parts = [frames_of(x, y) for x, y in parts]
    (train_x, train_y), (test_x, test_y) = parts
    if labels is None:
        return ImageData(train_x, train_y, test_x, test_y, levels, None)
    num_classes = int(labels.max()) + 1
    names = class_folders(Path(source)) if source not in BUILT_IN else [str(i) for i in range(num_classes)]
    return ImageData(train_x, train_y, test_x, test_y, levels, num_classes, tuple(names))


def frames_of(clips: Tensor, labels: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
    """Videos (N, C, T, H, W) -> their frames as images (N * T, C, H, W), each with its clip's label."""
    frames = rearrange(clips, "n c t h w -> (n t) c h w")
    return frames, None if labels is None else repeat(labels, "n -> (n t)", t=clips.shape[2])


def batch_indices(step: int, n: int, batch: int, seed: int, rank: int = 0, world: int = 1) -> Tensor:
    """This rank's share of step `step`'s batch: a function of the step alone, so resuming replays it."""
    per_epoch = max(1, n // batch)
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return order[k * batch : (k + 1) * batch][rank::world]
