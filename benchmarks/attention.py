"""AxialAttention against lucidrains' axial-attention 0.6.1: time and peak memory, ratios from one run.

    python -m benchmarks.attention            # CPU, float32: prints the README table
    python -m benchmarks.attention --device cuda --dtype bfloat16

Time: forward without grad and forward+backward, both packages alternated in one process (median of
--repeats). Memory: peak resident memory (CPU) or peak allocated bytes (CUDA) of a fresh process that
runs one step of one configuration, above that process's baseline after the input was made.
"""
from __future__ import annotations

import argparse
import json

import torch

from benchmarks.common import interleaved_medians, markdown_table, measure_in_subprocess, PeakRSS
from benchmarks.peer import load_peer

# (batch, height, width, dim), heads: the shapes the issue asks about, channel-last as 0.6.1's README latents.
SHAPES = [((2, 128, 128, 128), 4), ((8, 32, 32, 256), 8)]


def build(package: str, dim: int, heads: int, causal: bool = False):
    if package == "ours":
        from axial_attention import AxialAttention

        return AxialAttention(dim, 2, heads=heads, dim_index=-1, causal=causal)
    return load_peer().AxialAttention(dim, 2, heads=heads, dim_index=-1)


def step(module, x: torch.Tensor, backward: bool) -> None:
    if backward:
        module(x).sum().backward()
    else:
        with torch.no_grad():
            module(x)


def child(config: dict) -> None:
    """One configuration in a fresh process: print its peak memory above the baseline."""
    torch.manual_seed(0)
    torch.set_num_threads(config["threads"])
    device, dtype = torch.device(config["device"]), getattr(torch, config["dtype"])
    shape, heads = config["shape"], config["heads"]
    module = build(config["package"], shape[-1], heads, config.get("causal", False)).to(device, dtype)
    x = torch.randn(shape, device=device, dtype=dtype, requires_grad=config["backward"])
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(module, x, config["backward"])
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        with PeakRSS() as rss:
            step(module, x, config["backward"])
        peak = rss.peak_bytes
    print(json.dumps({"peak_bytes": peak}))


def timed(device: torch.device, dtype: torch.dtype, shape, heads: int, backward: bool, repeats: int) -> dict:
    torch.manual_seed(0)
    modules = {
        "ours": build("ours", shape[-1], heads),
        "ours causal": build("ours", shape[-1], heads, causal=True),
        "0.6.1": build("peer", shape[-1], heads),
    }
    x = torch.randn(shape, device=device, dtype=dtype, requires_grad=backward)

    def runner(module):
        module = module.to(device, dtype)

        def run():
            step(module, x, backward)
            if device.type == "cuda":
                torch.cuda.synchronize()

        return run

    return interleaved_medians({name: runner(m) for name, m in modules.items()}, repeats=repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads; 1 by default because on a shared machine multi-threaded timings are "
                             "dominated by scheduling (a stalled thread holds up every parallel region)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child))

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.set_num_threads(args.threads)
    threads = torch.get_num_threads() if device.type == "cpu" else None
    rows = []
    for shape, heads in SHAPES:
        for backward in (False, True):
            t = timed(device, dtype, shape, heads, backward, args.repeats)
            mem = {
                package: measure_in_subprocess(
                    "benchmarks.attention",
                    dict(package=package, shape=shape, heads=heads, backward=backward,
                         device=args.device, dtype=args.dtype, threads=args.threads),
                )["peak_bytes"]
                for package in ("ours", "peer")
            }
            rows.append([
                f"{tuple(shape)}, {heads} heads",
                "fwd+bwd" if backward else "fwd (no grad)",
                f"{t['ours'] * 1e3:.0f} ms",
                f"{t['0.6.1'] * 1e3:.0f} ms",
                f"**{t['0.6.1'] / t['ours']:.2f}x**",
                f"{t['ours causal'] / t['ours']:.2f}",
                f"{mem['ours'] / 2**20:.0f} / {mem['peer'] / 2**20:.0f} MiB",
                f"**{mem['ours'] / mem['peer']:.2f}**",
            ])
            print(" | ".join(rows[-1]), flush=True)
    where = f"{args.device}, {args.dtype}" + (f", {threads} threads" if threads else "")
    print(f"\nAxialAttention vs axial-attention 0.6.1 ({where}; median of {args.repeats}):\n")
    print(markdown_table(
        ["input (channel-last)", "pass", "ours", "0.6.1", "speed-up", "causal / non-causal time",
         "peak memory ours / 0.6.1", "memory ratio"],
        rows,
    ))


if __name__ == "__main__":
    main()
