"""AxialImageTransformer against lucidrains' axial-attention 0.6.1: peak memory and time of a training step.

    python -m benchmarks.transformer                  # dim 64, 48x48, batch 4, depth 1/4/12: the README table
    python -m benchmarks.transformer --depths 1 4 --repeats 3
    python -m benchmarks.transformer --quick          # depth 1, one timed step: to check the script runs

Memory: each (package, reversible, depth) runs in a fresh process that takes two forward+backward
steps and reports the peak resident memory of each above the RSS just before it:
  - "steady": the second step, with weights, gradients and input already resident: what training
    adds per step (activations and workspaces); the figure the memory targets are about;
  - "first": the first step, which also allocates the gradients (grows with the parameter count).
Large allocations are served by mmap in those processes (MALLOC_MMAP_THRESHOLD_), so freed tensors
leave the resident set and the peak is that of the live tensors, not of the allocator's free lists.
Time: both packages with the same weights, alternated in one fresh process, median of --repeats.
The input has requires_grad=True for both packages: 0.6.1's reversible transformer fails without it
("element 0 of tensors does not require grad"); ours does not need it.
"""
from __future__ import annotations

import contextlib
import gc
import json
import os

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

DIM, SIZE, BATCH = 64, 48, 4
MODULE = "benchmarks.transformer"


def build(package: str, depth: int, reversible: bool, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    if package == "ours":
        from axial_attention import AxialImageTransformer

        return AxialImageTransformer(DIM, depth, reversible=reversible)
    return load_peer().AxialImageTransformer(DIM, depth, reversible=reversible)


def make_input() -> torch.Tensor:
    return torch.randn(BATCH, DIM, SIZE, SIZE, generator=torch.Generator().manual_seed(1), requires_grad=True)


def train_step(model: torch.nn.Module, x: torch.Tensor) -> None:
    model(x).square().mean().backward()


def memory_child(config: dict) -> dict:
    model = build(config["package"], config["depth"], config["reversible"])
    x = make_input()
    peaks = []
    for _ in range(2):
        gc.collect()
        with PeakRSS() as rss:
            train_step(model, x)
        peaks.append(rss.peak_bytes)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"first": peaks[0], "steady": peaks[1], "param_bytes": param_bytes}


def time_child(config: dict) -> dict:
    from axial_attention import convert_lucidrains_state_dict

    peer = build("peer", config["depth"], config["reversible"])
    ours = build("ours", config["depth"], config["reversible"])
    ours.load_state_dict(convert_lucidrains_state_dict(peer.state_dict()))
    x = make_input()
    return interleaved_medians(
        {"ours": lambda: train_step(ours, x), "peer": lambda: train_step(peer, x)}, repeats=config["repeats"]
    )


@contextlib.contextmanager
def mmap_large_allocations():
    previous = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MALLOC_MMAP_THRESHOLD_"]
        else:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = previous


def main() -> None:
    parser = benchmark_parser(__doc__, child=True)
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 4, 12])
    args = parser.parse_args()
    if args.child:
        config = json.loads(args.child)
        set_threads(config["threads"])
        result = memory_child(config) if config["mode"] == "memory" else time_child(config)
        print(json.dumps(result))
        return
    if args.quick:
        args.depths, args.repeats = [1], 1

    set_threads(args.threads)  # here for the machine line; each measuring process sets it again
    machine = machine_description()
    print(f"Machine: {machine}", flush=True)
    mib = 2.0**20
    results = {}
    for depth in args.depths:
        for reversible in (False, True):
            memory = {}
            with mmap_large_allocations():
                for package in ("ours", "peer"):
                    config = dict(mode="memory", package=package, depth=depth, reversible=reversible,
                                  threads=args.threads)
                    memory[package] = measure_in_subprocess(MODULE, config)
            config = dict(mode="time", depth=depth, reversible=reversible, repeats=args.repeats, threads=args.threads)
            times = measure_in_subprocess(MODULE, config)
            results[depth, reversible] = memory, times
            ours, peer = memory["ours"], memory["peer"]
            print(
                f"depth {depth:2d} reversible={reversible!s:5}: steady peak ours {ours['steady'] / mib:7.1f} MiB"
                f" 0.6.1 {peer['steady'] / mib:7.1f} MiB; first step ours {ours['first'] / mib:7.1f}"
                f" 0.6.1 {peer['first'] / mib:7.1f} MiB; time ours {times['ours']:.2f} s 0.6.1 {times['peer']:.2f} s",
                flush=True,
            )

    rows, measured = [], []
    for (depth, reversible), (memory, times) in results.items():
        ours, peer = memory["ours"], memory["peer"]
        measured.append({"depth": depth, "reversible": reversible, "peak_bytes": memory, "seconds": times,
                         "steady_ratio": ours["steady"] / peer["steady"], "time_ratio": times["ours"] / times["peer"]})
        rows.append(
            [
                str(depth),
                "yes" if reversible else "no",
                f"{ours['steady'] / mib:.0f}",
                f"{peer['steady'] / mib:.0f}",
                f"{ours['steady'] / peer['steady']:.2f}",
                f"{ours['first'] / mib:.0f}",
                f"{peer['first'] / mib:.0f}",
                f"{times['ours']:.2f}",
                f"{times['peer']:.2f}",
                f"{times['ours'] / times['peer']:.2f}",
            ]
        )
    print()
    summary = {}
    lo, hi = min(args.depths), max(args.depths)
    if (lo, True) in results and (hi, True) in results and lo != hi:
        top, bottom = results[hi, True][0], results[lo, True][0]
        summary = {
            "reversible_steady_growth": {package: top[package]["steady"] / bottom[package]["steady"]
                                         for package in ("ours", "peer")},
            "reversible_deepest_steady_ratio": top["ours"]["steady"] / top["peer"]["steady"],
            "reversible_deepest_first_ratio": top["ours"]["first"] / top["peer"]["first"],
        }
        growth = summary["reversible_steady_growth"]
        print(f"reversible, steady peak depth {hi} / depth {lo}: ours {growth['ours']:.2f}x, "
              f"0.6.1 {growth['peer']:.2f}x")
        print(f"reversible depth {hi} steady peak, ours / 0.6.1: {summary['reversible_deepest_steady_ratio']:.2f}")
        print(f"reversible depth {hi} first-step peak, ours / 0.6.1: {summary['reversible_deepest_first_ratio']:.2f}")
    print()
    caption = (f"Training step, dim {DIM}, {SIZE}x{SIZE}, batch {BATCH}, float32; {machine}; "
               f"time median of {args.repeats}:")
    header = [
        "depth", "reversible", "steady peak MiB, ours", "0.6.1", "ratio",
        "first-step peak MiB, ours", "0.6.1", "time s, ours", "0.6.1", "ratio",
    ]
    table = markdown_table(header, rows)
    print(f"{caption}\n\n{table}")
    write_results(MODULE, args, "training step", {"measurements": measured, **summary}, [(caption, table)])


if __name__ == "__main__":
    main()
