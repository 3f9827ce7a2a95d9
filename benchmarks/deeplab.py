"""PositionSensitiveAxialAttention against the naive Eq. 4 (Axial-DeepLab) the tests check it against.

The naive version is `naive_eq4` of tests/reference.py: every (L, L) score materialised with the
relative embeddings gathered by explicit offset, three einsums for q.k, q.r^q and k.r^k, a textbook
batch norm of each, softmax, two einsums for the outputs, a batch norm of the output. It runs on the
same module's parameters and the script checks both give the same output before timing them,
interleaved, in one process.

    python -m benchmarks.deeplab            # the README table (56 x 56, 8 heads, global span)
    python -m benchmarks.deeplab --quick    # a tiny smoke run
"""
from __future__ import annotations

import torch

from axial_attention import PositionSensitiveAxialAttention
from benchmarks.common import benchmark_parser, interleaved_medians, machine_description, markdown_table, write_results
from tests.reference import naive_eq4


def main() -> None:
    parser = benchmark_parser(
        __doc__,
        repeats=dict(default=15),
        threads=dict(default=1, help="CPU threads; 1 by default because on a shared machine multi-threaded kernels "
                                     "spend more time waiting for a descheduled thread than computing"),
    )
    parser.add_argument("--size", type=int, default=56, help="feature map height = width = global span")
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    if args.quick:
        args.size, args.channels, args.batch, args.repeats = 8, 32, 2, 2

    torch.set_num_threads(args.threads)
    machine = machine_description()
    print(f"Machine: {machine}", flush=True)
    torch.manual_seed(0)
    layer = PositionSensitiveAxialAttention(args.channels, heads=args.heads, span=args.size)
    x = torch.randn(args.batch, args.channels, args.size, args.size)
    rows, results = [], {}
    for mode in ("eval", "train"):
        layer.train(mode == "train")
        state = {k: v.clone() for k, v in layer.state_dict().items()}
        with torch.no_grad():
            torch.testing.assert_close(layer(x), naive_eq4(layer, x)[0], rtol=1e-4, atol=1e-4)
        layer.load_state_dict(state)  # training-mode calls move running statistics; keep runs alike

        def ours():
            with torch.no_grad():
                layer(x)

        def naive():
            with torch.no_grad():
                naive_eq4(layer, x)

        t = interleaved_medians({"naive": naive, "ours": ours}, args.repeats)
        speed_up = t["naive"] / t["ours"]
        results[mode] = {"naive_s": t["naive"], "ours_s": t["ours"], "speed_up": speed_up}
        rows.append([mode, f"{t['naive'] * 1e3:.1f}", f"{t['ours'] * 1e3:.1f}", f"{speed_up:.2f}x"])
        print(f"{mode}: naive {t['naive'] * 1e3:.1f} ms, ours {t['ours'] * 1e3:.1f} ms, "
              f"ratio {speed_up:.2f}x faster")

    caption = (f"Forward of one height-axis layer, batch {args.batch}, {args.channels} channels, "
               f"{args.size}x{args.size} map, {args.heads} heads, global span; median of {args.repeats}; "
               f"{machine}.")
    table = markdown_table(["batch norm mode", "naive Eq. 4 (ms)", "PositionSensitiveAxialAttention (ms)",
                            "speed-up"], rows)
    print(f"\n{caption}\n\n{table}")
    write_results(__spec__.name, args, "forward", results, [(caption, table)])


if __name__ == "__main__":
    main()
