"""PositionSensitiveAxialAttention against the naive einsum formulation of Eq. 4 (Axial-DeepLab).

The naive version is the one the paper's official code uses: gather the relative embeddings into
(channels, L, L) tensors, three einsums for q.k, q.r^q and k.r^k, one batch norm over the stacked
similarities, softmax, two einsums for the outputs. It runs on the same module's parameters and the
script checks both give the same output before timing them, interleaved, in one process.

    python -m benchmarks.deeplab            # the README table (56 x 56, 8 heads, global span)
    python -m benchmarks.deeplab --quick    # a tiny smoke run
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from axial_attention import PositionSensitiveAxialAttention
from benchmarks.common import interleaved_medians, machine_description


def naive_forward(layer: PositionSensitiveAxialAttention, x: torch.Tensor) -> torch.Tensor:
    """Eq. 4 with every (L, L) term materialised separately, in the official code's layout."""
    heads, dq, dv = layer.heads, layer.dim_qk, layer.dim_v
    training = layer.training
    lines_first = x.permute(0, 3, 1, 2) if layer.axis == 2 else x.permute(0, 2, 1, 3)  # (N, lines, C, L)
    n, lines, channels, length = lines_first.shape
    seq = lines_first.reshape(n * lines, channels, length)
    qkv = F.conv1d(seq, layer.qkv.weight.flatten(1)[:, :, None])
    bn = layer.bn_qkv
    qkv = F.batch_norm(qkv, bn.running_mean, bn.running_var, bn.weight, bn.bias, training, 0.0, bn.eps)
    q, k, v = qkv.reshape(n * lines, heads, 2 * dq + dv, length).split([dq, dq, dv], dim=2)

    offsets = torch.arange(length)[:, None] - torch.arange(length)[None, :]  # [p, o] = p - o
    index = (offsets + layer.span - 1).t().reshape(-1)  # row-major over [o, p]
    emb = layer.relative.index_select(1, index).view(-1, length, length)
    q_emb, k_emb, v_emb = emb.split([dq, dq, dv], dim=0)
    qr = torch.einsum("bgci,cij->bgij", q, q_emb)
    kr = torch.einsum("bgcj,cij->bgij", k, k_emb)
    qk = torch.einsum("bgci,bgcj->bgij", q, k)
    stacked = torch.cat([qk, qr, kr], dim=1)
    zeros = torch.zeros(3 * heads)
    sim = F.batch_norm(stacked, zeros, layer.similarity_running_var.flatten().clone(),
                       layer.similarity_weight.flatten(), zeros, training, 0.0, layer.eps)
    weights = sim.view(n * lines, 3, heads, length, length).sum(dim=1).softmax(dim=3)
    sv = torch.einsum("bgij,bgcj->bgci", weights, v)
    sve = torch.einsum("bgij,cij->bgci", weights, v_emb)
    out = torch.stack([sv, sve], dim=1).reshape(n * lines, 2 * heads * dv, length)
    bn = layer.bn_output
    out = F.batch_norm(out, bn.running_mean, bn.running_var, bn.weight, bn.bias, training, 0.0, bn.eps)
    out = out.view(n, lines, 2, heads * dv, length).sum(dim=2)
    return out.permute(0, 2, 3, 1) if layer.axis == 2 else out.permute(0, 2, 1, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=56, help="feature map height = width = global span")
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads; 1 by default because on a shared machine multi-threaded kernels "
                        "spend more time waiting for a descheduled thread than computing")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    args = parser.parse_args()
    if args.quick:
        args.size, args.channels, args.batch, args.repeats = 8, 32, 2, 2

    torch.set_num_threads(args.threads)
    print(f"Machine: {machine_description()}", flush=True)
    torch.manual_seed(0)
    layer = PositionSensitiveAxialAttention(args.channels, heads=args.heads, span=args.size)
    x = torch.randn(args.batch, args.channels, args.size, args.size)
    rows = []
    for mode in ("eval", "train"):
        layer.train(mode == "train")
        state = {k: v.clone() for k, v in layer.state_dict().items()}
        with torch.no_grad():
            torch.testing.assert_close(layer(x), naive_forward(layer, x), rtol=1e-4, atol=1e-4)
        layer.load_state_dict(state)  # training-mode calls move running statistics; keep runs alike

        def ours():
            with torch.no_grad():
                layer(x)

        def naive():
            with torch.no_grad():
                naive_forward(layer, x)

        t = interleaved_medians({"naive": naive, "ours": ours}, args.repeats)
        rows.append((mode, t["naive"], t["ours"]))
        print(f"{mode}: naive {t['naive'] * 1e3:.1f} ms, ours {t['ours'] * 1e3:.1f} ms, "
              f"ratio {t['naive'] / t['ours']:.2f}x faster")

    print()
    print(f"Forward of one height-axis layer, batch {args.batch}, {args.channels} channels, "
          f"{args.size}x{args.size} map, {args.heads} heads, global span; median of {args.repeats}; "
          f"{machine_description()}.")
    print()
    print("| batch norm mode | naive einsum (ms) | PositionSensitiveAxialAttention (ms) | speed-up |")
    print("|---|---|---|---|")
    for mode, naive_s, ours_s in rows:
        print(f"| {mode} | {naive_s * 1e3:.1f} | {ours_s * 1e3:.1f} | {naive_s / ours_s:.2f}x |")


if __name__ == "__main__":
    main()
