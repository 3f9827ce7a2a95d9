"""Image data sets for the trainer: scikit-learn's bundled digits, a folder of images, an .npy array.

Every source becomes integer images (N, C, H, W) in [0, levels), optional labels (N,), and a fixed
train/test split (the same for every run, rank and resume), so test bits/dim are comparable
across runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

DIGITS = "digits"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
SPLIT_SEED, TEST_FRACTION = 1234, 5  # one image in five is a test image


class DataError(ValueError):
    """A data source that cannot be read as images; the message names the flag and the source."""


@dataclass
class ImageData:
    """Integer images in [0, levels) with a fixed train/test split; labels are None without classes."""

    train_images: Tensor
    train_labels: Optional[Tensor]
    test_images: Tensor
    test_labels: Optional[Tensor]
    levels: int
    num_classes: Optional[int]

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


def _folder(folder: Path, size: Optional[int], flag: str) -> tuple[np.ndarray, Optional[np.ndarray], int]:
    from PIL import Image

    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
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
        raise DataError(f"{flag} {folder}: images have different sizes {sorted(shapes)}; pass --size")
    images = np.stack(arrays)
    images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    return images, (np.asarray(labels) if classes else None), 256


def _npy(path: Path, levels: Optional[int], flag: str) -> tuple[np.ndarray, None, int]:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"{flag} {path}: not a readable .npy array ({error})") from None
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4 or 0 in array.shape:
        raise DataError(f"{flag} {path}: expected a non-empty array of shape (N, H, W) or (N, C, H, W), "
                        f"got {array.shape}")
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


def load_images(source: str = DIGITS, levels: Optional[int] = None, size: Optional[int] = None,
                flag: str = "--data") -> ImageData:
    """Load `source` ('digits', a folder of images whose sub-folders name the classes, or an .npy
    array: uint8 read as 8-bit, float as [0, 1], other integers as levels already), quantised to
    `levels` (default: the source's own, at most 256), split 4:1 into train and test."""
    if source == DIGITS:
        images, labels, source_levels = _digits()
    else:
        path = Path(source)
        if path.is_dir():
            images, labels, source_levels = _folder(path, size, flag)
        elif path.suffix == ".npy" and path.is_file():
            images, labels, source_levels = _npy(path, levels, flag)
        else:
            raise DataError(f"{flag} must be 'digits', a folder of images or an existing .npy file, got {source!r}")
    levels = levels or min(source_levels, 256)
    if levels < 2:
        raise DataError(f"--levels must be >= 2, got {levels}")
    images = torch.from_numpy(quantise(images, source_levels, levels))
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_test = max(1, len(images) // TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    if len(train) == 0:
        raise DataError(f"{flag} {source}: {len(images)} image(s) are too few to split into train and test")
    labels = None if labels is None else torch.from_numpy(labels)
    return ImageData(images[train], None if labels is None else labels[train], images[test],
                     None if labels is None else labels[test], levels,
                     None if labels is None else int(labels.max()) + 1)


def batch_indices(step: int, n: int, batch: int, seed: int, rank: int = 0, world: int = 1) -> Tensor:
    """This rank's share of step `step`'s batch: a function of the step alone, so resuming replays it."""
    per_epoch = max(1, n // batch)
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return order[k * batch : (k + 1) * batch][rank::world]
