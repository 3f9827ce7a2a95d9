"""Measurement helpers shared by the benchmark scripts: interleaved timing and per-process peak memory.

The machines these run on are shared and noisy, so variants are timed alternately in one process and
compared by median; memory is the peak resident set of a fresh process that runs one configuration.
"""
from __future__ import annotations

import json
import platform
import re
import statistics
import subprocess
import sys
import time
from typing import Callable, Mapping, Optional

import torch


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

    def __enter__(self) -> "PeakRSS":
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


def machine_description(device: Optional[torch.device] = None) -> str:
    """One line naming what a measurement ran on: the same ratio differs between AVX2 and AVX-512 CPUs,
    and between GPUs, so every benchmark prints this and every README table states it."""
    parts = [f"CPU {cpu_model()}", f"ISA {torch.backends.cpu.get_cpu_capability()}",
             f"{torch.get_num_threads()} threads", f"torch {torch.__version__}"]
    if device is not None and torch.device(device).type == "cuda":
        parts += [f"GPU {torch.cuda.get_device_name(device)}", f"CUDA {torch.version.cuda}"]
    return ", ".join(parts)
