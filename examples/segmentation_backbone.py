"""An Axial-ResNet as the backbone of a small segmentation model, trained on a synthetic task.

    python examples/segmentation_backbone.py                      # 150 steps of 8 images, 64x64
    python examples/segmentation_backbone.py --steps 10 --size 32 --width 0.0625   # seconds

The task: find the bright squares in a noisy picture that also holds dark squares of the same sizes
(a pixel is foreground inside a bright one). The backbone is axial_resnet26s's layout, (1, 2, 4, 1)
blocks, at a reduced width; `forward_intermediates` gives its four stages' maps at strides 4, 8, 16 and
32 (channels as `feature_info` lists them), and a small FPN-style decoder merges them top-down into
logits at stride 4, upsampled to the picture. The same maps come from timm's
`create_model("axial_resnet26s", features_only=True, out_indices=(1, 2, 3, 4))` once
`axial_attention.register_timm_models()` has run (docs/backbones.md).
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from axial_attention import AxialResNet

OUT_INDICES = (1, 2, 3, 4)  # the four stages: strides 4, 8, 16, 32 (index 0 is the stem, stride 2)


def bright_squares(batch: int, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Pictures (batch, 3, size, size) of noise with 1-3 bright and 1-3 dark squares; masks (batch, 1, size,
    size), 1 inside the bright squares."""
    images = 0.3 * torch.randn(batch, 3, size, size, generator=generator)
    masks = torch.zeros(batch, 1, size, size)
    for i in range(batch):
        for brightness in (1.5, -1.5):
            for _ in range(int(torch.randint(1, 4, (), generator=generator))):
                side = int(torch.randint(size // 8, size // 3 + 1, (), generator=generator))
                top, left = (int(v) for v in torch.randint(0, size - side + 1, (2,), generator=generator))
                images[i, :, top:top + side, left:left + side] += brightness
                masks[i, :, top:top + side, left:left + side] = float(brightness > 0)  # later squares cover
    return images, masks


class SegmentationModel(nn.Module):
    """backbone features -> 1x1 projections to `dim` channels -> top-down sums (FPN) -> a 3x3 head at stride 4
    -> one logit per pixel, upsampled to the input: (batch, 3, H, W) -> (batch, 1, H, W)."""

    def __init__(self, backbone: AxialResNet, dim: int = 32) -> None:
        super().__init__()
        self.backbone = backbone
        channels = [backbone.feature_info[i]["num_chs"] for i in OUT_INDICES]
        self.lateral = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in channels)
        self.head = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, bias=False), nn.BatchNorm2d(dim), nn.ReLU(inplace=True),
            nn.Conv2d(dim, 1, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        features = self.backbone.forward_intermediates(x, indices=list(OUT_INDICES), intermediates_only=True)
        merged = self.lateral[-1](features[-1])
        for lateral, feature in zip(reversed(self.lateral[:-1]), reversed(features[:-1])):
            merged = lateral(feature) + F.interpolate(merged, size=feature.shape[-2:], mode="nearest")
        return F.interpolate(self.head(merged), size=x.shape[-2:], mode="bilinear", align_corners=False)


def iou(logits: Tensor, masks: Tensor) -> float:
    predicted, target = logits > 0, masks > 0.5
    return float((predicted & target).sum() / (predicted | target).sum().clamp(min=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="picture height and width (a multiple of 32)")
    parser.add_argument("--width", type=float, default=0.125, help="width multiplier (axial_resnet26s: 0.5)")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dim", type=int, default=32, help="the decoder's channels")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    # axial_resnet26s's blocks at a reduced width; image_size: every attention global at this size
    backbone = AxialResNet((1, 2, 4, 1), args.width, num_classes=0, heads=args.heads, image_size=args.size)
    model = SegmentationModel(backbone, args.dim)
    print("backbone features: " + ", ".join(
        f"{backbone.feature_info[i]['num_chs']} channels at stride {backbone.feature_info[i]['reduction']}"
        for i in OUT_INDICES) + f"; {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    data = torch.Generator().manual_seed(args.seed)
    held_out = bright_squares(16, args.size, torch.Generator().manual_seed(args.seed + 1))

    losses, start = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        images, masks = bright_squares(args.batch, args.size, data)
        loss = F.binary_cross_entropy_with_logits(model(images), masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % args.log_every == 0 or step == args.steps:
            print(f"step {step:4d}  loss {loss.item():.4f}  ({time.perf_counter() - start:.1f} s)")

    model.eval()
    with torch.no_grad():
        score = iou(model(held_out[0]), held_out[1])
    window = max(1, min(5, len(losses) // 2))  # the mean of the first and of the last few steps
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    print(f"loss {first:.4f} -> {last:.4f} (mean of the first and last {window} steps); "
          f"held-out IoU of the bright squares {score:.3f}")


if __name__ == "__main__":
    main()
