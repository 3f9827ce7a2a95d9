"""Does temporal context help? The video model on moving digits against the same model on single frames.

    python -m benchmarks.moving_digits                  # the README's table (about 10 minutes on 2 CPU cores)
    python -m benchmarks.moving_digits --steps 50       # a quick look
    python -m benchmarks.moving_digits --quick          # 2 steps of width 8: to check the script runs

Both models are trained through the package's trainer (`axial-attention train`) on the same clips
with the same split: `--data moving-digits` models each 8-frame 16x16 clip as one video
(1, 8, 16, 16); `--data moving-digit-frames` models every frame as an independent 16x16 image (the
image model: the same width, depth and levels, no temporal context). Each step sees the same pixels
(the frame model's batch is `--batch-size` clips' frames), for the same number of steps. Test
bits/dim are over the same test pixels, so the figures compare directly with each other and with
the uniform distribution over the 17 levels.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

from axial_attention.training import TrainConfig, train
from axial_attention.training.data import CLIP_FRAMES
from axial_attention.training.devices import select_device
from benchmarks.common import benchmark_parser, machine_description, markdown_table, set_threads, write_results


def main() -> None:
    p = benchmark_parser(__doc__, common=("threads", "device"),
                         device=dict(default="auto", help="the trainer's --device (default: auto)"))
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch-size", type=int, default=8, help="clips per step (the frame model: their frames)")
    p.add_argument("--dim", type=int, default=48)
    p.add_argument("--depth", type=int, default=2, help="layers per level")
    p.add_argument("--out", help="folder for the two run folders (default: runs/moving-digits-benchmark, "
                                 "with -quick added for --quick, so a smoke run leaves a real run's samples alone)")
    args = p.parse_args()
    if args.quick:
        args.steps, args.batch_size, args.dim, args.depth = 2, 2, 8, 1
    args.out = args.out or "runs/moving-digits-benchmark" + ("-quick" if args.quick else "")
    set_threads(args.threads)
    device = select_device(args.device)
    machine = machine_description(device)
    print(f"{machine}\n")
    common = dict(steps=args.steps, dim=args.dim, depth=args.depth, heads=4, dropout=0.1, attn_dropout=0.0,
                  device=args.device, eval_every=max(1, args.steps // 2), checkpoint_every=args.steps,
                  overwrite=True, progress=False)
    runs = {"video (1, 8, 16, 16): frames, height and width levels": ("moving-digits", args.batch_size),
            "single frames (1, 16, 16): height and width levels": ("moving-digit-frames",
                                                                   args.batch_size * CLIP_FRAMES)}
    rows, results = [], {}
    for name, (data, batch) in runs.items():
        start = time.perf_counter()
        result = train(TrainConfig(data=data, batch_size=batch, out=str(Path(args.out) / data), **common))
        seconds = time.perf_counter() - start
        results[data] = {"batch": batch, "seconds": seconds, "test_bits_per_dim": result["test_bits_per_dim"]}
        rows.append([name, f"{batch}", f"{seconds / 60:.1f} min", f"**{result['test_bits_per_dim']:.3f}**"])
    rows.append(["uniform over 17 levels", "", "", f"{math.log2(17):.3f}"])
    caption = (f"Moving digits, {args.steps} steps of {args.batch_size} clips' pixels, width {args.dim}, "
               f"{args.depth} layers per level, test bits/dim over the same test clips:")
    table = markdown_table(["model", "batch", "wall time (train + eval)", "test bits/dim"], rows)
    print(f"\n{caption}\n\n{table}")
    ratio = results["moving-digits"]["test_bits_per_dim"] / results["moving-digit-frames"]["test_bits_per_dim"]
    print(f"\nvideo model / frame model bits per pixel: {ratio:.3f} (below 1: the temporal context helps); "
          f"samples in {Path(args.out) / 'moving-digits' / 'samples.png'} and samples.gif")
    write_results(__spec__.name, args, "video vs frames", {**results, "video_over_frames": ratio},
                  [(f"{machine}; {caption}", table)], device)


if __name__ == "__main__":
    main()
