"""Training AutoregressiveAxialTransformer: the loop behind `axial-attention train`.

A run folder holds
  config.json + model.safetensors  the model a user loads (the EMA weights), `from_pretrained(folder)`;
  training_state.pt                what --resume needs: raw weights, EMA, optimiser, grad scaler, step and
                                   every rank's random state (loaded with weights_only=True);
  metrics.jsonl                    one JSON line per log or evaluation step;
  curves.png, samples.png          train/test bits/dim against steps; samples (one row per class;
                                   for videos clips as rows of frames, and samples.gif);
  results.json                     the run's arguments and final figures.
Every file is written atomically, so a run killed at any moment loses at most the steps since its
last checkpoint, and `--resume` then ends with the same weights as an uninterrupted run: the batch of
a step is a function of the step alone, and the random state is restored per rank.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..models.autoregressive import AutoregressiveAxialTransformer
from ..models.pretrained import WEIGHTS_NAME, write_atomically
from .checkpoints import (  # noqa: F401  (0.2.0 had them here)
    BEFORE_THE_OPTION,
    METRICS_NAME,
    RESULTS_NAME,
    RESUME_MUST_MATCH,
    STATE_FORMAT,
    STATE_NAME,
    check_every_rank_sees,
    check_resumable,
    keep_metrics_until,
    load_state,
    rng_state,
    set_rng_state,
)
from .config import NonFiniteLossError, RunError, TrainConfig, check_config
from .data import ImageData, batch_indices, load_images, resolvable
from .defaults import available_memory, step_memory
from .devices import autocast, check_precision, init_distributed, select_device
from .ema import ExponentialMovingAverage
from .evaluation import (  # noqa: F401  (0.2.0 had them here)
    EVAL_TOKENS,
    completions_of,
    evaluate_bits,
    evaluate_bits_per_dim,
    format_frames,
    frame_record,
    save_samples,
)
from .options import option, switch
from .pictures import save_curves

CURVES_NAME, SAMPLES_NAME = "curves.png", "samples.png"


class _BitsPerDim(nn.Module):
    """The training loss as a module, so DDP and torch.compile see one forward: mean bits/dim.

    It skips the model's per-batch input check (values in [0, num_levels)): the data set was built
    in range when loaded, and the check's host sync would break torch.compile's graph every step."""

    def __init__(self, model: AutoregressiveAxialTransformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, labels: Optional[Tensor]) -> Tensor:
        nats = self.model.log_prob_tokens(self.model.to_tokens(x), labels)
        return -nats.mean() / (x[0].numel() * math.log(2))


def learning_rate(step: int, steps: int, peak: float, warmup: Optional[int] = None) -> float:
    """Linear warm-up over `warmup` steps (default: the first 10% of steps, at most 100), then cosine decay
    to 5% of the peak."""
    warmup = max(1, min(100, steps // 10) if warmup is None else warmup)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def _check_memory(model: AutoregressiveAxialTransformer, config: TrainConfig, world: int, device: torch.device,
                  rank: int) -> None:
    """Say what a step will need, and refuse a run that cannot fit instead of swapping the machine to death."""
    micro = config.batch_size // world // config.grad_accum
    parameters = sum(p.numel() for p in model.parameters())
    # the activations, and the weights, gradients, AdamW's two moments and the EMA copy in float32
    needed = step_memory(model, micro, config.activation_checkpointing) + 20 * parameters
    if rank == 0:
        print(f"memory: about {needed / 2**30:.1f} GiB for a training step ({micro} items of {model.image_shape} a "
              f"micro-batch at width {model.token_emb.embedding_dim})", flush=True)
    available = available_memory(device)
    if available is not None and needed > available:
        raise RunError(
            f"a training step needs about {needed / 2**30:.1f} GiB but {device} has {available / 2**30:.1f} GiB "
            f"available: lower {option('batch_size')} ({config.batch_size}), split it with {option('grad_accum')}, "
            f"pass {switch('activation_checkpointing')} (recomputes each block in backward instead of keeping its "
            f"activations), or lower {option('dim')} / {option('depth')}")


def train(config: Optional[TrainConfig] = None, **overrides: Any) -> dict:
    """Train (or resume) a run as configured; returns the results written to results.json.
    `train(steps=100, out="runs/x")` is `train(TrainConfig(steps=100, out="runs/x"))`."""
    config = dataclasses.replace(config or TrainConfig(), **overrides)
    data = load_images(config.data, config.levels, config.size, flag=option("data"), video=config.video)
    config = dataclasses.replace(config, data=resolvable(config.data))  # recorded so any directory finds it
    config = config.for_data(data.image_shape)
    rank, world, local_rank = init_distributed(config.device)
    check_config(config, world)
    device = select_device(config.device, local_rank)
    amp_dtype = check_precision(config.precision, device)
    out = Path(config.out)
    state_path = out / STATE_NAME
    state = None
    if check_every_rank_sees(state_path, world):
        if config.resume:
            state = load_state(state_path, device)
            check_resumable(state, config, world, state_path)
        elif not config.overwrite:
            raise RunError(f"{option('out')} {out} already holds a run ({STATE_NAME}); pass {switch('resume')} to "
                           f"continue it, {switch('overwrite')} to start it again, or choose another {option('out')}")

    torch.manual_seed(config.seed)  # the same initial weights on every rank (and so the same EMA)
    model = AutoregressiveAxialTransformer(
        data.image_shape, data.levels, dim=config.dim, heads=config.heads, dim_heads=config.dim_heads,
        depth=config.depth, inner_depth=config.inner_depth, dropout=config.dropout, attn_dropout=config.attn_dropout,
        num_classes=data.num_classes, past_window=config.past_window or None, past_slices=config.past_slices,
        pos_emb=config.pos_emb,
    ).to(device)
    model.activation_checkpointing = config.activation_checkpointing
    _check_memory(model, config, world, device, rank)
    torch.manual_seed(config.seed + rank)  # but different dropout masks
    out.mkdir(parents=True, exist_ok=True)  # only now: a mistake in the arguments leaves no folder behind
    ema = ExponentialMovingAverage(model, config.ema_decay) if config.ema else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        set_rng_state(state["rng"][rank], device)
        start = state["step"]
    elif rank == 0:  # a fresh run (or --overwrite): no metrics of an earlier one
        (out / METRICS_NAME).unlink(missing_ok=True)
    if rank == 0:
        keep_metrics_until(out / METRICS_NAME, start)
        _write_results(out, {"status": "running", "args": dataclasses.asdict(config)})
    del state
    eval_model = model if ema is None else ema.average

    loss_module: nn.Module = _BitsPerDim(model)
    if world > 1:
        loss_module = nn.parallel.DistributedDataParallel(
            loss_module, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        loss_module = torch.compile(loss_module)

    def log(record: dict) -> None:
        if rank == 0:
            with open(out / METRICS_NAME, "a") as f:
                f.write(json.dumps(record) + "\n")

    last_checkpoint = start

    def checkpoint(step: int) -> None:
        nonlocal last_checkpoint
        rng = [rng_state(device)]
        if world > 1:
            rng = [None] * world
            dist.all_gather_object(rng, rng_state(device))
        if rank == 0:
            eval_model.save_pretrained(out)
            training_state = {
                "format": STATE_FORMAT, "args": dataclasses.asdict(config), "step": step,
                "model": model.state_dict(), "ema": None if ema is None else ema.state_dict(),
                "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "rng": rng,
            }
            write_atomically(state_path, lambda tmp: torch.save(training_state, tmp))
        last_checkpoint = step

    train_x, train_y = data.split("train")
    test_x, test_y = evaluation_items(data, config.eval_items)
    micro = config.batch_size // world // config.grad_accum
    from tqdm import tqdm

    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="train", dynamic_ncols=True,
               disable=rank != 0 or not config.progress)
    window, window_steps, started = 0.0, 0, time.perf_counter()
    evaluating, last_eval = 0.0, None  # seconds spent on test evaluations; the latest (step, bits/dim, per slice)
    model.train()
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config.steps, config.lr, config.warmup)
        idx = batch_indices(step, len(train_x), config.batch_size, config.seed, rank, world)
        step_loss = torch.zeros((), device=device)
        for m, part in enumerate(idx.split(micro)):
            x = train_x[part].to(device, non_blocking=True)
            y = None if train_y is None else train_y[part].to(device, non_blocking=True)
            sync = m == config.grad_accum - 1 or world == 1  # DDP all-reduces on the last micro-batch only
            with loss_module.no_sync() if not sync else contextlib.nullcontext():
                with autocast(device, amp_dtype):
                    loss = loss_module(x, y) / config.grad_accum
                scaler.scale(loss).backward()
            step_loss += loss.detach().float()
        if world > 1:
            dist.all_reduce(step_loss)
            step_loss /= world
        value = step_loss.item()
        if not math.isfinite(value):
            if rank == 0:
                _write_results(out, {"status": f"stopped at step {step + 1}: non-finite loss",
                                     "args": dataclasses.asdict(config)})
            raise NonFiniteLossError(
                f"training stopped at step {step + 1}: the loss is {value}; the last good checkpoint "
                f"(step {last_checkpoint}) is in {state_path if last_checkpoint else out} and was left as it was. "
                f"Lower {option('lr')}, or try {option('precision')} fp32")
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(model)
        window, window_steps = window + value, window_steps + 1
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            log({"step": done, "train_bits_per_dim": window / window_steps, "lr": optimizer.param_groups[0]["lr"],
                 "seconds": round(time.perf_counter() - started, 3)})
            bar.set_postfix(bits_per_dim=f"{window / window_steps:.3f}", refresh=False)
            window, window_steps = 0.0, 0
        if done % config.eval_every == 0 or done == config.steps:
            evaluation_started = time.perf_counter()
            test_bpd, per_slice = evaluate_bits(eval_model, test_x, test_y, rank, world)
            evaluating += time.perf_counter() - evaluation_started
            last_eval = (done, test_bpd, per_slice)
            log({"step": done, "test_bits_per_dim": test_bpd, **frame_record(model, per_slice)})
            bar.set_postfix(test_bits_per_dim=f"{test_bpd:.3f}", refresh=False)
        if done % config.checkpoint_every == 0 or done == config.steps:
            checkpoint(done)
    bar.close()
    seconds = {"train_seconds_this_process": round(time.perf_counter() - started, 1),
               "eval_seconds_this_process": round(evaluating, 1)}
    final = last_eval[1:] if last_eval is not None and last_eval[0] == config.steps else None
    return _finish(config, data, eval_model, out, rank, world, seconds, final)


def evaluation_items(data: ImageData, items: Optional[int]) -> tuple[Tensor, Optional[Tensor]]:
    """The test items each evaluation scores: the first `items` of the test split (all for None), the same
    ones every time, so the curve's test points compare."""
    test_x, test_y = data.split("test")
    if items is None:
        return test_x, test_y
    return test_x[:items], None if test_y is None else test_y[:items]


def _write_results(out: Path, results: dict) -> None:
    text = json.dumps(results, indent=2) + "\n"
    write_atomically(out / RESULTS_NAME, lambda tmp: tmp.write_text(text))


def _finish(config: TrainConfig, data: ImageData, model: AutoregressiveAxialTransformer, out: Path, rank: int,
            world: int, seconds: dict, final: Optional[tuple[float, list[float]]] = None) -> dict:
    """Final test bits/dim (`final` when the loop's last evaluation has them), samples, curves and results.json.
    `seconds`: the training loop's time in this process, and how much of it went to test evaluations."""
    test_x, test_y = evaluation_items(data, config.eval_items)
    test_bpd, per_slice = final or evaluate_bits(model, test_x, test_y, rank, world)
    uniform = math.log2(data.levels)
    results = {"status": "finished", "test_bits_per_dim": test_bpd, **frame_record(model, per_slice),
               "uniform_bits_per_dim": uniform,
               "steps": config.steps,
               "train_images": len(data.train_images), "test_images": len(data.test_images),
               "test_images_evaluated": len(test_x),
               "world_size": world, **seconds,
               "class_names": data.class_names and list(data.class_names),  # what `sample --labels NAME` takes
               "args": dataclasses.asdict(config)}
    if rank == 0:
        print(f"test bits/dim: {test_bpd:.3f}   (uniform baseline log2({data.levels}) = {uniform:.3f})")
        if "test_bits_per_frame" in results:
            print(f"test {format_frames(per_slice)}")
        if not (out / WEIGHTS_NAME).exists():
            model.save_pretrained(out)
        save_samples(model, out / SAMPLES_NAME, config.samples_per_row, config.seed, test=(test_x, test_y))
        if (out / METRICS_NAME).exists():
            save_curves(out / METRICS_NAME, out / CURVES_NAME, uniform)
        _write_results(out, results)
        print(f"wrote {out}: {', '.join(sorted(p.name for p in out.iterdir() if not p.name.startswith('.')))}")
    if world > 1:
        dist.barrier()
    return results
