"""AutoregressiveAxialTransformer: cached vs reference sampling, and against a full-attention transformer.

    python -m benchmarks.autoregressive            # prints the README's tables (about 10 minutes on 2 CPU cores)

1. Sampling 32x32x1 images, 256 levels, a 4-layer model (4 outer + 4 inner layers), batch 8: the
   cached path against the reference path, which recomputes a full forward pass per pixel. Every
   reference step costs the same, so it is timed on its first rows and scaled to the whole image
   (and its rows are checked equal to the cached samples').
2. One training step (forward + backward) against a plain causal transformer over the raster-ordered
   pixels (SDPA with is_causal, the fused kernel), same width, as many layers as the axial model
   has outer + inner layers, at 32x32 and 64x64 single-channel. Each measurement runs in a fresh
   process: peak memory is the rise of the process' peak resident set over the step.
3. Test bits/dim on scikit-learn's digits of both models after the same number of training steps.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from axial_attention import AutoregressiveAxialTransformer
from axial_attention.sampling import complete_cached, complete_reference
from axial_attention.training import TrainConfig, evaluate_bits_per_dim, load_images
from axial_attention.training.data import batch_indices
from axial_attention.training.trainer import learning_rate
from benchmarks.common import PeakRSS, machine_description, measure_in_subprocess

WIDTH, HEADS, DEPTH = 64, 4, 4  # the axial model: DEPTH outer + DEPTH inner layers
THREADS = torch.get_num_threads()


class CausalTransformer(nn.Module):
    """The baseline: a pre-norm GPT over the raster-ordered sub-pixels (channels innermost), with
    AutoregressiveAxialTransformer's forward contract: (batch, C, H, W) -> (batch, levels, C, H, W)."""

    def __init__(self, image_shape: tuple[int, int, int], num_levels: int, dim: int, heads: int, depth: int,
                 num_classes: Optional[int] = None) -> None:
        super().__init__()
        self.image_shape, self.heads = image_shape, heads
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

    def forward(self, x: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        b = x.shape[0]
        h = self.token_emb(x.permute(0, 2, 3, 1).reshape(b, -1))
        h = torch.cat([self.start.expand(b, 1, -1), h[:, :-1]], dim=1) + self.pos_emb
        if labels is not None:
            h = h + self.class_emb(labels)[:, None]
        for norm, qkv, out, ff_norm, ff in self.layers:
            q, k, v = qkv(norm(h)).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
            attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            h = h + out(attended.transpose(1, 2).flatten(2))
            h = h + ff(ff_norm(h))
        c, height, width = self.image_shape
        logits = self.to_logits(self.norm(h))
        return logits.reshape(b, height, width, c, -1).permute(0, 4, 3, 1, 2)

    def log_prob(self, x: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        return -F.cross_entropy(self(x, labels), x, reduction="none").flatten(1).sum(1)

    bits_per_dim = AutoregressiveAxialTransformer.bits_per_dim  # needs only log_prob and image_shape


def build(kind: str, image_shape: tuple[int, int, int], levels: int, num_classes: Optional[int] = None,
          dim: int = WIDTH, depth: int = DEPTH) -> nn.Module:
    torch.manual_seed(0)
    if kind == "axial":
        return AutoregressiveAxialTransformer(image_shape, levels, dim=dim, heads=HEADS, depth=depth,
                                              num_classes=num_classes)
    return CausalTransformer(image_shape, levels, dim, HEADS, 2 * depth, num_classes)


def train_step_child(kind: str, side: int, batch: int, steps: int = 2) -> dict:
    """One process, one model: median step time and the peak memory (MiB) the steps add."""
    model = build(kind, (1, side, side), 256)
    x = torch.randint(0, 256, (batch, 1, side, side), generator=torch.Generator().manual_seed(0))
    times = []
    with PeakRSS() as peak:
        for _ in range(steps + 1):  # the first step also allocates the gradients: it counts for memory only
            start = time.perf_counter()
            F.cross_entropy(model(x), x).backward()
            times.append(time.perf_counter() - start)
    return {"time": statistics.median(times[1:]), "memory": peak.peak_bytes / 2**20}


def benchmark_sampling(reference_rows: int) -> tuple[str, dict]:
    torch.set_num_threads(1)  # per-pixel steps are tiny; the same setting for both paths
    model = build("axial", (1, 32, 32), 256).eval()
    batch = 8
    with torch.no_grad():
        start = time.perf_counter()
        blank = torch.zeros(batch, 32, 32, dtype=torch.long)  # the token grid of 32x32x1 images
        cached = complete_cached(model, blank, 0, None, 1.0, torch.Generator().manual_seed(0))
        cached_s = time.perf_counter() - start
        start = time.perf_counter()
        partial = complete_reference(model, blank, 0, None, 1.0, torch.Generator().manual_seed(0), rows=reference_rows)
        reference_s = (time.perf_counter() - start) * 32 / reference_rows
    assert torch.equal(partial[:, :reference_rows], cached[:, :reference_rows]), "paths disagree"
    torch.set_num_threads(THREADS)
    ratio = reference_s / cached_s
    table = "\n".join([
        "| 32x32x1, 256 levels, batch 8 | time (s) | per image (s) | speed-up |",
        "|---|---|---|---|",
        f"| reference (full forward per pixel)* | {reference_s:.1f} | {reference_s / batch:.2f} | 1x |",
        f"| cached (row + key/value caches) | {cached_s:.2f} | {cached_s / batch:.3f} | {ratio:.0f}x |",
    ])
    return table, {"cached_s": cached_s, "reference_s": reference_s, "ratio": ratio}


def benchmark_training(repeats: int) -> tuple[str, dict]:
    settings = [(32, 8), (64, 2)]
    results: dict = {(kind, side): [] for kind in ("axial", "full") for side, _ in settings}
    for _ in range(repeats):  # interleaved, each measurement in a fresh process
        for side, batch in settings:
            for kind in ("axial", "full"):
                config = {"kind": kind, "side": side, "batch": batch}
                results[(kind, side)].append(measure_in_subprocess("benchmarks.autoregressive", config))
    rows = ["| image, batch | model | step time (s) | peak memory (MiB) | full / axial time | full / axial memory |",
            "|---|---|---|---|---|---|"]
    ratios = {}
    for side, batch in settings:
        med = {kind: {key: statistics.median(r[key] for r in results[(kind, side)]) for key in ("time", "memory")}
               for kind in ("axial", "full")}
        t_ratio = med["full"]["time"] / med["axial"]["time"]
        m_ratio = med["full"]["memory"] / med["axial"]["memory"]
        ratios[side] = {"time": t_ratio, "memory": m_ratio, **med}
        for kind, name in (("axial", f"axial ({DEPTH} outer + {DEPTH} inner layers)"),
                           ("full", f"full causal attention ({2 * DEPTH} layers)")):
            ratio_cells = f"{t_ratio:.2f}x | {m_ratio:.2f}x" if kind == "axial" else " | "
            rows.append(f"| {side}x{side}x1, {batch} | {name} | {med[kind]['time']:.2f} | "
                        f"{med[kind]['memory']:.0f} | {ratio_cells} |")
    return "\n".join(rows), ratios


def benchmark_digits(steps: int) -> tuple[str, dict]:
    args = TrainConfig()  # the main job's width, depth, batch and learning rate; no dropout, no EMA in either model
    data = load_images(args.data)
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
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="training-step measurements per model and size")
    p.add_argument("--reference-rows", type=int, default=2, help="rows of the reference sampler to time")
    p.add_argument("--digits-steps", type=int, default=400)
    p.add_argument("--parts", nargs="+", choices=("sampling", "training", "digits"),
                   default=("sampling", "training", "digits"))
    p.add_argument("--child", help=argparse.SUPPRESS)  # JSON config of one training-step measurement
    args = p.parse_args()
    if args.child:
        print(json.dumps(train_step_child(**json.loads(args.child))))
        return
    print(f"{machine_description()}; width {WIDTH}, {HEADS} heads\n")
    if "sampling" in args.parts:
        table, s = benchmark_sampling(args.reference_rows)
        print(f"Sampling ({DEPTH} outer + {DEPTH} inner layers, single thread for both paths):\n\n{table}\n")
        print(f"*the reference timed on {args.reference_rows} of 32 rows and scaled; "
              f"cached is {s['ratio']:.0f}x faster\n")
    if "training" in args.parts:
        table, _ = benchmark_training(args.repeats)
        print(f"Training step (forward + backward), median of {args.repeats} fresh processes:\n\n{table}\n")
    if "digits" in args.parts:
        table, _ = benchmark_digits(args.digits_steps)
        print(f"Digits, the same {args.digits_steps} steps for both (the main job's settings, no dropout):\n\n"
              f"{table}\n")


if __name__ == "__main__":
    main()
