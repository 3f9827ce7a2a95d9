"""AxialAttention against lucidrains' axial-attention 0.6.1: time and peak memory, ratios from one run.

    python -m benchmarks.attention --threads 2             # CPU, float32: prints the README table
    python -m benchmarks.attention --threads 2 --isa avx2  # the same with the CPU kernels restricted to AVX2
    python -m benchmarks.attention --threads 2 --breakdown # also: where ours spends its time
    python -m benchmarks.attention --device cuda --dtype bfloat16
    python -m benchmarks.attention --quick                 # tiny shapes, to check the script runs

Time: forward without grad and forward+backward, both packages alternated in one process (median of
--repeats). Memory: peak resident memory (CPU) or peak allocated bytes (CUDA) of a fresh process that
runs one step of one configuration, above that process's baseline after the input was made.

Every run prints the machine (CPU model, the vector ISA torch's kernels use, threads, torch; GPU and CUDA)
and, on CPU, the machine's float32 matmul peak measured in the same run, against which the layer's FLOP
rate is stated. `--isa avx2` re-runs the script with ATEN_CPU_CAPABILITY=avx2 (ATen's vectorised kernels,
SDPA's CPU flash kernel among them), ONEDNN_MAX_CPU_ISA=AVX2 and MKL_ENABLE_INSTRUCTIONS=AVX2: on a CPU
with AVX-512 this emulates an AVX2-only one (same cores, same caches), for both packages alike.
"""
from __future__ import annotations

import json
import os
import sys
from collections import defaultdict

import torch

from benchmarks.common import (
    PeakRSS,
    benchmark_parser,
    interleaved_medians,
    machine_description,
    markdown_table,
    matmul_peak,
    measure_in_subprocess,
    write_results,
)
from benchmarks.peer import load_peer

# (batch, height, width, dim), heads: the shapes the issue asks about, channel-last as 0.6.1's README latents.
SHAPES = [((2, 128, 128, 128), 4), ((8, 32, 32, 256), 8)]
QUICK_SHAPES = [((1, 8, 8, 16), 2)]


ISA_ENVIRONMENT = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}


def restrict_isa(isa: str) -> None:
    """Re-run this command with the CPU libraries restricted to `isa` (they read it once, at start-up)."""
    wanted = ISA_ENVIRONMENT[isa]
    if any(os.environ.get(key) != value for key, value in wanted.items()):
        os.execve(sys.executable, [sys.executable, "-m", __spec__.name, *sys.argv[1:]], {**os.environ, **wanted})


def layer_flops(shape, heads: int) -> dict[str, float]:
    """Forward FLOPs of AxialAttention (2 axes, summed) on a channel-last input: the projections (q, k, v and
    out per axis) and the attention's two matrix products per axis. Backward is counted as twice forward."""
    batch, *axial, dim = shape
    positions = batch * axial[0] * axial[1]
    projections = len(axial) * 4 * 2 * positions * dim * dim
    attention = sum(2 * 2 * positions * length * dim for length in axial)  # QK^T and weights @ V
    return {"projections": projections, "attention": attention, "total": projections + attention}


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


def _part(event) -> str:
    """Which part of the layer a profiled op's own time belongs to; SDPA's kernels include their buffer fills."""
    node = event
    while node is not None:
        if "scaled_dot_product" in node.name:
            return "attention (SDPA)"
        node = node.cpu_parent
    name = event.name.removeprefix("aten::")
    if name in ("mm", "addmm", "addmm_", "bmm", "matmul", "linear"):
        return "projections (matmul)"
    if name in ("copy_", "clone", "contiguous", "fill_", "zero_", "empty_strided", "empty"):
        return "layout copies and fills"
    if name in ("add", "add_", "sum"):
        return "sums (output, gradient accumulation)"
    return "other"


def breakdown(device: torch.device, dtype: torch.dtype, shape, heads: int, backward: bool, seconds: float,
              peak: float) -> list[list[str]]:
    """Ours' step split by part (torch.profiler self times, scaled to the step's median time `seconds`)."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    module = build("ours", shape[-1], heads).to(device, dtype)
    x = torch.randn(shape, device=device, dtype=dtype, requires_grad=backward)
    step(module, x, backward)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step(module, x, backward)
    parts: dict[str, float] = defaultdict(float)
    for event in prof.events():
        parts[_part(event)] += event.self_cpu_time_total
    total = sum(parts.values())
    flops = layer_flops(shape, heads)
    scale = 3 if backward else 1
    rows = []
    for part, key in (("projections (matmul)", "projections"), ("attention (SDPA)", "attention")):
        part_seconds = seconds * parts.pop(part, 0.0) / total
        flop_rate = scale * flops[key] / part_seconds
        rate = f"{flop_rate / 1e9:.0f} GFLOP/s ({flop_rate / peak:.0%} of peak)"
        rows.append([part, f"{part_seconds * 1e3:.1f} ms", f"{part_seconds / seconds:.0%}", rate])
    rest = ", ".join(f"{part} {seconds * t / total * 1e3:.1f} ms" for part, t in sorted(parts.items()))
    rest_seconds = seconds * sum(parts.values()) / total
    rows.append([f"the rest: {rest}", f"{rest_seconds * 1e3:.1f} ms", f"{rest_seconds / seconds:.0%}", ""])
    return rows


def main() -> None:
    parser = benchmark_parser(
        __doc__, common=("threads", "repeats", "device", "dtype"), child=True,
        repeats=dict(default=7),
        threads=dict(default=1, help="CPU threads; 1 by default because on a shared machine multi-threaded timings "
                                     "are dominated by scheduling (a stalled thread holds up every parallel region)"),
    )
    parser.add_argument("--isa", choices=["native", *ISA_ENVIRONMENT], default="native",
                        help="restrict the CPU kernels to this vector ISA (see the module docstring)")
    parser.add_argument("--breakdown", action="store_true", help="also split our time by part (torch.profiler)")
    args = parser.parse_args()
    if args.isa != "native":
        restrict_isa(args.isa)
    if args.child:
        return child(json.loads(args.child))
    shapes = QUICK_SHAPES if args.quick else SHAPES
    if args.quick:
        args.repeats = 1

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.set_num_threads(args.threads)
    machine = machine_description(device)
    if args.isa != "native":
        machine += f" (restricted with {' '.join(f'{k}={v}' for k, v in ISA_ENVIRONMENT[args.isa].items())})"
    print(f"Machine: {machine}", flush=True)
    peak = matmul_peak(device, dtype)
    print(f"{args.dtype} matmul peak (2048^3 product, best of 10): {peak / 1e9:.0f} GFLOP/s", flush=True)
    rows, parts, results = [], [], []
    for shape, heads in shapes:
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
            rate = (3 if backward else 1) * layer_flops(shape, heads)["total"] / t["ours"]
            label = f"{tuple(shape)}, {heads} heads"
            kind = "fwd+bwd" if backward else "fwd (no grad)"
            results.append({
                "shape": shape, "heads": heads, "backward": backward, "seconds": t, "peak_bytes": mem,
                "speed_up": t["0.6.1"] / t["ours"], "flop_rate": rate, "share_of_peak": rate / peak,
                "causal_over_non_causal": t["ours causal"] / t["ours"], "memory_ratio": mem["ours"] / mem["peer"],
            })
            rows.append([
                label,
                kind,
                f"{t['ours'] * 1e3:.0f} ms",
                f"{t['0.6.1'] * 1e3:.0f} ms",
                f"**{t['0.6.1'] / t['ours']:.2f}x**",
                f"{rate / 1e9:.0f} GFLOP/s = {rate / peak:.0%}",
                f"{t['ours causal'] / t['ours']:.2f}",
                f"{mem['ours'] / 2**20:.0f} / {mem['peer'] / 2**20:.0f} MiB",
                f"**{mem['ours'] / mem['peer']:.2f}**",
            ])
            print(" | ".join(rows[-1]), flush=True)
            if args.breakdown:
                for row in breakdown(device, dtype, shape, heads, backward, t["ours"], peak):
                    parts.append([label, kind, *row])
    tables = [(
        f"AxialAttention vs axial-attention 0.6.1 ({args.device}, {args.dtype}; median of {args.repeats}); "
        f"{machine}; matmul peak {peak / 1e9:.0f} GFLOP/s:",
        markdown_table(
            ["input (channel-last)", "pass", "ours", "0.6.1", "speed-up", "ours: FLOP rate = share of matmul peak",
             "causal / non-causal time", "peak memory ours / 0.6.1", "memory ratio"],
            rows,
        ),
    )]
    if parts:
        tables.append(("Where our time goes (torch.profiler self time by part, scaled to the median step time):",
                       markdown_table(["input", "pass", "part", "time", "share", "FLOP rate"], parts)))
    for caption, table in tables:
        print(f"\n{caption}\n\n{table}")
    write_results(__spec__.name, args, f"{args.device} {args.dtype} {args.isa}",
                  {"matmul_peak_flops": peak, "measurements": results}, tables, device, machine)


if __name__ == "__main__":
    main()
