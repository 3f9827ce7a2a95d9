"""What rotary positions buy the Axial Transformer against its learned positional embedding, in test bits/dim.

    python -m benchmarks.positions            # the docs' table (about 25 minutes on 2 CPU cores)
    python -m benchmarks.positions --quick    # a few steps: to check the script runs

Part "digits": the main job (`axial-attention train` on the bundled digits with its defaults: 1200 steps,
class-conditional) once with `--pos-emb learned` and once with `--pos-emb rotary`, the same seed and
steps; the test bits/dim is the trainer's own final evaluation of the EMA weights on the 359 test digits.

Part "unseen size": each scheme trained by the same trainer on 6x6 crops (all nine of every training
digit, unconditional), then scored on the whole 8x8 test digits, a size it never saw. The rotary model's
weights load unchanged into a model built for 8x8; the learned model keeps its 6-long per-axis tables,
which `AxialPositionalEmbedding` interpolates linearly to 8 (the only way it can run there). Each is also
scored on the test digits' centre crops (the size it was trained on) for reference.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from axial_attention import AutoregressiveAxialTransformer
from axial_attention.training import evaluate_bits, load_images, train
from benchmarks.common import benchmark_parser, machine_description, markdown_table, set_threads, write_results

SCHEMES = ("learned", "rotary")
CROP = 6


def run_digits(scheme: str, out: Path, quick: bool) -> dict:
    extra = dict(steps=4, eval_every=2, checkpoint_every=2) if quick else {}
    result = train(data="digits", pos_emb=scheme, out=str(out), overwrite=True, progress=False, **extra)
    return {"test_bits_per_dim": result["test_bits_per_dim"], "steps": result["steps"],
            "train_seconds": result["train_seconds_this_process"]}


def all_crops(images: torch.Tensor, side: int) -> np.ndarray:
    """Every side x side crop of every image (N, C, H, W) -> (N * crops, C, side, side)."""
    h, w = images.shape[-2:]
    crops = [images[..., y:y + side, x:x + side] for y in range(h - side + 1) for x in range(w - side + 1)]
    return torch.cat(crops).numpy()


def whole_size_model(small: AutoregressiveAxialTransformer, shape: tuple[int, ...]) -> AutoregressiveAxialTransformer:
    """`small`'s weights in a model built for `shape`: a rotary model's load unchanged; a learned model keeps
    its own positional tables, interpolated to the new lengths when it runs."""
    arguments = {**small.config, "image_shape": list(shape)}
    large = AutoregressiveAxialTransformer(**arguments)
    if small.config["pos_emb"] == "rotary":
        large.load_state_dict(small.state_dict())
    else:
        weights = {k: v for k, v in small.state_dict().items() if not k.startswith("pos_emb.")}
        missing, unexpected = large.load_state_dict(weights, strict=False)
        assert not unexpected and all(k.startswith("pos_emb.") for k in missing), (missing, unexpected)
        large.pos_emb = small.pos_emb
        large.pos_emb.interpolate = True  # the layer's own linear resampling of each axis's table
    return large.eval()


def run_unseen_size(scheme: str, folder: Path, quick: bool) -> dict:
    digits = load_images("digits")
    crops = folder / "crops.npy"
    if not crops.exists():  # crops of training digits only: no test digit is ever trained on
        np.save(crops, all_crops(digits.train_images, CROP))
    extra = dict(steps=4, eval_every=2, checkpoint_every=2) if quick else {}
    out = folder / scheme
    result = train(data=str(crops), levels=digits.levels, pos_emb=scheme, out=str(out), overwrite=True,
                   progress=False, **extra)
    small = AutoregressiveAxialTransformer.from_pretrained(out)
    margin = (digits.test_images.shape[-1] - CROP) // 2
    centre = digits.test_images[..., margin:margin + CROP, margin:margin + CROP]
    with torch.no_grad():
        trained_size = evaluate_bits(small, centre, None)[0]
        whole = evaluate_bits(whole_size_model(small, tuple(digits.image_shape)), digits.test_images, None)[0]
    return {"crop_test_bits_per_dim": result["test_bits_per_dim"], "centre_crop_bits_per_dim": trained_size,
            "whole_digit_bits_per_dim": whole, "steps": result["steps"]}


def main() -> None:
    p = benchmark_parser(__doc__, common=("threads",), threads=dict(default=2))
    p.add_argument("--part", choices=("digits", "unseen-size", "both"), default="both")
    args = p.parse_args()
    set_threads(args.threads)
    machine = machine_description()
    print(f"Machine: {machine}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("digits", "both"):
            results = {scheme: run_digits(scheme, Path(tmp) / scheme, args.quick) for scheme in SCHEMES}
            # Training seconds stay in the JSON only: the two runs are sequential, so other load skews them.
            rows = [[scheme, str(r["steps"]), f"{r['test_bits_per_dim']:.3f}"] for scheme, r in results.items()]
            caption = (f"{machine}. The main job on the bundled digits (8x8, class-conditional), the same seed and "
                       f"steps for both; test bits/dim of the EMA weights on the 359 test digits:")
            table = markdown_table(["--pos-emb", "steps", "test bits/dim"], rows)
            print(caption, table, sep="\n")
            write_results(__spec__.name, args, "digits", results, [(caption, table)])
        if args.part in ("unseen-size", "both"):
            results = {scheme: run_unseen_size(scheme, Path(tmp), args.quick) for scheme in SCHEMES}
            rows = [[scheme, f"{r['centre_crop_bits_per_dim']:.3f}", f"{r['whole_digit_bits_per_dim']:.3f}"]
                    for scheme, r in results.items()]
            caption = (f"{machine}. Trained on 6x6 crops of the training digits ({results['rotary']['steps']} steps, "
                       f"unconditional), test bits/dim on the test digits' 6x6 centre crops and on the whole 8x8 "
                       f"digits, a size neither saw (learned: its tables interpolated to 8):")
            table = markdown_table(["--pos-emb", "6x6 centre crops", "whole 8x8 digits (unseen size)"], rows)
            print(caption, table, sep="\n")
            write_results(__spec__.name, args, "unseen-size", results, [(caption, table)])


if __name__ == "__main__":
    main()
