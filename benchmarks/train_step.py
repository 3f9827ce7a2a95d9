"""One training step of AutoregressiveAxialTransformer against this package at an earlier commit.

    python -m benchmarks.train_step                          # the README's table: 32x32x3, batch 8, vs 9345f34
    python -m benchmarks.train_step --device cuda --dtype bfloat16 --side 64
    python -m benchmarks.train_step --quick                  # 8x8, batch 2: to check the script runs

The model is the issue's `AutoregressiveAxialTransformer((3, 32, 32), 256, dim=64, heads=4, depth=2,
dropout=0.3)` in training mode; a step is what each version's trainer does: loss, backward, gradient
clipping, AdamW. The earlier version is taken out of git (`git archive`) into a temporary folder and
imported under another name, so both run in this process on the same inputs, alternated step by
step (a shared, noisy machine then slows both alike). The step's FLOPs are counted with
torch.utils.flop_counter and set against the machine's matmul peak, measured in the same run as the
best rate of a large matrix product.
"""
from __future__ import annotations

import importlib.util
import io
import math
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from axial_attention import AutoregressiveAxialTransformer
from benchmarks.common import (
    benchmark_parser,
    interleaved_medians,
    machine_description,
    markdown_table,
    matmul_peak,
    set_threads,
    write_results,
)

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "9345f34"
DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def package_at(commit: str, folder: Path) -> ModuleType:
    """`axial_attention` as it was at `commit`, imported as `axial_attention_at_<commit>`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "axial_attention"], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    name = f"axial_attention_at_{commit}"
    spec = importlib.util.spec_from_file_location(name, folder / "axial_attention" / "__init__.py",
                                                  submodule_search_locations=[str(folder / "axial_attention")])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its relative imports resolve against this name
    spec.loader.exec_module(module)
    return module


def make_step(model: torch.nn.Module, x: torch.Tensor, loss_fn: Callable[[], torch.Tensor],
              device: torch.device, dtype) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step


def _cpu_flash(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_flash_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# torch's counter knows the CUDA attention kernels but not the CPU flash kernel; the same formulas
# (dense: causal attention is counted as if unmasked, as torch counts it).
CPU_FLASH_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_backward,
}


def step_flops(step: Callable[[], None]) -> int:
    counter = FlopCounterMode(display=False, custom_mapping=CPU_FLASH_FLOPS)
    with counter:
        step()
    return counter.get_total_flops()


def main() -> None:
    p = benchmark_parser(
        __doc__, common=("threads", "repeats", "device", "dtype"),
        repeats=dict(default=7, help="timed steps per version (median)"),
        dtype=dict(choices=tuple(DTYPES), help="autocast dtype (float32: no autocast)"),
    )
    p.add_argument("--baseline", default=BASELINE, help=f"git commit to compare with (default: {BASELINE})")
    p.add_argument("--side", type=int, default=32, help="image height and width (default: 32)")
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args()
    if args.quick:
        args.side, args.batch, args.repeats = 8, 2, 1
    set_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    shape = (3, args.side, args.side)
    model_args = dict(dim=64, heads=4, depth=2, dropout=0.3)
    x = torch.randint(0, 256, (args.batch, *shape), generator=torch.Generator().manual_seed(0)).to(device)

    with tempfile.TemporaryDirectory() as tmp:
        old_package = package_at(args.baseline, Path(tmp))
        torch.manual_seed(0)
        old = old_package.AutoregressiveAxialTransformer(shape, 256, **model_args).to(device).train()
        torch.manual_seed(0)
        new = AutoregressiveAxialTransformer(shape, 256, **model_args).to(device).train()
        steps = {
            # each version's training loss as its own trainer computed it
            f"package at {args.baseline}": make_step(old, x, lambda: F.cross_entropy(old(x), x) / math.log(2),
                                                     device, dtype),
            "this package": make_step(new, x, lambda: new.bits_per_dim(x).mean(), device, dtype),
        }
        flops = {name: step_flops(step) for name, step in steps.items()}
        times = interleaved_medians(steps, repeats=args.repeats, warmup=1)
        peak = matmul_peak(device, dtype or torch.float32, repeats=5, warmup=1)

    machine = machine_description(device)
    caption = (f"Training step, AutoregressiveAxialTransformer({shape}, 256, dim=64, heads=4, depth=2, dropout=0.3), "
               f"batch {args.batch}, {args.dtype}, median of {args.repeats} alternated steps; "
               f"matmul peak {peak / 1e9:.0f} GFLOP/s ({args.dtype}, 2048^3, same run)")
    print(f"{machine}\n{caption}\n")
    base = times[f"package at {args.baseline}"]
    rows, results = [], {"matmul_peak_flops": peak}
    for name, seconds in times.items():
        rate = flops[name] / seconds
        results[name] = {"seconds": seconds, "speed_up": base / seconds, "images_per_s": args.batch / seconds,
                         "flops": flops[name], "flop_rate": rate, "share_of_peak": rate / peak}
        rows.append([name, f"{seconds * 1e3:.0f}", f"{base / seconds:.2f}x", f"{args.batch / seconds:.1f}",
                     f"{flops[name] / 1e9:.1f}", f"{rate / 1e9:.0f}", f"{rate / peak:.0%}"])
    table = markdown_table(["version", "step (ms)", "speed-up", "images/s", "GFLOP per step", "GFLOP/s",
                            "share of matmul peak"], rows)
    print(table)
    write_results(__spec__.name, args, f"{args.device} {args.dtype}", results, [(f"{machine}; {caption}", table)],
                  device)


if __name__ == "__main__":
    main()
