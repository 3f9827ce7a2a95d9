"""What AxialAttention's options cost: rotary positions, bias + gating, and bounded memory on volumes.

    python -m benchmarks.attention_options                # the docs' tables (about 15 minutes on 2 CPU cores)
    python -m benchmarks.attention_options --part volume  # one part
    python -m benchmarks.attention_options --quick        # tiny shapes, to check the script runs

Part "overhead": the forward without grad at (2, 128, 128, 128) channel-last, 4 heads, of the plain layer,
`rotary=True`, an AlphaFold-style pair bias per axis ((batch, heads, L, L), shared by every line),
`gating=True`, and the bias with gating, alternated in one process (median of --repeats); the ratios to
the plain layer.

Part "volume": a (1, 32, D, D, D) volume, channels at dim 1, 4 heads, one forward + backward, D = 64, 96,
128: the default layer, the bounded path at two `chunk_size`s (CHUNKS) and axial-attention 0.6.1 (where its
estimated peak fits in half this machine's memory). Two chunk sizes because resident memory depends on the
C allocator as much as on the layer: glibc's malloc serves buffers under 32 MiB (its largest mmap threshold)
from its heap, which keeps freed memory, so chunks of 2^17 positions (16 MiB a q tensor here) leave the
process far above the tensors alive at any time, while chunks of 2^18 (32 MiB) are mapped and returned.
Each configuration runs in a fresh process that reports the peak resident memory the step adds above the
level after the input was made and the step's seconds (one step, after a step on a 4^3 volume that pays the
one-time set-up: at these sizes a step takes seconds to a minute, so one step is timed, not a median).
"""
from __future__ import annotations

import json
import os
import time

import torch

from benchmarks.common import (
    PeakRSS,
    benchmark_parser,
    interleaved_medians,
    machine_description,
    markdown_table,
    measure_in_subprocess,
    set_threads,
    write_results,
)
from benchmarks.peer import load_peer

OVERHEAD_SHAPE, QUICK_OVERHEAD_SHAPE, HEADS = (2, 128, 128, 128), (1, 8, 8, 16), 4
SIDES, QUICK_SIDES, CHANNELS = (64, 96, 128), (8,), 32
CHUNKS = (1 << 18, 1 << 17)  # positions per chunk: 16 and 8 slices of a 128^2 plane
PEER_BYTES_PER_VOXEL_CHANNEL = 8.75e9 / (32 * 96**3)  # 0.6.1's measured peak at 96^3 (the issue), scaled


def build_layer(package: str, dim: int, heads: int, dim_index: int = -1, num_axes: int = 2, **options):
    if package == "0.6.1":
        return load_peer().AxialAttention(dim, num_axes, heads=heads, dim_index=dim_index)
    from axial_attention import AxialAttention

    return AxialAttention(dim, num_axes, heads=heads, dim_index=dim_index, **options)


def overhead(shape, repeats: int) -> dict:
    torch.manual_seed(0)
    batch, height, width, dim = shape
    x = torch.randn(shape)
    biases = (torch.randn(batch, HEADS, height, height), torch.randn(batch, HEADS, width, width))
    layers = {"plain": build_layer("ours", dim, HEADS), "rotary": build_layer("ours", dim, HEADS, rotary=True),
              "bias": build_layer("ours", dim, HEADS), "gating": build_layer("ours", dim, HEADS, gating=True),
              "bias + gating": build_layer("ours", dim, HEADS, gating=True)}

    def forward(name):
        layer = layers[name]
        kwargs = {"attn_bias": biases} if name.startswith("bias") else {}

        def run():
            with torch.no_grad():
                layer(x, **kwargs)

        return run

    seconds = interleaved_medians({name: forward(name) for name in layers}, repeats=repeats)
    return {name: {"seconds": s, "ratio": s / seconds["plain"]} for name, s in seconds.items()}


def child(config: dict) -> None:
    """One volume configuration in a fresh process: peak memory and seconds of forward + backward."""
    set_threads(config["threads"])
    torch.manual_seed(0)
    side = config["side"]
    options = {"chunk_size": config["chunk_size"]} if config["chunk_size"] else {}
    layer = build_layer(config["package"], CHANNELS, HEADS, dim_index=1, num_axes=3, **options)
    layer(torch.randn(1, CHANNELS, 4, 4, 4, requires_grad=True)).sum().backward()  # one-time set-up, not timed
    layer.zero_grad(set_to_none=True)
    x = torch.randn(1, CHANNELS, side, side, side, requires_grad=True)
    with PeakRSS() as rss:
        start = time.perf_counter()
        layer(x).sum().backward()
        seconds = time.perf_counter() - start
    print(json.dumps({"peak_bytes": rss.peak_bytes, "seconds": seconds}))


def volume(sides, threads: int) -> dict:
    available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    results = {}
    for side in sides:
        variants = {"default": ("ours", None), **{f"chunk_size={c}": ("ours", c) for c in CHUNKS},
                    "0.6.1": ("0.6.1", None)}
        for name, (package, chunk) in variants.items():
            if package == "0.6.1" and PEER_BYTES_PER_VOXEL_CHANNEL * CHANNELS * side**3 > available / 2:
                results[f"{side} {name}"] = None  # would not fit: not run
                continue
            config = {"package": package, "side": side, "chunk_size": chunk, "threads": threads}
            measured = measure_in_subprocess(__spec__.name, config)
            results[f"{side} {name}"] = {**measured, "side": side, "variant": name,
                                         "seconds_per_megavoxel": measured["seconds"] / (side**3 / 1e6)}
            print(side, name, measured, flush=True)
    return results


def main() -> None:
    p = benchmark_parser(__doc__, common=("threads", "repeats"), child=True, threads=dict(default=2),
                         repeats=dict(default=15))  # the ratios are a few percent: more repeats than usual
    p.add_argument("--part", choices=("overhead", "volume", "both"), default="both")
    args = p.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    set_threads(args.threads)
    machine = machine_description()
    print(f"Machine: {machine}")
    if args.part in ("overhead", "both"):
        shape = QUICK_OVERHEAD_SHAPE if args.quick else OVERHEAD_SHAPE
        results = overhead(shape, args.repeats)
        rows = [[name, f"{r['seconds'] * 1e3:.0f}", f"{r['ratio']:.3f}x"] for name, r in results.items()]
        caption = (f"{machine}. AxialAttention forward without grad at {shape} (channel-last), {HEADS} heads, "
                   f"median of {args.repeats}, alternated in one run; the ratio to the plain layer:")
        table = markdown_table(["layer", "ms", "vs plain"], rows)
        print(caption, table, sep="\n")
        write_results(__spec__.name, args, "overhead", {"shape": list(shape), "layers": results}, [(caption, table)])
    if args.part in ("volume", "both"):
        sides = QUICK_SIDES if args.quick else SIDES
        results = volume(sides, args.threads)
        rows = []
        for key, r in results.items():
            side, name = key.split(" ", 1)
            rows.append([f"{side}^3", name, "does not fit" if r is None else f"{r['peak_bytes'] / 1e9:.2f}",
                         "-" if r is None else f"{r['seconds']:.1f}",
                         "-" if r is None else f"{r['seconds_per_megavoxel']:.2f}"])
        caption = (f"{machine}. AxialAttention on a (1, {CHANNELS}, D, D, D) volume (3 axes, channels at dim 1), "
                   f"{HEADS} heads, one forward + backward in a fresh process; peak memory above the input:")
        table = markdown_table(["D", "layer", "peak GB", "seconds", "seconds per 10^6 voxels"], rows)
        print(caption, table, sep="\n")
        write_results(__spec__.name, args, "volume", results, [(caption, table)])


if __name__ == "__main__":
    main()
