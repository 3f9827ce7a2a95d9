"""`python -m axial_attention` / `axial-attention`: train, sample, complete and evaluate image and video models.

    axial-attention train [--data digits|moving-digits|FOLDER|FILE.npy [--video]] [--out runs/digits] [--device auto]
                          [--precision fp32] ...
    axial-attention sample RUN --num 20 [--labels 3 7] [--temperature 0.9] [--seed 0] [--out samples.png|.gif]
    axial-attention complete RUN --keep 4 --num 8 [--images FOLDER|FILE.npy] [--out completions.png]
    axial-attention evaluate RUN [--data digits|FOLDER|FILE.npy] [--split test]
    axial-attention push RUN OWNER/NAME [--private] [--revision BRANCH] [--token TOKEN]

RUN is a folder written by `train` (or by `save_pretrained`), or for sample, complete and evaluate a Hub repo id
(owner/name, with the [hub] extra). Mistakes (a flag out of range, a run
folder without model files, a truncated file) end with a one-line message and exit status 2,
without touching what is already written.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..models.autoregressive import POSITION_SCHEMES, AutoregressiveAxialTransformer
from .checkpoints import RESULTS_NAME
from .config import NonFiniteLossError, TrainConfig
from .data import ImageData, load_images
from .devices import DEVICE_PATTERN, PRECISIONS, cpu_threads, select_device
from .evaluation import completions_of, evaluate_bits, format_frames, frame_record
from .options import command_line
from .pictures import save_animation, save_completions, save_grid
from .presets import PRESETS, apply_preset
from .trainer import train

PROG = "axial-attention"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _device(text: str) -> str:
    """The spelling is checked here; whether the device exists, when the command uses it."""
    if not DEVICE_PATTERN.match(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")
    return text


def _add_sampling(p: argparse.ArgumentParser) -> None:
    p.add_argument("--temperature", type=float, default=1.0,
                   help="divides the logits: below 1 sharper, more typical samples, above 1 more varied (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="the sampling generator's seed (default: 0)")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=_device, default="auto",
                   help="auto (CUDA when present, then MPS, else CPU), cpu, cuda, cuda:N or mps (default: auto)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,sample,complete,evaluate,push}")
    d = TrainConfig()

    t = commands.add_parser("train", help="train a model; writes a run folder",
                            description="Train an AutoregressiveAxialTransformer and write a run folder "
                                        "(config.json, model.safetensors, training_state.pt, metrics.jsonl, "
                                        "curves.png, samples.png, results.json).")
    t.add_argument("--preset", choices=sorted(PRESETS), help="the Axial Transformer paper's configuration for "
                   "ImageNet 32x32 or 64x64 (model, optimiser, EMA, batch); flags given explicitly override it")
    t.add_argument("--data", default=d.data, help="'digits' (scikit-learn's, bundled), 'moving-digits' (8-frame "
                   "16x16 videos made from them), 'moving-digit-frames' (their frames as images), a folder of images "
                   "(sub-folders name the classes) or an .npy array (N, H, W) / (N, C, H, W) (default: digits)")
    t.add_argument("--video", action="store_true",
                   help="read the .npy --data as videos (N, T, H, W) / (N, T, C, H, W)")
    t.add_argument("--levels", type=_positive_int, help="quantisation levels (default: 17 for digits, 256 otherwise)")
    t.add_argument("--size", type=_positive_int, help="resize folder images to size x size")
    t.add_argument("--out", help="run folder (default: runs/ and the data set's name, e.g. runs/digits)")
    t.add_argument("--steps", type=_positive_int, default=d.steps,
                   help="optimiser steps (default: 1200; 800 for videos, about 15 minutes on 2 CPU cores); with "
                        "--resume, more than the run's own extends it (the cosine schedule stretched to the new total)")
    t.add_argument("--batch-size", type=_positive_int, default=d.batch_size,
                   help="images per optimiser step, over all processes and micro-batches (default: chosen for "
                        "the data: 32 digits, about 16k tokens a step for larger items)")
    t.add_argument("--grad-accum", type=_positive_int, default=d.grad_accum,
                   help="split each step's batch into this many micro-batches (same result, less memory)")
    t.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (warm-up, then cosine decay)")
    t.add_argument("--warmup", type=int, default=d.warmup,
                   help="linear warm-up steps (default: 10%% of --steps, at most 100)")
    t.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW's decoupled weight decay")
    t.add_argument("--dim", type=_positive_int, default=d.dim,
                   help="width (default: 64; 48 for videos)")
    t.add_argument("--heads", type=_positive_int, default=d.heads, help="attention heads (default: 4)")
    t.add_argument("--dim-heads", type=_positive_int, default=d.dim_heads,
                   help="width of each head (default: --dim / --heads, which must then divide)")
    t.add_argument("--depth", type=_positive_int, default=d.depth,
                   help="layers of each decoder level but the inner one (default: 4 for digits-sized images, else 2)")
    t.add_argument("--inner-depth", type=_positive_int, help="inner-decoder layers (default: --depth)")
    t.add_argument("--dropout", type=float, default=d.dropout,
                   help="residual dropout (default: 0.3 for digits-sized images, else 0.1)")
    t.add_argument("--attn-dropout", type=float, default=d.attn_dropout,
                   help="dropout on attention weights (slower, more memory: SDPA leaves its fused kernels; "
                        "default: 0.3 for digits-sized images, else 0)")
    t.add_argument("--past-window", type=int, default=d.past_window,
                   help="attention from each position into a window this wide (odd) of the previous frames, to "
                        "follow motion; 0: off (default: 5 for videos, 0 for images)")
    t.add_argument("--past-slices", type=_positive_int, default=d.past_slices,
                   help="previous frames (slices of the first axis) that --past-window looks into (default: 1)")
    t.add_argument("--pos-emb", choices=POSITION_SCHEMES, default=d.pos_emb,
                   help="positions: 'learned' (an embedding per axis, for one size) or 'rotary' (rotary positions "
                        "in every attention: relative, the model also runs at other sizes; default: learned)")
    t.add_argument("--activation-checkpointing", action="store_true",
                   help="recompute each block in backward instead of keeping its activations: less memory, "
                        "about a quarter more time, the same gradients")
    t.add_argument("--seed", type=int, default=d.seed, help="initial weights, batches and dropout (default: 0)")
    _add_device(t)
    t.add_argument("--precision", choices=tuple(PRECISIONS), default=d.precision,
                   help="autocast precision; fp16 uses a gradient scaler (default: fp32)")
    t.add_argument("--compile", action="store_true", help="torch.compile the model")
    t.add_argument("--ema", action=argparse.BooleanOptionalAction, default=d.ema,
                   help="keep an exponential moving average of the weights, used for evaluation, samples and "
                        "model.safetensors (default: on)")
    t.add_argument("--ema-decay", type=float, default=d.ema_decay,
                   help="the average's decay per step, in [0, 1) (default: 0.998)")
    t.add_argument("--eval-every", type=_positive_int, default=d.eval_every, help="steps between test bits/dim")
    t.add_argument("--eval-items", type=_positive_int, default=d.eval_items,
                   help="test items each evaluation scores, the first of the test split, the final one included "
                        "(default: all; fewer for a quick look at a video run)")
    t.add_argument("--log-every", type=_positive_int, default=d.log_every, help="steps between metrics lines")
    t.add_argument("--checkpoint-every", type=_positive_int, default=d.checkpoint_every,
                   help="steps between checkpoints (training_state.pt, model.safetensors; default: 250)")
    t.add_argument("--samples-per-row", type=_positive_int, default=d.samples_per_row,
                   help="images per row of samples.png (default: 10)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its training_state.pt")
    t.add_argument("--overwrite", action="store_true", help="start again in an --out that already holds a run")
    t.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")

    s = commands.add_parser("sample", help="draw samples from a trained model into a PNG")
    s.add_argument("run", help="run folder (config.json + model.safetensors)")
    s.add_argument("--num", type=_positive_int, default=20, help="number of images (default: 20)")
    s.add_argument("--labels", nargs="+", metavar="LABEL", help="classes by name (a training folder's sub-folder, "
                   "as results.json's class_names lists them) or number, repeated to --num images (default for a "
                   "class-conditional model: every class in turn)")
    _add_sampling(s)
    s.add_argument("--per-row", type=_positive_int, help="images per row of the PNG (default: 10)")
    s.add_argument("--no-cache", dest="use_cache", action="store_false",
                   help="recompute a full forward pass per token (slow; for checking)")
    s.add_argument("--out", default="samples.png",
                   help="PNG to write (default: samples.png; videos: a row of frames per clip), or a .gif "
                        "(videos play)")
    _add_device(s)

    c = commands.add_parser("complete", help="keep the first rows of images (frames of videos) and sample the rest")
    c.add_argument("run", help="run folder (config.json + model.safetensors)")
    c.add_argument("--keep", type=int, required=True, help="slices of the first axis kept: rows of an image, frames "
                   "of a video (0..its size)")
    c.add_argument("--num", type=_positive_int, default=8, help="images to complete (default: 8)")
    c.add_argument("--samples", type=_positive_int, default=3, help="completions per image (default: 3)")
    c.add_argument("--images", help="'digits', a folder or an .npy array (default: the run's own data set); "
                   "the first --num test images are used")
    _add_sampling(c)
    c.add_argument("--out", default="completions.png",
                   help="PNG to write (default: completions.png), or for a video model a .gif (the clips play)")
    _add_device(c)

    e = commands.add_parser("evaluate", help="bits/dim of a trained model on a data set")
    e.add_argument("run", help="run folder (config.json + model.safetensors)")
    e.add_argument("--data", help="'digits', a folder or an .npy array (default: the run's own data set)")
    e.add_argument("--split", choices=("test", "train", "all"), default="test",
                   help="which images of the data set's fixed 4:1 split (default: test)")
    e.add_argument("--batch-size", type=_positive_int,
                   help="items per forward pass (default: about 16k tokens: 256 digits, 8 clips of 8x16x16)")
    _add_device(e)

    p = commands.add_parser("push", help="upload a run folder to the Hugging Face Hub, with a model card",
                            description="Upload a run folder to a Hub model repo in one commit: the model, "
                                        "results.json, metrics, samples and curves, and a README.md model card "
                                        "built from results.json; training_state.pt (only --resume needs it) "
                                        "stays. Needs the [hub] extra.")
    p.add_argument("run", help="run folder (config.json + model.safetensors, results.json, ...)")
    p.add_argument("repo_id", metavar="REPO_ID", help="the Hub repo, owner/name (or name, under your account); "
                   "created if missing")
    p.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps its "
                   "visibility)")
    p.add_argument("--revision", help="the branch to commit to, created if missing (default: main)")
    p.add_argument("--token", help="a Hub token with write access (default: HF_TOKEN or `hf auth login`'s)")
    return parser


def _run_args(run: Path) -> dict:
    """The training arguments recorded in the run's results.json (empty for a save_pretrained folder)."""
    path = run / RESULTS_NAME
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text()).get("args", {})
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return {}


def _load_model(run: str, device_name: str) -> AutoregressiveAxialTransformer:
    return AutoregressiveAxialTransformer.from_pretrained(run, device=select_device(device_name))


def _images_for(model: AutoregressiveAxialTransformer, run: str, source: Optional[str], flag: str) -> ImageData:
    """A data set quantised to the model's levels, checked to have the model's image shape."""
    args = _run_args(Path(run))
    if source is None:
        source = args.get("data")
        if source is None:
            raise ValueError(f"{flag} is needed: {run} does not record the data set it was trained on "
                             f"(no {RESULTS_NAME} with its arguments)")
    data = load_images(source, model.num_levels, args.get("size"), flag=flag, video=model.num_axes == 3)
    if data.image_shape != model.image_shape:
        layout = ", ".join(("channels", *model.axis_names))
        raise ValueError(f"{flag} {source}: items of shape {data.image_shape} ({layout}) do not fit the model in "
                         f"{run}, which models {model.image_shape}")
    if model.num_classes is not None and data.train_labels is None:
        raise ValueError(f"{flag} {source}: the model in {run} is class-conditional but these images have no labels "
                         f"(use a folder whose sub-folders name the classes)")
    return data


def _known_labels(model: AutoregressiveAxialTransformer, labels: Optional[torch.Tensor], flag: str
                  ) -> Optional[torch.Tensor]:
    """A data set's labels for the model: None for an unconditional model, checked against its classes."""
    if model.num_classes is None or labels is None:
        return None
    if int(labels.max()) >= model.num_classes:
        raise ValueError(f"{flag}: labels up to {int(labels.max())} but the model knows {model.num_classes} classes")
    return labels


def _class_names(run: Path) -> list[str]:
    """The names of the run's classes, by label (results.json's class_names; empty if not recorded)."""
    try:
        return list(json.loads((run / RESULTS_NAME).read_text()).get("class_names") or [])
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return []


def _label_number(text: str, names: list[str], num_classes: int) -> int:
    """A --labels entry: a class name first (a folder named "3" means that folder), else a label number."""
    if text in names:
        return names.index(text)
    try:
        label = int(text)
    except ValueError:
        known = f"its classes: {', '.join(names)}" if names else "no class names recorded; use numbers"
        raise ValueError(f"--labels: {text!r} is not a class of this run ({known})") from None
    if not 0 <= label < num_classes:
        raise ValueError(f"--labels must be class names or numbers in [0, {num_classes}), got {label}")
    return label


def _labels(model: AutoregressiveAxialTransformer, given: Optional[list[str]], num: int,
            names: Sequence[str] = ()) -> Optional[torch.Tensor]:
    if model.num_classes is None:
        if given:
            raise ValueError("--labels: the model is not class-conditional (it was trained without labels)")
        return None
    if given:
        labels = [_label_number(text, list(names), model.num_classes) for text in given]
        return torch.tensor(labels).repeat(-(-num // len(labels)))[:num].to(model.device)
    return (torch.arange(num) % model.num_classes).to(model.device)


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"--temperature must be > 0, got {temperature}")


def cmd_sample(args: argparse.Namespace) -> None:
    _check_temperature(args.temperature)
    model = _load_model(args.run, args.device)
    labels = _labels(model, args.labels, args.num, _class_names(Path(args.run)))
    generator = torch.Generator(device=model.device).manual_seed(args.seed)
    with cpu_threads(model.device):
        images = model.sample(args.num, labels, args.temperature, generator, use_cache=args.use_cache)
    out = Path(args.out)
    if out.suffix.lower() == ".gif":
        save_animation(images, model.num_levels, out, args.per_row or min(10, args.num))
    else:
        save_grid(images, model.num_levels, out, args.per_row or min(10, args.num))
    print(f"wrote {args.out}: {args.num} samples")


def cmd_complete(args: argparse.Namespace) -> None:
    _check_temperature(args.temperature)
    model = _load_model(args.run, args.device)
    first = model.image_shape[1]
    if not 0 <= args.keep <= first:
        raise ValueError(f"--keep must be in [0, {first}] (the model's {model.axis_names[0]}), got {args.keep}")
    data = _images_for(model, args.run, args.images, "--images")
    images, labels = data.split("test")
    images, labels = images[: args.num], None if labels is None else labels[: args.num]
    labels = _known_labels(model, labels, "--images")
    generator = torch.Generator(device=model.device).manual_seed(args.seed)
    completions = completions_of(model, images, labels, args.keep, args.samples, args.temperature, generator)
    save_completions(images, completions, args.keep, model.num_levels, Path(args.out))
    print(f"wrote {args.out}: {len(images)} items x (original, first {args.keep} of its {model.axis_names[0]}, "
          f"{args.samples} completions)")


def cmd_evaluate(args: argparse.Namespace) -> float:
    model = _load_model(args.run, args.device)
    data = _images_for(model, args.run, args.data, "--data")
    images, labels = data.split(args.split)
    bits, per_slice = evaluate_bits(model, images, _known_labels(model, labels, "--data"), batch=args.batch_size)
    print(f"{args.split} bits/dim: {bits:.4f} on {len(images)} images   (uniform: {math.log2(model.num_levels):.3f})")
    if frame_record(model, per_slice):
        print(f"{args.split} {format_frames(per_slice)}")
    return bits


def cmd_push(args: argparse.Namespace) -> str:
    from ..models.hub import import_hub
    from .hub import push_run

    import_hub()
    from huggingface_hub.utils import HfHubHTTPError

    try:
        commit = push_run(args.run, args.repo_id, token=args.token, private=True if args.private else None,
                          revision=args.revision)
    except HfHubHTTPError as error:  # a refused token, a repo of someone else's, the Hub unreachable
        raise ValueError(f"the Hub refused the upload to {args.repo_id}: {error}") from error
    print(f"pushed {args.run} to {args.repo_id}: {getattr(commit, 'commit_url', commit)}")
    return str(commit)


def cmd_train(args: argparse.Namespace) -> dict:
    options = {f.name: getattr(args, f.name) for f in TrainConfig.__dataclass_fields__.values()}
    return train(TrainConfig(**options))


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "complete": cmd_complete, "evaluate": cmd_evaluate,
            "push": cmd_push}


def main(argv: Optional[list[str]] = None) -> int:
    """Run one command; returns the exit status (0, 1 for a stopped training, 2 for a usage error)."""
    args = apply_preset(build_parser().parse_args(argv), argv, build_parser)
    try:
        with command_line():  # errors name this command's flags
            COMMANDS[args.command](args)
    except NonFiniteLossError as error:
        print(f"{PROG} {args.command}: {error}", file=sys.stderr)
        return 1
    # the package's input errors, and an optional extra missing (its message names it): one line, no traceback
    except (ValueError, TypeError, FileNotFoundError, ImportError) as error:
        print(f"{PROG} {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0
