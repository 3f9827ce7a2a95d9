"""A run folder's training state: what --resume reads back and checks, and the random state of each rank.

The state (training_state.pt) is loaded with weights_only=True; every file of the folder is written
atomically (models/pretrained.py's write_atomically), so a killed run leaves its last checkpoint whole.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist

from ..models.pretrained import WEIGHTS_NAME, write_atomically
from .config import RunError, TrainConfig
from .data import resolvable
from .options import option, switch

STATE_NAME, METRICS_NAME, RESULTS_NAME = "training_state.pt", "metrics.jsonl", "results.json"
STATE_FORMAT = 1
# Arguments that define the trajectory: resuming with other values would not continue the same run.
# --steps may grow: a finished run is extended, its cosine schedule stretched to the new total.
RESUME_MUST_MATCH = ("data", "video", "levels", "size", "seed", "batch_size", "grad_accum", "lr",
                     "weight_decay", "dim", "heads", "dim_heads", "depth", "inner_depth", "dropout", "attn_dropout",
                     "ema", "ema_decay", "past_window", "past_slices", "pos_emb", "warmup")
# What a run saved before an option existed used (its args lack the key).
BEFORE_THE_OPTION = {"past_window": 0, "dim_heads": None, "pos_emb": "learned"}



def load_state(path: Path, device: torch.device) -> dict:
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # a truncated zip, a foreign pickle: torch raises several types
        raise RunError(f"{path}: not a readable training state ({type(error).__name__}: "
                       f"{str(error).splitlines()[0] if str(error) else 'empty'}); it may be truncated. "
                       f"The model in {WEIGHTS_NAME} is untouched; start a new run with "
                       f"{switch('overwrite')}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise RunError(f"{path}: not a training state of this package (format {STATE_FORMAT})")
    return state


def check_resumable(state: dict, config: TrainConfig, world: int, path: Path) -> None:
    saved = {**BEFORE_THE_OPTION, **state["args"]}
    saved["data"] = resolvable(saved["data"])  # earlier runs recorded a folder as given, maybe relative
    differ = [f"{option(k)} {saved.get(k)!r} -> {getattr(config, k)!r}"
              for k in RESUME_MUST_MATCH if saved.get(k, getattr(TrainConfig, k)) != getattr(config, k)]
    if differ:
        raise RunError(f"{switch('resume')}: {path} was trained with other arguments ({'; '.join(differ)}); "
                       f"use the same ones, or another {option('out')}")
    if config.steps < state["step"]:
        raise RunError(f"{switch('resume')}: {path} is at step {state['step']}, past {option('steps')} "
                       f"{config.steps}; pass at least {state['step']} (more extends the run)")
    if len(state["rng"]) != world:
        raise RunError(f"{switch('resume')}: {path} was written by {len(state['rng'])} process(es), "
                       f"this run has {world}")


def rng_state(device: torch.device) -> dict:
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_state(rng: dict, device: torch.device) -> None:
    torch.set_rng_state(rng["cpu"].cpu())
    if device.type == "cuda" and rng.get("cuda") is not None:
        torch.cuda.set_rng_state(rng["cuda"].cpu(), device)


def keep_metrics_until(path: Path, step: int) -> None:
    """On resume, drop the lines a killed run logged after its last checkpoint (they are logged again)."""
    if path.exists():
        lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        write_atomically(path, lambda tmp: tmp.write_text("".join(line + "\n" for line in lines)))


def check_every_rank_sees(path: Path, world: int) -> bool:
    """Whether `path` exists, checked to be the same answer on every rank: with --out on each machine's own
    disk, the ranks of the other machines would start at step 0 while rank 0 resumes, and hang. Collective:
    every rank calls it, before any rank can raise for another reason."""
    found = path.exists()
    if world > 1:
        seen = [None] * world
        dist.all_gather_object(seen, found)
        if len(set(seen)) > 1:
            raise RunError(f"{option('out')} {path.parent}: {path.name} is seen by ranks "
                           f"{[rank for rank, s in enumerate(seen) if s]} of {world} only; on several machines "
                           f"{option('out')} must be one folder that every machine sees at the same path")
    return found
