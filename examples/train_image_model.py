"""Train an Axial Transformer image model, report test bits/dim, and draw samples.

    python examples/train_image_model.py                          # scikit-learn digits, 8x8, 17 levels
    python examples/train_image_model.py --data my_images/ --levels 16 --size 32
    python examples/train_image_model.py --resume                 # continue from <out>/checkpoint.pt
    torchrun --nproc_per_node 2 examples/train_image_model.py     # DDP on CPU (gloo), one data shard per rank

--data takes a folder of images (sub-folders name the classes, if any) or an .npy array
(N, H, W) or (N, C, H, W): uint8 is read as 8-bit, float as [0, 1], other integers as levels already.
Writes <out>/samples.png (one row per class when there are labels) and <out>/checkpoint.pt.
Checkpoints are written atomically and hold the optimiser and RNG states, so a run killed at any
moment and restarted with --resume ends with the same weights as an uninterrupted run.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing
from axial_attention import AutoregressiveAxialTransformer  # noqa: E402

MODEL_ARGS = ("dim", "heads", "depth", "dropout")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="folder of images or .npy array (default: scikit-learn's digits)")
    p.add_argument("--levels", type=int, help="quantisation levels (default: 17 for digits, 256 otherwise)")
    p.add_argument("--size", type=int, help="resize folder images to size x size")
    p.add_argument("--out", default="runs/digits", help="output folder (samples, checkpoint)")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=32, help="global batch, split over the ranks")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--samples-per-row", type=int, default=10)
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt if it exists")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return p.parse_args(argv)


# -- data -----------------------------------------------------------------------------------------
def quantise(values: np.ndarray, source_levels: int, levels: int) -> np.ndarray:
    """Integers in [0, source_levels) -> [0, levels), bucketing evenly."""
    return (values.astype(np.int64) * levels) // source_levels


def load_digits_data() -> tuple[np.ndarray, np.ndarray, int]:
    from sklearn.datasets import load_digits

    digits = load_digits()  # bundled with scikit-learn: no download
    return digits.images.astype(np.int64)[:, None], digits.target.astype(np.int64), 17


def load_folder(folder: Path, size: Optional[int]) -> tuple[np.ndarray, Optional[np.ndarray], int]:
    from PIL import Image

    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    groups = [(i, folder / c) for i, c in enumerate(classes)] if classes else [(None, folder)]
    paths, labels = [], []
    for label, root in groups:
        found = sorted(f for f in root.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        paths += found
        labels += [label] * len(found)
    if not paths:
        raise SystemExit(f"--data {folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    with Image.open(paths[0]) as first:
        mode = "L" if first.mode in ("1", "L", "LA", "I", "I;16") else "RGB"
    arrays = []
    for path in paths:
        with Image.open(path) as img:
            img = img.convert(mode)
            if size:
                img = img.resize((size, size), Image.BILINEAR)
            arrays.append(np.asarray(img))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise SystemExit(f"--data {folder}: images have different sizes {sorted(shapes)}; pass --size")
    images = np.stack(arrays)
    images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    return images, (np.asarray(labels) if classes else None), 256


def load_npy(path: Path, levels: Optional[int]) -> tuple[np.ndarray, None, int]:
    array = np.load(path)
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4:
        raise SystemExit(f"--data {path}: expected shape (N, H, W) or (N, C, H, W), got {array.shape}")
    if array.dtype == np.uint8:
        return array, None, 256
    if np.issubdtype(array.dtype, np.floating):
        if array.min() < 0 or array.max() > 1:
            raise SystemExit(f"--data {path}: float arrays must lie in [0, 1], got [{array.min()}, {array.max()}]")
        fine = 1 << 16
        return np.minimum(array * fine, fine - 1).astype(np.int64), None, fine
    source = levels or int(array.max()) + 1
    if array.min() < 0 or array.max() >= source:
        raise SystemExit(f"--data {path}: integer values must lie in [0, {source}), got [{array.min()}, {array.max()}]")
    return array.astype(np.int64), None, source


def load_data(args: argparse.Namespace) -> dict:
    """Images as long tensors (N, C, H, W) in [0, levels), labels or None, and a fixed split."""
    if args.data is None:
        images, labels, source = load_digits_data()
    else:
        path = Path(args.data)
        if path.is_dir():
            images, labels, source = load_folder(path, args.size)
        elif path.suffix == ".npy":
            images, labels, source = load_npy(path, args.levels)
        else:
            raise SystemExit(f"--data must be a folder of images or an .npy file, got {args.data}")
    levels = args.levels or (source if source <= 256 else 256)
    if levels < 2:
        raise SystemExit(f"--levels must be >= 2, got {levels}")
    images = torch.from_numpy(quantise(images, source, levels))
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(1234))  # fixed split
    n_test = max(1, len(images) // 5)
    test, train = order[:n_test], order[n_test:]
    labels = None if labels is None else torch.from_numpy(labels)
    return {
        "train": (images[train], None if labels is None else labels[train]),
        "test": (images[test], None if labels is None else labels[test]),
        "levels": levels,
        "num_classes": None if labels is None else int(labels.max()) + 1,
    }


def batch_indices(step: int, n: int, batch: int, seed: int, rank: int, world: int) -> Tensor:
    """This rank's share of step `step`'s batch: a function of the step alone, so resuming replays it."""
    per_epoch = max(1, n // batch)
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return order[k * batch : (k + 1) * batch][rank::world]


# -- training helpers -----------------------------------------------------------------------------
def learning_rate(step: int, steps: int, peak: float) -> float:
    warmup = max(1, min(100, steps // 10))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def save_atomically(obj: dict, path: Path) -> None:
    """A crash mid-write leaves the previous checkpoint intact: write a temporary file, then rename."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Cached sampling runs many tiny ops, for which waking extra CPU threads costs more than it saves."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def evaluate(model: AutoregressiveAxialTransformer, images: Tensor, labels: Optional[Tensor],
             rank: int, world: int, batch: int = 256) -> float:
    """Test bits/dim over the whole set, each rank scoring its shard."""
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64)
    shard = torch.arange(rank, len(images), world)
    for part in shard.split(batch):
        y = None if labels is None else labels[part]
        total[0] += model.bits_per_dim(images[part], y).double().sum()
        total[1] += len(part)
    model.train(was_training)
    if world > 1:
        dist.all_reduce(total)
    return float(total[0] / total[1])


def save_samples(model: AutoregressiveAxialTransformer, path: Path, levels: int, per_row: int,
                 seed: int) -> None:
    """A PNG grid: one row of samples per class (class-conditional), or a square grid without labels."""
    from PIL import Image

    generator = torch.Generator().manual_seed(seed)
    if model.num_classes is not None:
        labels = torch.arange(model.num_classes).repeat_interleave(per_row)
        rows = model.num_classes
    else:
        labels, rows = None, per_row
    with single_thread():
        images = model.sample(rows * per_row, labels=labels, generator=generator)
    pixels = F.pad(images * 255 // (levels - 1), (1, 1, 1, 1), value=96).to(torch.uint8)  # grey frames
    c, h, w = pixels.shape[1:]
    grid = pixels.reshape(rows, per_row, c, h, w).permute(0, 3, 1, 4, 2).reshape(rows * h, per_row * w, c).numpy()
    img = Image.fromarray(grid[..., 0] if c == 1 else grid)
    scale = max(1, 256 // max(rows * h, per_row * w))
    img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(path)


def setup_distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


# -- main -----------------------------------------------------------------------------------------
def main(argv: Optional[list[str]] = None) -> dict:
    args = parse_args(argv)
    rank, world = setup_distributed()
    if args.batch_size % world:
        raise SystemExit(f"--batch-size ({args.batch_size}) must be divisible by the number of ranks ({world})")
    data = load_data(args)
    train_x, train_y = data["train"]
    test_x, test_y = data["test"]
    levels, num_classes = data["levels"], data["num_classes"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    config = {"image_shape": list(train_x.shape[1:]), "levels": levels, "num_classes": num_classes,
              **{k: getattr(args, k) for k in MODEL_ARGS}}

    torch.manual_seed(args.seed + rank)
    model = AutoregressiveAxialTransformer(tuple(train_x.shape[1:]), levels, dim=args.dim, heads=args.heads,
                                           depth=args.depth, dropout=args.dropout, num_classes=num_classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    start = 0
    if args.resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if state["config"] != config:
            raise SystemExit(f"--resume: {ckpt_path} was trained with {state['config']}, this run is {config}")
        if len(state["rng"]) != world:
            raise SystemExit(f"--resume: {ckpt_path} was written by {len(state['rng'])} ranks, this run has {world}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"][rank])
        start = state["step"]
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model

    def checkpoint(step: int) -> None:
        rng = [torch.get_rng_state()]
        if world > 1:
            rng = [None] * world
            dist.all_gather_object(rng, torch.get_rng_state())
        if rank == 0:
            save_atomically({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                             "rng": rng, "config": config}, ckpt_path)

    from tqdm import tqdm

    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, disable=rank != 0 or args.no_progress,
               desc="train", dynamic_ncols=True)
    model.train()
    for step in bar:
        idx = batch_indices(step, len(train_x), args.batch_size, args.seed, rank, world)
        x = train_x[idx]
        logits = net(x, None if train_y is None else train_y[idx])
        loss = F.cross_entropy(logits, x) / math.log(2)  # bits per dim
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr)
        optimizer.step()
        bar.set_postfix(bits_per_dim=f"{loss.item():.3f}", refresh=False)
        if (step + 1) % args.checkpoint_every == 0 or step + 1 == args.steps:
            checkpoint(step + 1)

    test_bpd = evaluate(model, test_x, test_y, rank, world)
    uniform = math.log2(levels)
    results = {"test_bits_per_dim": test_bpd, "uniform_bits_per_dim": uniform, "steps": args.steps,
               "train_images": len(train_x), "test_images": len(test_x), "world_size": world}
    if rank == 0:
        print(f"test bits/dim: {test_bpd:.3f}   (uniform baseline log2({levels}) = {uniform:.3f})")
        save_samples(model, out / "samples.png", levels, args.samples_per_row, args.seed)
        (out / "results.json").write_text(json.dumps(results, indent=2))
        print(f"wrote {out / 'samples.png'}, {ckpt_path}")
    if world > 1:
        dist.barrier()
    return results


if __name__ == "__main__":
    main()
    if dist.is_initialized():
        dist.destroy_process_group()
