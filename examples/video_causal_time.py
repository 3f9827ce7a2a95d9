"""Video (batch, frames, channels, height, width): attention along time, height and width, causal in
time only, so frame t's output never depends on later frames (a video predictor can be trained on
whole clips in one pass).

    python examples/video_causal_time.py --frames 8 --size 32
"""
import argparse

import torch

from axial_attention import AxialAttention


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--heads", type=int, default=8)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    attn = AxialAttention(
        dim=args.channels,
        num_dimensions=3,
        heads=args.heads,
        dim_index=2,  # (batch, frames, channels, height, width)
        causal=(True, False, False),  # time, height, width: in the order the axes appear
    ).eval()
    video = torch.randn(2, args.frames, args.channels, args.size, args.size)
    with torch.no_grad():
        out = attn(video)
        cut = args.frames // 2
        future_changed = video.clone()
        future_changed[:, cut:] = torch.randn_like(future_changed[:, cut:])
        out2 = attn(future_changed)
    past = (out2[:, :cut] - out[:, :cut]).abs().max().item()
    future = (out2[:, cut:] - out[:, cut:]).abs().max().item()
    print(f"video {tuple(video.shape)} -> {tuple(out.shape)}")
    print(f"changing frames {cut}.. moves frames <{cut} by {past:.1e} and frames >={cut} by {future:.2f}")
    assert past == 0.0 and future > 0


if __name__ == "__main__":
    main()
