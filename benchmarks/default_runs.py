"""What `axial-attention train` with no flags but `--data` costs a user: peak memory and time a step, on
videos and on 32x32x3 photos, with the defaults chosen for the data against the digits' defaults that
were applied to every data set before; and what --activation-checkpointing saves.

    python -m benchmarks.default_runs            # the docs' tables (about 10 minutes on 2 CPU cores)
    python -m benchmarks.default_runs --quick    # a few steps of tiny runs: to check the script runs

Part "defaults": each run is the real trainer (`train(data=...)`, the CLI's code path) for a few steps
with its final evaluation and samples, in a fresh process whose peak resident memory (VmHWM) is what
the table reports: everything a user's process holds, data and sampling included. Seconds a step are
the median over the logged intervals (every 5 steps). The photos are 32x32 patches cut from the two
photographs scikit-learn bundles (`load_sample_images`: 2 x 427 x 640 RGB), written to an .npy.

Part "checkpointing": the docs' image model at 32x32x3 (AutoregressiveAxialTransformer((3, 32, 32),
256, dim=64, heads=4, depth=2, dropout=0.3), batch 8), one training step with and without activation
checkpointing, each in a fresh process: the peak resident memory the step adds, its time, and the
gradients checked equal between the two.
"""
from __future__ import annotations

import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from axial_attention.training.defaults import data_defaults
from benchmarks.common import (
    PeakRSS,
    benchmark_parser,
    machine_description,
    markdown_table,
    measure_in_subprocess,
    set_threads,
    write_results,
)

BEFORE = {"batch_size": 32, "dim": 64, "depth": 4, "dropout": 0.3, "attn_dropout": 0.3, "past_window": 0}
PATCH, STRIDE = 32, 16


def photo_patches(path: Path) -> Path:
    """32x32 RGB patches (stride 16) of scikit-learn's two bundled photographs, uint8 (N, 3, 32, 32)."""
    from sklearn.datasets import load_sample_images

    patches = []
    for image in load_sample_images().images:
        h, w, _ = image.shape
        for y in range(0, h - PATCH + 1, STRIDE):
            for x in range(0, w - PATCH + 1, STRIDE):
                patches.append(image[y:y + PATCH, x:x + PATCH].transpose(2, 0, 1))
    np.save(path, np.stack(patches).astype(np.uint8))
    return path


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) * 1024


def child_run(config: dict) -> dict:
    """One trainer run in this (fresh) process: its peak resident memory and seconds a step."""
    from axial_attention.training import train

    threads = config.pop("threads")
    set_threads(threads)
    started = time.perf_counter()
    result = train(**config)
    seconds = time.perf_counter() - started
    records = [json.loads(line) for line in (Path(config["out"]) / "metrics.jsonl").read_text().splitlines()]
    logged = [(r["step"], r["seconds"]) for r in records if "seconds" in r]
    rates = [(t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(logged, logged[1:])]
    # the run's arguments without this machine's temporary paths
    args = {k: v for k, v in result["args"].items() if k != "out"}
    args["data"] = Path(args["data"]).name
    return {"peak_bytes": _peak_rss(), "seconds_per_step": statistics.median(rates), "run_seconds": seconds,
            "args": args}


def child_step(config: dict) -> dict:
    """Training steps of the docs' 32x32x3 image model: after a warm-up step (one-time allocations: thread
    pools, kernels), the resident memory the next step adds above the level before it, its time, and its
    gradients (saved for the comparison). The parent sets a fixed mmap threshold for the allocator, so
    that large blocks go back to the system when freed instead of being reused unseen by the next step."""
    from axial_attention import AutoregressiveAxialTransformer

    set_threads(config["threads"])
    torch.manual_seed(0)
    model = AutoregressiveAxialTransformer((3, config["side"], config["side"]), 256, dim=64, heads=4, depth=2,
                                           dropout=0.3)
    model.activation_checkpointing = config["checkpointing"]
    x = torch.randint(0, 256, (config["batch"], 3, config["side"], config["side"]),
                      generator=torch.Generator().manual_seed(0))

    def step() -> None:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same dropout masks in both processes
        model.bits_per_dim(x).mean().backward()

    step()
    with PeakRSS() as peak:
        started = time.perf_counter()
        step()
        seconds = time.perf_counter() - started
    torch.save({n: p.grad for n, p in model.named_parameters()}, config["grads"])
    return {"peak_bytes": peak.peak_bytes, "seconds": seconds}


def main() -> None:
    p = benchmark_parser(__doc__, common=("threads",), child=True, threads=dict(default=2))
    p.add_argument("--steps", type=int, default=30, help="steps of each trainer run (default: 30)")
    p.add_argument("--parts", nargs="+", choices=("defaults", "checkpointing"), default=["defaults", "checkpointing"])
    args = p.parse_args()
    if args.child:
        config = json.loads(args.child)
        kind = config.pop("kind")
        print(json.dumps(child_run(config) if kind == "run" else child_step(config)))
        return
    machine = machine_description()
    print(f"{machine}\n")
    with tempfile.TemporaryDirectory() as tmp:
        if "defaults" in args.parts:
            default_runs(args, Path(tmp))
        if "checkpointing" in args.parts:
            checkpointing(args, Path(tmp))


def default_runs(args, tmp: Path) -> None:
    steps = 6 if args.quick else args.steps
    photos = photo_patches(tmp / "photos.npy")
    data = {"moving digits (8 frames of 16x16)": ("moving-digits", False),
            f"photo patches (32x32x3, {len(np.load(photos))})": (str(photos), False)}
    rows, results = [], {}
    for name, (source, video) in data.items():
        # the earlier defaults take up to 20 s a step: a few steps, each logged
        for setting, options, run_steps, log_every in (("chosen for the data", {}, steps, 5),
                                                       ("the digits' (before)", BEFORE, 4, 1)):
            options = {**options, "steps": 3 if args.quick else run_steps}
            if args.quick:
                options.update(dim=8, depth=1, heads=2, batch_size=2)
            config = dict(kind="run", threads=args.threads, data=source, video=video, out=str(tmp / "run"),
                          overwrite=True, progress=False, log_every=1 if args.quick else log_every,
                          eval_every=10**6, checkpoint_every=10**6, samples_per_row=2, **options)
            run = measure_in_subprocess(__spec__.name, config)
            chosen = run["args"]
            results[f"{name}, {setting}"] = run
            rows.append([name, setting, f"{chosen['batch_size']}", f"{chosen['dim']}", f"{chosen['depth']}",
                         f"{chosen['attn_dropout']}", f"{chosen['past_window']}",
                         f"{run['peak_bytes'] / 2**30:.2f}", f"{run['seconds_per_step']:.2f}"])
            print(rows[-1], flush=True)
    caption = (f"`axial-attention train --data ...` with no other flag (but `--samples-per-row 2`), {steps} steps "
               f"(the earlier defaults: 4) and the run's final evaluation and samples, each in a fresh process; "
               f"the defaults chosen for the data against the digits' defaults that every data set got before "
               f"({data_defaults((1, 8, 8))}); {args.threads} threads:")
    table = markdown_table(["data", "defaults", "batch", "width", "layers per level", "attention-weight dropout",
                            "past window", "peak resident memory (GiB)", "seconds a step"], rows)
    print(f"\n{caption}\n\n{table}")
    write_results(__spec__.name, args, "defaults", results, [(caption, table)])


def checkpointing(args, tmp: Path) -> None:
    side, batch = (8, 2) if args.quick else (32, 8)
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(64 * 1024)  # glibc: blocks above 64 KiB are mmap'd, freed at once
    measured = {}
    for on in (False, True):
        measured[on] = measure_in_subprocess(__spec__.name, dict(
            kind="step", threads=args.threads, side=side, batch=batch, checkpointing=on,
            grads=str(tmp / f"grads-{on}.pt")))
    plain, recomputed = (torch.load(tmp / f"grads-{on}.pt") for on in (False, True))
    equal = all(torch.equal(plain[n], recomputed[n]) for n in plain)
    cut = 1 - measured[True]["peak_bytes"] / measured[False]["peak_bytes"]
    slower = measured[True]["seconds"] / measured[False]["seconds"]
    caption = (f"One training step of AutoregressiveAxialTransformer((3, {side}, {side}), 256, dim=64, heads=4, "
               f"depth=2, dropout=0.3), batch {batch}, each in a fresh process ({args.threads} threads): the resident "
               f"memory a step adds after a warm-up step (freed blocks returned to the system), its time; gradients "
               f"{'identical' if equal else 'DIFFERENT'} with and without checkpointing:")
    table = markdown_table(
        ["activation checkpointing", "peak memory of the step (MiB)", "step time (s)", "memory saved", "time"],
        [["off", f"{measured[False]['peak_bytes'] / 2**20:.0f}", f"{measured[False]['seconds']:.2f}", "", "1x"],
         ["on", f"{measured[True]['peak_bytes'] / 2**20:.0f}", f"{measured[True]['seconds']:.2f}",
          f"**{cut:.0%}**", f"{slower:.2f}x"]])
    print(f"\n{caption}\n\n{table}")
    write_results(__spec__.name, args, "checkpointing", {"plain": measured[False], "checkpointing": measured[True],
                                                         "memory_saved": cut, "time_ratio": slower,
                                                         "gradients_equal": equal}, [(caption, table)])
    if not equal:
        raise SystemExit("activation checkpointing changed the gradients")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
