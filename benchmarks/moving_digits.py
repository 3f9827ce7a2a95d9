"""Does the video model use the frames it has seen? Moving digits, trained as a user would, against
the single-frame model given the same wall time.

    python -m benchmarks.moving_digits                  # the docs' tables (about 30 minutes on 2 CPU cores)
    python -m benchmarks.moving_digits --steps 200      # a shorter look
    python -m benchmarks.moving_digits --quick          # 2 steps of width 8: to check the script runs

1. The video model: `axial-attention train --data moving-digits` with the trainer's defaults (only the
   run folder and, if given, --steps set). Each 8-frame 16x16 clip is one video (1, 8, 16, 16).
2. The single-frame model: `--data moving-digit-frames` (every frame an independent 16x16 image, the
   same clips and split) with the trainer's defaults for those images, trained for the same wall time
   as the video model's training (its steps from a short timed run of the same configuration).
Both are scored on the same test pixels: bits/dim, and the test bits of each frame (the frame model
pays for every frame alike; a video model that follows the motion pays for frame 1 and little after).
It also writes the video model's completions of test clips from their first frame (PNG and GIF).
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch

from axial_attention import AutoregressiveAxialTransformer
from axial_attention.training import TrainConfig, load_images, train
from axial_attention.training.data import CLIP_FRAMES, MOVING_DIGIT_FRAMES, MOVING_DIGITS
from axial_attention.training.devices import select_device
from axial_attention.training.pictures import save_completions
from axial_attention.training.trainer import completions_of, evaluate_bits
from benchmarks.common import benchmark_parser, machine_description, markdown_table, set_threads, write_results

DOCS = Path(__file__).resolve().parent.parent / "docs"
QUICK = dict(dim=8, depth=1, heads=2, batch_size=2)


def timed_train(config: TrainConfig) -> tuple[dict, float]:
    start = time.perf_counter()
    result = train(config)
    return result, time.perf_counter() - start


def training_seconds(result: dict) -> float:
    """The training loop's time without its test evaluations."""
    return result["train_seconds_this_process"] - result["eval_seconds_this_process"]


def main() -> None:
    p = benchmark_parser(__doc__, common=("threads", "device"),
                         device=dict(default="auto", help="the trainer's --device (default: auto)"))
    p.add_argument("--steps", type=int, help="the video model's steps (default: the trainer's)")
    p.add_argument("--out", help="folder for the run folders (default: runs/moving-digits-benchmark, with -quick "
                                 "added for --quick, so a smoke run leaves a real run's samples alone)")
    args = p.parse_args()
    out = Path(args.out or "runs/moving-digits-benchmark" + ("-quick" if args.quick else ""))
    set_threads(args.threads)
    device = select_device(args.device)
    machine = machine_description(device)
    print(f"{machine}\n")
    common = dict(device=args.device, overwrite=True, progress=False, **(QUICK if args.quick else {}))
    steps = 2 if args.quick else args.steps

    video_config = TrainConfig(data=MOVING_DIGITS, out=str(out / MOVING_DIGITS), **common,
                               **({} if steps is None else {"steps": steps}))
    video, video_seconds = timed_train(video_config)
    video_model = AutoregressiveAxialTransformer.from_pretrained(out / MOVING_DIGITS)

    # The frame model's steps for the same wall time, from a short timed run of its configuration.
    frame_config = TrainConfig(data=MOVING_DIGIT_FRAMES, out=str(out / MOVING_DIGIT_FRAMES), **common)
    probe_steps = 2 if args.quick else 40
    probe, _ = timed_train(dataclasses.replace(frame_config, steps=probe_steps, eval_every=probe_steps,
                                               checkpoint_every=probe_steps, out=str(out / "probe")))
    frame_steps = max(1, round(training_seconds(video) / (training_seconds(probe) / probe_steps)))
    frames, frame_seconds = timed_train(dataclasses.replace(frame_config, steps=frame_steps))
    frame_model = AutoregressiveAxialTransformer.from_pretrained(out / MOVING_DIGIT_FRAMES)

    test_clips, test_labels = load_images(MOVING_DIGITS).split("test")
    video_frames = video["test_bits_per_frame"]
    frame_frames = [evaluate_bits(frame_model, test_clips[:, :, t], test_labels)[0] * test_clips[0, :, t].numel()
                    for t in range(CLIP_FRAMES)]
    later = sum(video_frames[1:]) / (len(video_frames) - 1)
    ratios = {"later_over_first": later / video_frames[0],
              "video_over_frames": video["test_bits_per_dim"] / frames["test_bits_per_dim"]}

    video_args, frame_args = video["args"], frames["args"]
    caption = (f"Moving digits (8-frame 16x16 clips, 17 levels), each model trained with the trainer's defaults "
               f"for its data. Video: {video_args['steps']} steps of {video_args['batch_size']} "
               f"clips, width {video_args['dim']}, {video_args['depth']} layers per level, past_window "
               f"{video_args['past_window']}; single frames: {frame_steps} steps of {frame_args['batch_size']} "
               f"frames, width {frame_args['dim']}, {frame_args['depth']} layers per level, for the same training "
               f"time. Test bits/dim over the same test pixels:")
    table = markdown_table(
        ["model", "training time", "test bits/dim", "video / frames"],
        [["video (1, 8, 16, 16): frames, rows and inner levels + past-frame window",
          f"{training_seconds(video) / 60:.1f} min", f"**{video['test_bits_per_dim']:.3f}**",
          f"**{ratios['video_over_frames']:.2f}x**"],
         ["single frames (1, 16, 16): rows and inner levels", f"{training_seconds(frames) / 60:.1f} min",
          f"{frames['test_bits_per_dim']:.3f}", "1x"],
         ["uniform over 17 levels", "", f"{math.log2(17):.3f}", ""]])
    frame_caption = (f"Test bits of each frame (mean over the {len(test_clips)} test clips; a frame is 256 pixels); "
                     f"frames 2-8 cost **{ratios['later_over_first']:.2f}x** frame 1's for the video model:")
    frame_table = markdown_table(
        ["model", *(f"frame {t + 1}" for t in range(CLIP_FRAMES)), "frames 2-8 / frame 1"],
        [["video", *(f"{b:.1f}" for b in video_frames), f"**{ratios['later_over_first']:.2f}x**"],
         ["single frames", *(f"{b:.1f}" for b in frame_frames), f"{sum(frame_frames[1:]) / 7 / frame_frames[0]:.2f}x"]])
    print(f"\n{caption}\n\n{table}\n\n{frame_caption}\n\n{frame_table}")

    # Completions from the first frame: the original, the kept frame, two continuations, per test clip.
    generator = torch.Generator(device=video_model.device).manual_seed(0)
    originals, labels = test_clips[:6], test_labels[:6]
    completions = completions_of(video_model, originals, labels, 1, 2, generator=generator)
    pictures = out if args.quick else DOCS
    for suffix in (".png", ".gif"):
        save_completions(originals, completions, 1, 17, pictures / f"moving_digits_completions{suffix}")
    print(f"\nwrote {pictures / 'moving_digits_completions.png'} and .gif")

    results = {"video": video, "frames": frames, "frame_steps": frame_steps, "frame_model_bits_per_frame": frame_frames,
               "video_seconds": video_seconds, "frame_seconds": frame_seconds, **ratios}
    write_results(__spec__.name, args, "video vs frames", results,
                  [(caption, table), (frame_caption, frame_table)], device)


if __name__ == "__main__":
    main()
