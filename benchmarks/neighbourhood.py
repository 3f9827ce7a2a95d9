"""Past-slice attention: a gather of each position's window (what PastNeighbourhoodAttention does) against
SDPA over the whole previous slice with a band mask, the other way to put a window on the primitive.

    python -m benchmarks.neighbourhood            # the docs' table
    python -m benchmarks.neighbourhood --quick    # tiny sizes: to check the script runs

Both compute, for every position (t, p), attention from its query into the keys of slice t - 1 within a
window x window neighbourhood of p, plus a learned bias per head and offset, and return the same
tensor (checked before timing). "gather": the window's keys and values gathered into a window axis
(one copy), the bias as one more key channel, SDPA over 25 keys a query (fused). "band": SDPA with each
slice's positions as the queries and the previous slice's as the keys, the bias and the window as a
float (heads, P, P) mask, -inf outside the window: every query scores every key of the slice, and a
mask that needs a gradient keeps SDPA off its fused kernel. Forward + backward of the attention alone
(the projections are the same in both), alternated in one process, median of --repeats.
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import Callable

import torch
import torch.nn.functional as F

from axial_attention import attend_along_axis
from axial_attention.layers.neighbourhood import gather_past_windows
from benchmarks.common import (
    benchmark_parser,
    interleaved_medians,
    machine_description,
    markdown_table,
    set_threads,
    write_results,
)


def band_bias(offset_bias: torch.Tensor, side: int, window: int) -> torch.Tensor:
    """(heads, K) offset biases -> (heads, P, P) for P = side * side positions: bias[h, p, p'] of p' - p, -inf
    where p' is outside p's window."""
    r = window // 2
    offsets = {o: j for j, o in enumerate(itertools.product(range(-r, r + 1), repeat=2))}
    index = torch.full((side * side, side * side), -1, dtype=torch.long)
    for (y, x), (y2, x2) in itertools.product(itertools.product(range(side), repeat=2), repeat=2):
        j = offsets.get((y2 - y, x2 - x))
        if j is not None:
            index[y * side + x, y2 * side + x2] = j
    full = offset_bias[:, index.clamp(min=0)]
    return full.masked_fill(index < 0, float("-inf"))


def one_more(t: torch.Tensor, heads: int, value: float) -> torch.Tensor:
    """(..., heads * e) -> (..., heads * (e + 1)), each head's extra channel `value` (as the module does)."""
    return F.pad(t.unflatten(-1, (heads, -1)), (0, 1), value=value).flatten(-2)


def gather(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, window: int) -> torch.Tensor:
    """The module's way: windows gathered into a window axis, the bias as one more key channel."""
    clips, frames, side, _, width = q.shape
    heads = bias.shape[0]
    e = width // heads
    keys = gather_past_windows(one_more(k, heads, 0.0), 1, window // 2)
    values = gather_past_windows(one_more(v, heads, 0.0), 1, window // 2)
    inside = gather_past_windows(torch.ones(1, 2, side, side, 1), 1, window // 2)[0, 1:2, ..., 0] > 0
    mask = inside & (torch.arange(frames) > 0).view(frames, 1, 1, 1)  # slice 0 has no past
    keys = keys + F.pad(bias.t()[..., None], (e, 0)).flatten(-2)
    out = attend_along_axis(one_more(q, heads, math.sqrt(e)).unsqueeze(-2), keys, values, 4, heads,
                            scale=1 / math.sqrt(e), key_mask=mask.expand(keys.shape[:-1]))
    return out.squeeze(-2).unflatten(-1, (heads, e + 1))[..., :e].flatten(-2)


def band(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, window: int) -> torch.Tensor:
    """SDPA over the whole previous slice, the window and the bias as a float mask."""
    clips, frames, side, _, _ = q.shape
    heads = bias.shape[0]

    def previous(t: torch.Tensor) -> torch.Tensor:  # slice i - 1 at slice i (zeros at 0), positions flattened
        return F.pad(t.flatten(2, 3)[:, :-1], (0, 0, 0, 0, 1, 0))

    mask = band_bias(bias, side, window)[None, None].expand(clips, frames, -1, -1, -1)  # (.., heads, P, P)
    out = attend_along_axis(q.flatten(2, 3), previous(k), previous(v), 2, heads, attn_bias=mask)
    return out.masked_fill((torch.arange(frames) == 0).view(1, frames, 1, 1), 0.0).unflatten(2, (side, side))


def backward(fn: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> None:
    fn(*inputs).square().sum().backward()


def main() -> None:
    p = benchmark_parser(__doc__, common=("threads", "repeats"), threads=dict(default=2), repeats=dict(default=7))
    p.add_argument("--window", type=int, default=5)
    args = p.parse_args()
    set_threads(args.threads)
    machine = machine_description()
    print(machine)
    sizes = [(2, 4, 8)] if args.quick else [(8, 8, 16), (2, 8, 32), (1, 4, 64)]  # (clips, frames, side)
    repeats = 1 if args.quick else args.repeats
    heads, e, window = 4, 12, args.window
    rows, results = [], {}
    for clips, frames, side in sizes:
        torch.manual_seed(0)
        q = torch.randn(clips, frames, side, side, heads * e, requires_grad=True)
        k = torch.randn_like(q, requires_grad=True)
        v = torch.randn_like(q, requires_grad=True)
        bias = torch.randn(heads, window * window, requires_grad=True)

        inputs = (q, k, v, bias, window)
        torch.testing.assert_close(gather(*inputs), band(*inputs), rtol=1e-4, atol=1e-4)  # the same attention
        steps = {name: functools.partial(backward, fn, *inputs) for name, fn in (("gather", gather), ("band", band))}
        times = interleaved_medians(steps, repeats=repeats)
        name = f"{clips} clips of {frames} frames of {side}x{side}"
        results[name] = {**times, "band_over_gather": times["band"] / times["gather"]}
        rows.append([name, f"{side * side}", f"{window * window}", f"{times['gather'] * 1e3:.0f}",
                     f"{times['band'] * 1e3:.0f}", f"**{times['band'] / times['gather']:.1f}x**"])
        print(rows[-1], flush=True)
    caption = (f"Past-slice attention into a {window}x{window} window of the previous frame, forward + backward of "
               f"the attention alone ({heads} heads of {e}), median of {repeats} alternated runs:")
    table = markdown_table(["input", "keys a query (band)", "keys a query (gather)", "gather (ms)", "band (ms)",
                            "band / gather"], rows)
    print(f"\n{caption}\n\n{table}")
    write_results(__spec__.name, args, "gather vs band", results, [(caption, table)])


if __name__ == "__main__":
    main()
