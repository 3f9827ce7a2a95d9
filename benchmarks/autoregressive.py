"""AutoregressiveAxialTransformer: cached vs reference sampling, and against a full-attention transformer,
on images and on videos.

    python -m benchmarks.autoregressive            # prints the README's image tables (about 10 minutes on 2 CPU cores)
    python -m benchmarks.autoregressive --parts video-sampling video-frames video-training   # the video tables
    python -m benchmarks.autoregressive --quick    # one reference row, one repeat, 2 digits steps: does it run

1. Sampling 32x32x1 images, 256 levels, a 4-layer model (4 outer + 4 inner layers), batch 8: the
   cached path against the reference path, which recomputes a full forward pass per pixel. Every
   reference step costs the same, so it is timed on its first rows and scaled to the whole image
   (and its rows are checked equal to the cached samples').
2. One training step (forward + backward) against a plain causal transformer over the raster-ordered
   pixels (SDPA with is_causal, the fused kernel), same width, as many layers as the axial model
   has outer + inner layers, at 32x32 and 64x64 single-channel. Each measurement runs in a fresh
   process: peak memory is the rise of the process' peak resident set over the step.
3. Test bits/dim on scikit-learn's digits of both models after the same number of training steps.
4. Videos (2 + 2 + 2 layers: frames, height and width levels): cached against reference sampling at
   4 frames of 16x16; cached sampling time against the number of frames at 8x8; one training step
   against the full causal transformer over the raster-ordered video at 8 frames of 32x32 (8192 tokens).
"""
from __future__ import annotations

import json
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from axial_attention import AutoregressiveAxialTransformer
from axial_attention.models.sampling import complete_cached, complete_reference
from axial_attention.training import TrainConfig, evaluate_bits_per_dim, load_images
from axial_attention.training.data import batch_indices
from axial_attention.training.trainer import learning_rate
from benchmarks.common import (
    PeakRSS,
    benchmark_parser,
    machine_description,
    measure_in_subprocess,
    set_threads,
    write_results,
)

WIDTH, HEADS, DEPTH = 64, 4, 4  # the axial image model: DEPTH outer + DEPTH inner layers
VIDEO_DEPTH = 2  # the axial video model: VIDEO_DEPTH layers in each of its three levels


class CausalTransformer(nn.Module):
    """The baseline: a pre-norm GPT over the raster-ordered sub-pixels (channels innermost), with
    AutoregressiveAxialTransformer's forward contract: (batch, C, *axes) -> (batch, levels, C, *axes)."""

    def __init__(self, image_shape: tuple[int, ...], num_levels: int, dim: int, heads: int, depth: int,
                 num_classes: int | None = None) -> None:
        super().__init__()
        self.image_shape, self.heads = tuple(image_shape), heads
        length = math.prod(image_shape)
        self.token_emb = nn.Embedding(num_levels, dim)
        self.pos_emb = nn.Parameter(torch.randn(length, dim) * 0.02)
        self.start = nn.Parameter(torch.zeros(dim))
        self.class_emb = None if num_classes is None else nn.Embedding(num_classes, dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim), nn.LayerNorm(dim),
                           nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))])
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.to_logits = nn.Linear(dim, num_levels)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        b = x.shape[0]
        h = self.token_emb(x.movedim(1, -1).reshape(b, -1))  # raster order, channels innermost
        h = torch.cat([self.start.expand(b, 1, -1), h[:, :-1]], dim=1) + self.pos_emb
        if labels is not None:
            h = h + self.class_emb(labels)[:, None]
        for norm, qkv, out, ff_norm, ff in self.layers:
            q, k, v = qkv(norm(h)).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
            attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            h = h + out(attended.transpose(1, 2).flatten(2))
            h = h + ff(ff_norm(h))
        c, *axes = self.image_shape
        logits = self.to_logits(self.norm(h))  # (b, tokens, levels)
        return logits.reshape(b, *axes, c, -1).movedim(-1, 1).movedim(-1, 2)

    def log_prob(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return -F.cross_entropy(self(x, labels), x, reduction="none").flatten(1).sum(1)

    bits_per_dim = AutoregressiveAxialTransformer.bits_per_dim  # needs only log_prob and image_shape


def build(kind: str, image_shape: tuple[int, ...], levels: int, num_classes: int | None = None,
          dim: int = WIDTH, depth: int = DEPTH) -> nn.Module:
    """The axial model with `depth` layers per level, or the full causal transformer with as many
    layers as all its levels together (fewer attention blocks: an axial layer has one per axis it
    attends along)."""
    torch.manual_seed(0)
    if kind == "axial":
        return AutoregressiveAxialTransformer(image_shape, levels, dim=dim, heads=HEADS, depth=depth,
                                              num_classes=num_classes)
    return CausalTransformer(image_shape, levels, dim, HEADS, depth * (len(image_shape) - 1), num_classes)


def train_step_child(kind: str, shape: list[int], batch: int, depth: int = DEPTH, steps: int = 2) -> dict:
    """One process, one model: median step seconds and the peak memory (bytes) the steps add."""
    model = build(kind, tuple(shape), 256, depth=depth)
    x = torch.randint(0, 256, (batch, *shape), generator=torch.Generator().manual_seed(0))
    times = []
    with PeakRSS() as peak:
        for _ in range(steps + 1):  # the first step also allocates the gradients: it counts for memory only
            start = time.perf_counter()
            F.cross_entropy(model(x), x).backward()
            times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times[1:]), "peak_bytes": peak.peak_bytes}


def time_sampling(model: AutoregressiveAxialTransformer, batch: int, reference_slices: int | None = None
                  ) -> tuple[float, float | None]:
    """Seconds to sample `batch` items with the caches, and (if `reference_slices`) with the reference
    path timed on that many slices of the first axis and scaled to all of them; both single-threaded
    (per-token steps are tiny), the timed slices checked equal."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    blank = torch.zeros(batch, *model.to_tokens(torch.zeros(1, *model.image_shape)).shape[1:], dtype=torch.long)
    with torch.no_grad():
        start = time.perf_counter()
        cached = complete_cached(model.eval(), blank, 0, None, 1.0, torch.Generator().manual_seed(0))
        cached_s = time.perf_counter() - start
        reference_s = None
        if reference_slices:
            start = time.perf_counter()
            partial = complete_reference(model, blank, 0, None, 1.0, torch.Generator().manual_seed(0),
                                         slices=reference_slices)
            reference_s = (time.perf_counter() - start) * blank.shape[1] / reference_slices
            assert torch.equal(partial[:, :reference_slices], cached[:, :reference_slices]), "paths disagree"
    torch.set_num_threads(before)
    return cached_s, reference_s


def benchmark_sampling(shape: tuple[int, ...], batch: int, depth: int, reference_slices: int,
                       cached_name: str) -> tuple[str, dict]:
    """Cached against reference sampling of `batch` items of `shape` (256 levels)."""
    cached_s, reference_s = time_sampling(build("axial", shape, 256, depth=depth), batch, reference_slices)
    ratio = reference_s / cached_s
    c, *axes = shape
    size = "x".join(map(str, axes[-2:])) + f"x{c}"
    item, name = ("image", size) if len(axes) == 2 else ("clip", f"{axes[0]} frames of {size}")
    table = "\n".join([
        f"| {name}, 256 levels, batch {batch} | time (s) | per {item} (s) | speed-up |",
        "|---|---|---|---|",
        f"| reference (full forward per pixel)* | {reference_s:.1f} | {reference_s / batch:.2f} | 1x |",
        f"| cached ({cached_name}) | {cached_s:.2f} | {cached_s / batch:.3f} | **{ratio:.0f}x** |",
        "",
        f"*the reference timed on {reference_slices} of {axes[0]} {'rows' if len(axes) == 2 else 'frames'} "
        f"and scaled; cached is {ratio:.0f}x faster",
    ])
    return table, {"cached_s": cached_s, "reference_s": reference_s, "ratio": ratio}


def benchmark_video_frames(frame_counts: tuple[int, ...] = (2, 4, 8), batch: int = 4) -> tuple[str, dict]:
    """Cached sampling time against the clip length: each frame adds one step of the frames level and
    a fixed amount of work below it, so the time should grow linearly."""
    times = {t: time_sampling(build("axial", (1, t, 8, 8), 256, depth=VIDEO_DEPTH), batch)[0] for t in frame_counts}
    first = frame_counts[0]
    rows = [f"| frames of 8x8x1, batch {batch} | cached time (s) | time / time at {first} frames | "
            f"frames / {first} |", "|---|---|---|---|"]
    rows += [f"| {t} | {times[t]:.2f} | **{times[t] / times[first]:.2f}x** | {t / first:.0f}x |" for t in frame_counts]
    return "\n".join(rows), times


def benchmark_training(settings: list[tuple[tuple[int, ...], int]], depth: int, repeats: int,
                       threads: int | None = None) -> tuple[str, dict]:
    """Training step of both models at each (shape, batch), every measurement in a fresh process, interleaved."""
    results: dict = {(kind, shape): [] for kind in ("axial", "full") for shape, _ in settings}
    for _ in range(repeats):
        for shape, batch in settings:
            for kind in ("axial", "full"):
                config = {"kind": kind, "shape": list(shape), "batch": batch, "depth": depth, "threads": threads}
                results[(kind, shape)].append(measure_in_subprocess(__spec__.name, config))
    rows = ["| input, batch | model | step time (s) | peak memory (MiB) | full / axial time | full / axial memory |",
            "|---|---|---|---|---|---|"]
    ratios = {}
    for shape, batch in settings:
        med = {kind: {key: statistics.median(r[key] for r in results[(kind, shape)])
                      for key in ("seconds", "peak_bytes")}
               for kind in ("axial", "full")}
        t_ratio = med["full"]["seconds"] / med["axial"]["seconds"]
        m_ratio = med["full"]["peak_bytes"] / med["axial"]["peak_bytes"]
        c, *axes = shape
        size = "x".join(map(str, axes[-2:])) + f"x{c}"
        ratios[f"{shape}, batch {batch}"] = {**med, "full_over_axial_time": t_ratio,
                                             "full_over_axial_memory": m_ratio}
        name = size if len(axes) == 2 else f"{axes[0]} frames of {size}"
        levels = len(axes)
        for kind, model in (("axial", f"axial ({' + '.join([str(depth)] * levels)} layers)"),
                            ("full", f"full causal attention ({levels * depth} layers)")):
            ratio_cells = f"**{t_ratio:.2f}x** | {m_ratio:.2f}x" if kind == "axial" else " | "
            rows.append(f"| {name}, {batch} | {model} | {med[kind]['seconds']:.2f} | "
                        f"{med[kind]['peak_bytes'] / 2**20:.0f} | {ratio_cells} |")
    return "\n".join(rows), ratios


def benchmark_digits(steps: int) -> tuple[str, dict]:
    data = load_images(TrainConfig.data)
    # the main job's width, depth, batch and learning rate; no dropout, no EMA in either model
    args = TrainConfig().for_data(data.image_shape)
    (train_x, train_y), (test_x, test_y) = data.split("train"), data.split("test")
    shape, levels, classes = data.image_shape, data.levels, data.num_classes
    rows = ["| model (digits 8x8, 17 levels, class-conditional) | parameters | test bits/dim |", "|---|---|---|"]
    results = {}
    for kind in ("axial", "full"):
        model = build(kind, shape, levels, classes, dim=args.dim, depth=args.depth)
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
        for step in range(steps):
            idx = batch_indices(step, len(train_x), args.batch_size, args.seed, 0, 1)
            loss = F.cross_entropy(model(train_x[idx], train_y[idx]), train_x[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, steps, args.lr)
            optimizer.step()
        results[kind] = evaluate_bits_per_dim(model, test_x, test_y)
        params = sum(p.numel() for p in model.parameters())
        name = (f"axial ({args.depth} outer + {args.depth} inner layers)" if kind == "axial"
                else f"full causal attention ({2 * args.depth} layers)")
        rows.append(f"| {name}, {steps} steps | {params / 1e3:.0f}k | {results[kind]:.3f} |")
    rows.append(f"| uniform | | {math.log2(levels):.3f} |")
    return "\n".join(rows), results


def main() -> None:
    p = benchmark_parser(__doc__, child=True,
                         repeats=dict(default=3, help="training-step measurements per model and size"),
                         threads=dict(help="CPU threads of the training steps and the digits runs (default: torch's "
                                           "default); sampling always runs single-threaded"))
    p.add_argument("--reference-rows", type=int, default=2, help="rows of the image reference sampler to time")
    p.add_argument("--reference-frames", type=int, default=1, help="frames of the video reference sampler to time")
    p.add_argument("--digits-steps", type=int, default=400)
    parts = ("sampling", "training", "digits", "video-sampling", "video-frames", "video-training")
    p.add_argument("--parts", nargs="+", choices=parts, default=parts[:3])
    args = p.parse_args()
    if args.child:
        config = json.loads(args.child)
        set_threads(config.pop("threads"))
        print(json.dumps(train_step_child(**config)))
        return
    if args.quick:
        args.repeats, args.reference_rows, args.reference_frames, args.digits_steps = 1, 1, 1, 2
    set_threads(args.threads)
    machine = machine_description()
    print(f"{machine}; width {WIDTH}, {HEADS} heads\n")
    video = f"{VIDEO_DEPTH} + {VIDEO_DEPTH} + {VIDEO_DEPTH} layers (frames, height, width levels)"
    for part in args.parts:
        if part == "sampling":
            table, results = benchmark_sampling((1, 32, 32), 8, DEPTH, args.reference_rows, "row + key/value caches")
            caption = f"Sampling ({DEPTH} outer + {DEPTH} inner layers, single thread for both paths):"
        elif part == "training":
            table, results = benchmark_training([((1, 32, 32), 8), ((1, 64, 64), 2)], DEPTH, args.repeats,
                                                args.threads)
            caption = f"Training step (forward + backward), median of {args.repeats} fresh processes:"
        elif part == "digits":
            table, results = benchmark_digits(args.digits_steps)
            caption = f"Digits, the same {args.digits_steps} steps for both (the main job's settings, no dropout):"
        elif part == "video-sampling":
            table, results = benchmark_sampling((1, 4, 16, 16), 4, VIDEO_DEPTH, args.reference_frames,
                                                "one cache per level")
            caption = f"Video sampling ({video}, single thread for both paths):"
        elif part == "video-frames":
            table, times = benchmark_video_frames()
            results = {f"{frames} frames": seconds for frames, seconds in times.items()}
            caption = f"Cached video sampling against clip length ({video}, single thread):"
        else:  # video-training
            table, results = benchmark_training([((1, 8, 32, 32), 2)], VIDEO_DEPTH, args.repeats, args.threads)
            caption = f"Video training step (forward + backward), median of {args.repeats} fresh processes:"
        print(f"{caption}\n\n{table}\n", flush=True)
        write_results(__spec__.name, args, part, results, [(f"{machine}; width {WIDTH}, {HEADS} heads. {caption}",
                                                             table)])


if __name__ == "__main__":
    main()
