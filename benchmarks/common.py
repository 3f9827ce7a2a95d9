"""What the benchmark scripts share: their command-line options, interleaved timing, per-process peak
memory, the machine's description and matmul peak, and the JSON file each writes its results to.

The machines these run on are shared and noisy, so variants are timed alternately in one process and
compared by median; memory is the peak resident set of a fresh process that runs one configuration.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# The options most benchmarks take, with the defaults a script gets unless it passes its own.
SHARED_OPTIONS = {
    "threads": dict(type=int, default=None, help="CPU threads (default: torch's default)"),
    "repeats": dict(type=int, default=5, help="timed runs of each variant (the median is reported)"),
    "device": dict(default="cpu", help="the device to run on (default: cpu)"),
    "dtype": dict(default="float32", choices=("float32", "bfloat16", "float16"), help="the dtype to run in"),
}


def benchmark_parser(doc: str, common: Sequence[str] = ("threads", "repeats"), child: bool = False,
                     **overrides: dict) -> argparse.ArgumentParser:
    """The parser a benchmark script starts from; the script adds only its own options.

    It offers the SHARED_OPTIONS named in `common` (a script names only those it honours), each with the
    argparse settings in `overrides[name]` replacing the shared ones (e.g. threads=dict(default=1)), then
    --results and --quick, and with `child` the hidden --child of measure_in_subprocess.
    """
    unknown = set(overrides) - set(common)
    if unknown:
        raise ValueError(f"overrides for options the script does not take: {sorted(unknown)}")
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in common:
        parser.add_argument(f"--{name}", **{**SHARED_OPTIONS[name], **overrides.get(name, {})})
    parser.add_argument("--results", type=Path, metavar="PATH",
                        help="where to write the results as JSON (default: benchmarks/results/<script>.json, "
                             "and nowhere for --quick, so a smoke run never replaces the real figures)")
    parser.add_argument("--quick", action="store_true", help="tiny settings, to check the script runs")
    if child:
        parser.add_argument("--child", help=argparse.SUPPRESS)  # one configuration's JSON, in a fresh process
    return parser


def set_threads(threads: int | None) -> None:
    """torch's CPU threads; None keeps torch's default."""
    if threads:
        torch.set_num_threads(threads)


def interleaved_medians(fns: Mapping[str, Callable[[], object]], repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each function, timed round-robin so drift hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _proc_status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{key}:\s+(\d+) kB", f.read()).group(1)) * 1024


class PeakRSS:
    """Peak resident memory of this process above its level at entry (Linux).

    Writing 5 to /proc/self/clear_refs resets the high-water mark, so a peak reached while importing
    or building the inputs does not hide the peak of the step being measured.
    """

    def __enter__(self) -> PeakRSS:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        self.baseline = _proc_status_bytes("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        self.peak_bytes = _proc_status_bytes("VmHWM") - self.baseline


def measure_in_subprocess(module: str, config: dict) -> dict:
    """Run `python -m <module> --child '<json config>'` and return the JSON it prints last."""
    out = subprocess.run(
        [sys.executable, "-m", module, "--child", json.dumps(config)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo; the platform's processor string elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            match = re.search(r"^model name\s*:\s*(.+)$", f.read(), flags=re.M)
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_fields(device: torch.device | None = None) -> dict:
    """What a measurement ran on, field by field: the same ratio differs between AVX2 and AVX-512 CPUs,
    and between GPUs."""
    fields = {"cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "threads": torch.get_num_threads(), "torch": torch.__version__}
    if device is not None and torch.device(device).type == "cuda":
        fields.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    return fields


def machine_description(device: torch.device | None = None) -> str:
    """machine_fields in one line: every benchmark prints it and every README table states it."""
    fields = machine_fields(device)
    parts = [f"CPU {fields['cpu']}", f"ISA {fields['cpu_capability']}", f"{fields['threads']} threads",
             f"torch {fields['torch']}"]
    if "gpu" in fields:
        parts += [f"GPU {fields['gpu']}", f"CUDA {fields['cuda']}"]
    return ", ".join(parts)


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 10,
                warmup: int = 2) -> float:
    """The best FLOP/s of a (size x size) @ (size x size) product: the rate this machine attains for this
    dtype and thread count, against which a layer's FLOP rate is stated."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    best = math.inf
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def write_results(module: str, args: argparse.Namespace, part: str, results: dict,
                  tables: Sequence[tuple[str, str]], device: torch.device | None = None,
                  machine: str | None = None) -> Path | None:
    """Store one part of a benchmark's results, next to the README tables it printed.

    The file (--results, else benchmarks/results/<script>.json; none for a --quick run without --results)
    maps each part to {"date", "command", "machine": {"description", "cpu", "cpu_capability", "threads",
    "torch"[, "gpu", "cuda"]}, "arguments", "results", "tables": [{"caption", "markdown"}]}; the other parts
    already there are kept, so running one part does not erase another's. `machine` replaces the
    description where the script qualifies it. Written to a temporary file and renamed over the old one,
    so an interrupted run leaves the previous file whole. Returns the path written, or None.
    """
    path = args.results or (None if args.quick else RESULTS_DIR / f"{module.rsplit('.', 1)[-1]}.json")
    if path is None:
        print("Results: not written (a --quick run; --results PATH writes them)")
        return None
    entry = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", module, *sys.argv[1:]]),
        "machine": {"description": machine or machine_description(device), **machine_fields(device)},
        "arguments": {k: v for k, v in vars(args).items() if k not in ("child", "results")},
        "results": results,
        "tables": [{"caption": caption, "markdown": markdown} for caption, markdown in tables],
    }
    path = Path(path)
    everything = json.loads(path.read_text()) if path.exists() else {}
    everything[part] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        try:
            json.dump(everything, f, indent=2)
            f.write("\n")
        except BaseException:  # e.g. a value JSON cannot hold: leave no half-written temporary file behind
            os.unlink(f.name)
            raise
    os.replace(f.name, path)
    print(f"Results: {path}")
    return path
