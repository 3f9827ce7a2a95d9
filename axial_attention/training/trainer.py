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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..autoregressive import AutoregressiveAxialTransformer
from ..pretrained import WEIGHTS_NAME, write_atomically
from .data import ImageData, batch_indices, load_images
from .defaults import CHOSEN_FOR_DATA, available_memory, data_defaults, step_memory
from .devices import autocast, check_precision, cpu_threads, init_distributed, select_device
from .ema import ExponentialMovingAverage
from .pictures import save_animation, save_curves, save_grid

STATE_NAME, METRICS_NAME, RESULTS_NAME = "training_state.pt", "metrics.jsonl", "results.json"
CURVES_NAME, SAMPLES_NAME = "curves.png", "samples.png"
STATE_FORMAT = 1
EVAL_TOKENS = 256 * 64  # tokens per evaluation batch: 256 digits, 8 clips of 8 x 16 x 16
# Arguments that define the trajectory: resuming with other values would not continue the same run.
RESUME_MUST_MATCH = ("data", "video", "levels", "size", "seed", "batch_size", "grad_accum", "steps", "lr",
                     "weight_decay", "dim", "heads", "depth", "inner_depth", "dropout", "attn_dropout", "ema",
                     "ema_decay", "past_window", "past_slices", "warmup")
# What a run saved before an option existed used (its args lack the key).
BEFORE_THE_OPTION = {"past_window": 0}


class RunError(ValueError):
    """A run folder or flag that cannot be used as asked; the message names the file or flag."""


class NonFiniteLossError(RuntimeError):
    """Training stopped on a NaN/inf loss; the last good checkpoint is left as it was."""


@dataclass
class TrainConfig:
    """Everything `axial-attention train` takes (same names as its flags)."""

    data: str = "digits"
    video: bool = False
    levels: Optional[int] = None
    size: Optional[int] = None
    out: Optional[str] = None  # default: runs/<data set name>, e.g. runs/digits
    # None: chosen for the data (defaults.py): the digits' tuned values, lighter ones for larger items
    steps: Optional[int] = None
    batch_size: Optional[int] = None
    grad_accum: int = 1
    lr: float = 2e-3
    warmup: Optional[int] = None  # steps; None: 10% of --steps, at most 100
    weight_decay: float = 0.1
    dim: Optional[int] = None
    heads: int = 4
    depth: Optional[int] = None
    inner_depth: Optional[int] = None
    dropout: Optional[float] = None
    attn_dropout: Optional[float] = None
    past_window: Optional[int] = None  # 0: off
    past_slices: int = 1
    activation_checkpointing: bool = False
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    compile: bool = False
    ema: bool = True
    ema_decay: float = 0.998
    eval_every: int = 250
    log_every: int = 25
    checkpoint_every: int = 250
    samples_per_row: int = 10
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.out is None:
            self.out = str(Path("runs") / (Path(self.data.rstrip("/\\")).stem or "data"))

    def for_data(self, image_shape: Sequence[int]) -> TrainConfig:
        """This configuration with the options left as None chosen for items of `image_shape`."""
        chosen = data_defaults(image_shape)
        return dataclasses.replace(self, **{k: chosen[k] for k in CHOSEN_FOR_DATA if getattr(self, k) is None})


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


@torch.no_grad()
def evaluate_bits(model: nn.Module, images: Tensor, labels: Optional[Tensor],
                  rank: int = 0, world: int = 1, batch: Optional[int] = None) -> tuple[float, list[float]]:
    """Mean bits/dim over `images` in float32, and the mean bits of each slice of the first axis (each
    frame of a video, each row of an image) given the slices before it; each rank scores its shard and all
    ranks get the totals. `batch`: items per forward pass (default: about 16k tokens, 256 digits)."""
    batch = batch or max(1, EVAL_TOKENS // images[0].numel())
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = torch.zeros(1 + images.shape[2], dtype=torch.float64, device=device)  # count, bits of each slice
    for part in torch.arange(rank, len(images), world).split(batch):
        y = None if labels is None else labels[part].to(device)
        total[1:] += model.bits_per_slice(images[part].to(device), y).double().sum(0)
        total[0] += len(part)
    model.train(was_training)
    if world > 1:
        dist.all_reduce(total)
    per_slice = total[1:] / total[0]
    return float(per_slice.sum() / images[0].numel()), per_slice.tolist()


def evaluate_bits_per_dim(model: nn.Module, images: Tensor, labels: Optional[Tensor],
                          rank: int = 0, world: int = 1, batch: Optional[int] = None) -> float:
    """Mean bits/dim over `images` (see `evaluate_bits`)."""
    return evaluate_bits(model, images, labels, rank, world, batch)[0]


def format_frames(per_frame: list[float]) -> str:
    """One line: the bits of each frame, and the later frames' mean against the first's."""
    line = f"bits per frame: {', '.join(f'{b:.1f}' for b in per_frame)}"
    if len(per_frame) > 1 and per_frame[0] > 0:
        later = sum(per_frame[1:]) / (len(per_frame) - 1)
        line += f"   (frames 2..{len(per_frame)}: {later / per_frame[0]:.2f} of frame 1's)"
    return line


def frame_record(model: AutoregressiveAxialTransformer, per_slice: list[float]) -> dict:
    """What a video run logs beside its bits/dim: the test bits of each frame (empty for images: their
    slices are rows, which all cost alike only by accident)."""
    return {"test_bits_per_frame": per_slice} if model.num_axes > 2 else {}


def completions_of(model: AutoregressiveAxialTransformer, originals: Tensor, labels: Optional[Tensor], keep: int,
                   samples: int, temperature: float = 1.0, generator: Optional[torch.Generator] = None) -> Tensor:
    """`samples` completions of each of `originals` (N, C, *axes), its first `keep` slices kept:
    (N, samples, C, *axes) on the CPU. Labels are used only by a class-conditional model."""
    repeated = originals.repeat_interleave(samples, dim=0).to(model.device)
    if labels is not None and model.num_classes is not None:
        labels = labels.repeat_interleave(samples).to(model.device)
    else:
        labels = None
    with cpu_threads(model.device):
        completed = model.complete(repeated, keep, labels, temperature, generator)
    return completed.reshape(len(originals), samples, *model.image_shape).cpu()


def save_samples(model: AutoregressiveAxialTransformer, path: Path, per_row: int, seed: int,
                 test: tuple[Tensor, Optional[Tensor]], continued: int = 4) -> None:
    """Images (or sequences): a PNG grid, one row of samples per class (class-conditional) or a square
    grid. Videos (more than two axes): one sampled clip per class (or `per_row` clips without labels),
    then `continued` test clips, each followed by two continuations sampled from its first frame: a row
    of frames per clip in the PNG, and all of them playing in a GIF beside it."""
    generator = torch.Generator(device=model.device).manual_seed(seed)
    video = model.num_axes > 2
    per_class = 1 if video else per_row
    count = per_class * (model.num_classes or per_row)
    labels = None
    if model.num_classes is not None:
        labels = torch.arange(model.num_classes, device=model.device).repeat_interleave(per_class)
    with cpu_threads(model.device):
        items = model.sample(count, labels=labels, generator=generator).cpu()
    if video:
        clips, clip_labels = test[0][:continued], None if test[1] is None else test[1][:continued]
        continuations = completions_of(model, clips, clip_labels, 1, 2, generator=generator)
        items = torch.cat([items, torch.cat([clips[:, None], continuations], dim=1).flatten(0, 1)])
    save_grid(items, model.num_levels, path, per_row)
    if video:
        save_animation(items, model.num_levels, path.with_suffix(".gif"), per_row=3)


def _load_state(path: Path, device: torch.device) -> dict:
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # a truncated zip, a foreign pickle: torch raises several types
        raise RunError(f"{path}: not a readable training state ({type(error).__name__}: "
                       f"{str(error).splitlines()[0] if str(error) else 'empty'}); it may be truncated. "
                       f"The model in {WEIGHTS_NAME} is untouched; start a new run with --overwrite") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise RunError(f"{path}: not a training state of this package (format {STATE_FORMAT})")
    return state


def _check_resumable(state: dict, config: TrainConfig, world: int, path: Path) -> None:
    saved = {**BEFORE_THE_OPTION, **state["args"]}
    differ = [f"--{k.replace('_', '-')} {saved.get(k)!r} -> {getattr(config, k)!r}"
              for k in RESUME_MUST_MATCH if saved.get(k, getattr(TrainConfig, k)) != getattr(config, k)]
    if differ:
        raise RunError(f"--resume: {path} was trained with other arguments ({'; '.join(differ)}); "
                       f"use the same ones, or another --out")
    if len(state["rng"]) != world:
        raise RunError(f"--resume: {path} was written by {len(state['rng'])} process(es), this run has {world}")


def _rng_state(device: torch.device) -> dict:
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def _set_rng_state(rng: dict, device: torch.device) -> None:
    torch.set_rng_state(rng["cpu"].cpu())
    if device.type == "cuda" and rng.get("cuda") is not None:
        torch.cuda.set_rng_state(rng["cuda"].cpu(), device)


def _keep_metrics_until(path: Path, step: int) -> None:
    """On resume, drop the lines a killed run logged after its last checkpoint (they are logged again)."""
    if path.exists():
        lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        write_atomically(path, lambda tmp: tmp.write_text("".join(line + "\n" for line in lines)))


def _check_config(config: TrainConfig, world: int) -> None:
    positive = ("steps", "batch_size", "grad_accum", "dim", "heads", "depth", "eval_every", "log_every",
                "checkpoint_every", "samples_per_row")
    for name in positive:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RunError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
    if config.batch_size % (world * config.grad_accum):
        raise RunError(f"--batch-size ({config.batch_size}) must be divisible by processes x --grad-accum "
                       f"({world} x {config.grad_accum})")
    if not config.lr > 0:
        raise RunError(f"--lr must be > 0, got {config.lr}")
    for name in ("dropout", "attn_dropout", "ema_decay"):
        if not 0.0 <= getattr(config, name) < 1.0:
            raise RunError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(config, name)}")
    if config.past_window < 0 or (config.past_window and config.past_window % 2 == 0):
        raise RunError(f"--past-window must be 0 (off) or odd (a centre and the same reach on each side), "
                       f"got {config.past_window}")
    if config.warmup is not None and config.warmup < 0:
        raise RunError(f"--warmup must be >= 0 steps, got {config.warmup}")


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
            f"available: lower --batch-size ({config.batch_size}), split it with --grad-accum, pass "
            f"--activation-checkpointing (recomputes each block in backward instead of keeping its activations), or lower "
            f"--dim / --depth")


def train(config: Optional[TrainConfig] = None, **overrides: Any) -> dict:
    """Train (or resume) a run as configured; returns the results written to results.json.
    `train(steps=100, out="runs/x")` is `train(TrainConfig(steps=100, out="runs/x"))`."""
    config = dataclasses.replace(config or TrainConfig(), **overrides)
    data = load_images(config.data, config.levels, config.size, video=config.video)
    config = config.for_data(data.image_shape)
    rank, world, local_rank = init_distributed(config.device)
    _check_config(config, world)
    device = select_device(config.device, local_rank)
    amp_dtype = check_precision(config.precision, device)
    out = Path(config.out)
    state_path = out / STATE_NAME
    state = None
    if state_path.exists():
        if config.resume:
            state = _load_state(state_path, device)
            _check_resumable(state, config, world, state_path)
        elif not config.overwrite:
            raise RunError(f"--out {out} already holds a run ({STATE_NAME}); pass --resume to continue it, "
                           f"--overwrite to start it again, or choose another --out")

    torch.manual_seed(config.seed)  # the same initial weights on every rank (and so the same EMA)
    model = AutoregressiveAxialTransformer(
        data.image_shape, data.levels, dim=config.dim, heads=config.heads, depth=config.depth,
        inner_depth=config.inner_depth, dropout=config.dropout, attn_dropout=config.attn_dropout,
        num_classes=data.num_classes, past_window=config.past_window or None, past_slices=config.past_slices,
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
        _set_rng_state(state["rng"][rank], device)
        start = state["step"]
    elif rank == 0:  # a fresh run (or --overwrite): no metrics of an earlier one
        (out / METRICS_NAME).unlink(missing_ok=True)
    if rank == 0:
        _keep_metrics_until(out / METRICS_NAME, start)
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
        rng = [_rng_state(device)]
        if world > 1:
            rng = [None] * world
            dist.all_gather_object(rng, _rng_state(device))
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
    test_x, test_y = data.split("test")
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
                f"Lower --lr, or try --precision fp32")
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


def _write_results(out: Path, results: dict) -> None:
    text = json.dumps(results, indent=2) + "\n"
    write_atomically(out / RESULTS_NAME, lambda tmp: tmp.write_text(text))


def _finish(config: TrainConfig, data: ImageData, model: AutoregressiveAxialTransformer, out: Path, rank: int,
            world: int, seconds: dict, final: Optional[tuple[float, list[float]]] = None) -> dict:
    """Final test bits/dim (`final` when the loop's last evaluation has them), samples, curves and results.json.
    `seconds`: the training loop's time in this process, and how much of it went to test evaluations."""
    test_x, test_y = data.split("test")
    test_bpd, per_slice = final or evaluate_bits(model, test_x, test_y, rank, world)
    uniform = math.log2(data.levels)
    results = {"status": "finished", "test_bits_per_dim": test_bpd, **frame_record(model, per_slice),
               "uniform_bits_per_dim": uniform,
               "steps": config.steps,
               "train_images": len(data.train_images), "test_images": len(data.test_images),
               "world_size": world, **seconds,
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
