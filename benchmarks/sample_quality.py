"""What a trained model's samples look like, measured (axial_attention.training.sample_quality).

    python -m benchmarks.sample_quality runs/moving-digits       # a video run: continuations and clips
    python -m benchmarks.sample_quality runs/digits              # an image run: class-conditional digits
    python -m benchmarks.sample_quality RUN --temperatures 1.0 0.9 --clips 100
    python -m benchmarks.sample_quality RUN --quick              # 4 clips, a short classifier: a smoke run

A digit classifier is trained on the run's real training images (for video: every frame of the training
clips); its accuracy on the real test images or frames is the ceiling the samples are held to. Then:
- a video run: `--clips` test clips continued from their first frame, per frame the ink relative to frame
  1 and the share classified as the clip's digit, beside the same figures for the real clips; and, for a
  class-conditional model, clips drawn for each label (the share of their frames classified as it);
- an image run: `--per-class` samples drawn for each label, the share classified as it.
The part is named after the run's data set (e.g. `moving-digits`), so one results file holds both runs.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from axial_attention import AutoregressiveAxialTransformer
from axial_attention.training.data import load_images
from axial_attention.training.devices import select_device
from axial_attention.training.sample_quality import (
    accuracy,
    clip_quality,
    conditional_quality,
    continuation_quality,
    real_frames,
    train_classifier,
)
from benchmarks.common import benchmark_parser, machine_description, markdown_table, set_threads, write_results


def _row(name: str, values: list[float], digits: int = 2) -> list[str]:
    return [name, *(f"{v:.{digits}f}" for v in values)]


def main() -> None:
    p = benchmark_parser(__doc__, common=("threads", "device"))
    p.add_argument("run", help="a run folder written by `axial-attention train`")
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0], help="sampling temperatures")
    p.add_argument("--clips", type=int, default=100, help="test clips continued (video runs)")
    p.add_argument("--per-class", type=int, default=10, help="samples drawn for each label")
    p.add_argument("--classifier-steps", type=int, default=800)
    args = p.parse_args()
    if args.quick:
        args.clips, args.per_class, args.classifier_steps = 4, 1, 20
    set_threads(args.threads)
    run = Path(args.run)
    recorded = json.loads((run / "results.json").read_text())
    model = AutoregressiveAxialTransformer.from_pretrained(run, device=select_device(args.device))
    data = load_images(recorded["args"]["data"], model.num_levels, recorded["args"].get("size"),
                       video=model.num_axes == 3)
    start = time.perf_counter()
    classifier = train_classifier(*real_frames(data.train_images, data.train_labels), data.levels,
                                  steps=args.classifier_steps)
    ceiling = accuracy(classifier, *real_frames(data.test_images, data.test_labels))
    print(machine_description(model.device))
    print(f"classifier: {ceiling:.3f} on the real test {'frames' if model.num_axes == 3 else 'images'} "
          f"({time.perf_counter() - start:.0f} s to train)")
    results: dict = {"classifier_accuracy_on_real_test": ceiling,
                     "test_bits_per_dim": recorded.get("test_bits_per_dim"),
                     "test_bits_per_frame": recorded.get("test_bits_per_frame")}
    tables = []
    if model.num_axes == 3:
        clips, labels = data.test_images[: args.clips], data.test_labels[: args.clips]
        real = clip_quality(clips, labels, classifier)
        results["real"] = real
        frames = clips.shape[2]
        header = ["", *(f"frame {t}" for t in range(2, frames + 1))]
        rows = [_row("ink vs frame 1, real clips", real["ink_vs_frame_1"][1:]),
                _row("classified as the clip's digit, real clips", real["agreement"][1:])]
        for temperature in args.temperatures:
            got = continuation_quality(model, clips, labels, classifier, temperature)
            results[f"continuations_t{temperature}"] = got
            rows += [_row(f"ink vs frame 1, continued at temperature {temperature}", got["ink_vs_frame_1"][1:]),
                     _row(f"classified as the clip's digit, temperature {temperature}", got["agreement"][1:])]
        per_frame = results["test_bits_per_frame"]
        if per_frame:
            rows.append(_row("test bits of the frame / frame 1's", [b / per_frame[0] for b in per_frame[1:]]))
        caption = (f"{len(clips)} test clips continued from their first frame; classifier "
                   f"{ceiling:.3f} on real test frames")
        tables.append((caption, markdown_table(header, rows)))
    if model.num_classes is not None:
        rows = [["real test items", f"{ceiling:.3f}"]]
        for temperature in args.temperatures:
            share, _ = conditional_quality(model, classifier, args.per_class, temperature)
            results[f"conditional_t{temperature}"] = share
            rows.append([f"samples drawn for each label, temperature {temperature}", f"{share:.3f}"])
        what = "frames of clips" if model.num_axes == 3 else "images"
        tables.append((f"classified as the label asked for ({args.per_class} {what} per label)",
                       markdown_table(["", "share"], rows)))
    for caption, table in tables:
        print(f"\n{caption}\n{table}")
    write_results(__spec__.name, args, Path(recorded["args"]["data"]).name, results, tables, model.device)


if __name__ == "__main__":
    main()
