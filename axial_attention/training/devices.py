"""Devices, precisions and processes: what `--device`, `--precision` and torchrun ask for."""
from __future__ import annotations

import contextlib
import os
import re
from typing import Iterator

import torch
import torch.distributed as dist

from .options import option

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def select_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' (CUDA when present, then MPS, else the CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'.
    Under torchrun, 'cuda' means this process' GPU (LOCAL_RANK)."""
    if not isinstance(name, str) or not DEVICE_PATTERN.match(name):
        raise ValueError(f"{option('device')} must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"{option('device')} {name}: CUDA is not available ({why}); use {option('device')} cpu "
                             f"or auto")
        index = int(name.split(":")[1]) if ":" in name else local_rank
        if index >= torch.cuda.device_count():
            raise ValueError(f"{option('device')} {name}: GPU {index} does not exist "
                             f"({torch.cuda.device_count()} visible)")
        return torch.device("cuda", index)
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{option('device')} mps: MPS (Apple GPU) is not available on this machine; use "
                         f"{option('device')} cpu or auto")
    return torch.device(name)


def check_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `--precision` (None for fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"{option('precision')} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"{option('precision')} bf16: {torch.cuda.get_device_name(device)} does not support "
                         f"bfloat16; use fp16")
    return PRECISIONS[precision]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def init_distributed(device_name: str) -> tuple[int, int, int]:
    """(rank, world size, local rank); joins torchrun's process group: NCCL for CUDA, gloo otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_nccl = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
        if use_nccl:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if use_nccl else "gloo")
    return dist.get_rank(), world, local_rank


@contextlib.contextmanager
def cpu_threads(device: torch.device, threads: int = 1) -> Iterator[None]:
    """Cached sampling runs many tiny ops; on the CPU waking extra threads for them costs more than it saves."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
