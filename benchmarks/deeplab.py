"""PositionSensitiveAxialAttention against the naive Eq. 4 (Axial-DeepLab) the tests check it against.

The naive version is `naive_eq4` of tests/reference.py: every (L, L) score materialised with the
relative embeddings gathered by explicit offset, three einsums for q.k, q.r^q and k.r^k, a textbook
batch norm of each, softmax, two einsums for the outputs, a batch norm of the output. It runs on the
same module's parameters and the script checks both give the same output before timing them,
interleaved, in one process.

    python -m benchmarks.deeplab                      # the layer table (56 x 56, 8 heads, global span)
    python -m benchmarks.deeplab --part resnets       # Axial-ResNets against a ResNet-50 (issue 21)
    python -m benchmarks.deeplab --part profile       # where axial_resnet50s spends its eval forward
    python -m benchmarks.deeplab --quick              # a tiny smoke run (add --part resnets for that part)

The "resnets" part times axial_resnet26s / 50s / 50m against a torchvision-equivalent ResNet-50
(Bottleneck, 25.56M parameters) built here, on the same input, alternated model by model in one process:
eval latency (forward under no_grad) and a training step (forward, cross-entropy, backward, SGD step).
Multiply-adds are counted by torch.utils.flop_counter (FLOPs / 2) on one image. Peak memory is the peak
resident set (VmHWM) of a fresh process that builds the model and runs that one measurement, above the
process's level after building it: it includes activations, gradients, allocator caches and torch's
workspaces, which is what a user's process pays for.

The "profile" part runs torch.profiler over --repeats eval forwards of --model (axial_resnet50s) and
tabulates the operators' shares of self CPU time: how much is layout copies (aten::copy_), products,
softmax, convolutions.
"""
from __future__ import annotations

import json

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from axial_attention import PositionSensitiveAxialAttention, axial_resnet26s, axial_resnet50m, axial_resnet50s
from benchmarks.common import (
    PeakRSS,
    benchmark_parser,
    interleaved_medians,
    machine_description,
    markdown_table,
    measure_in_subprocess,
    write_results,
)
from tests.reference import naive_eq4


class Bottleneck(nn.Module):
    """torchvision's ResNet-50 block (stride on the 3x3 convolution, "ResNet v1.5")."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1, self.bn1 = nn.Conv2d(inplanes, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, out, 1, bias=False), nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


def resnet50(num_classes: int = 1000) -> nn.Module:
    """The ResNet-50 of torchvision.models.resnet50 (25,557,032 parameters with 1000 classes)."""
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    inplanes = 64
    for i, blocks in enumerate((3, 4, 6, 3)):
        for j in range(blocks):
            layers.append(Bottleneck(inplanes, 64 * 2**i, 2 if i > 0 and j == 0 else 1))
            inplanes = 64 * 2**i * Bottleneck.expansion
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(inplanes, num_classes))


MODELS = {"ResNet-50": resnet50, "axial_resnet26s": axial_resnet26s, "axial_resnet50s": axial_resnet50s,
          "axial_resnet50m": axial_resnet50m}


def build(name: str, size: int, channels_last: bool = False) -> nn.Module:
    torch.manual_seed(0)
    model = MODELS[name]() if name == "ResNet-50" else MODELS[name](image_size=size)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def inputs(batch: int, size: int, channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g)
    x = x.to(memory_format=torch.channels_last) if channels_last else x
    return x, torch.randint(0, 1000, (batch,), generator=g)


def step_fn(model: nn.Module, mode: str, x: torch.Tensor, y: torch.Tensor):
    """One eval forward (no_grad) or one training step (forward, loss, backward, SGD update).

    Each call puts the model in its mode first: the eval and training closures of one model alternate.
    """
    if mode == "eval":
        def run() -> None:
            model.eval()
            with torch.no_grad():
                model(x)
        return run
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def run() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return run


def child(config: dict) -> None:
    """One model, one mode, in this fresh process: the peak resident memory that the measured call adds."""
    torch.set_num_threads(config["threads"])
    model = build(config["model"], config["size"], config["channels_last"])
    x, y = inputs(config["batch"], config["size"], config["channels_last"])
    run = step_fn(model, config["mode"], x, y)
    with PeakRSS() as rss:
        run()
    print(json.dumps({"peak_bytes": rss.peak_bytes}))


def resnets(args) -> None:
    torch.set_num_threads(args.threads)
    machine = machine_description()
    print(f"Machine: {machine}", flush=True)
    results, rows = {}, []
    timed = {}
    for name in MODELS:
        model = build(name, args.size, args.channels_last)
        x, y = inputs(args.batch, args.size, args.channels_last)
        params = sum(p.numel() for p in model.parameters())
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model.eval()(x[:1])
        results[name] = {"params": params, "gmacs_per_image": counter.get_total_flops() / 2 / 1e9}
        for mode in ("eval", "train"):
            timed[(name, mode)] = step_fn(model, mode, x, y)
    for mode in ("eval", "train"):
        # Alternated model by model, so a slower spell of the shared machine hits all of them alike.
        t = interleaved_medians({name: timed[(name, mode)] for name in MODELS}, args.repeats)
        for name in MODELS:
            results[name][f"{mode}_s"] = t[name]
            results[name][f"{mode}_ratio"] = t[name] / t["ResNet-50"]
        print(f"{mode}: " + ", ".join(f"{n} {t[n] * 1e3:.0f} ms ({t[n] / t['ResNet-50']:.2f}x)" for n in MODELS),
              flush=True)
    for mode in ("eval", "train"):
        for name in MODELS:
            config = dict(model=name, mode=mode, size=args.size, batch=args.batch, threads=args.threads,
                          channels_last=args.channels_last)
            results[name][f"{mode}_peak_bytes"] = measure_in_subprocess(__spec__.name, config)["peak_bytes"]
        base = results["ResNet-50"]
        for name in MODELS:
            results[name][f"{mode}_memory_ratio"] = results[name][f"{mode}_peak_bytes"] / base[f"{mode}_peak_bytes"]
    for name, r in results.items():
        rows.append([name, f"{r['params'] / 1e6:.2f}M", f"{r['gmacs_per_image']:.2f}",
                     f"{r['eval_s'] * 1e3:.0f} ({r['eval_ratio']:.2f}x)",
                     f"{r['train_s'] * 1e3:.0f} ({r['train_ratio']:.2f}x)",
                     f"{r['eval_peak_bytes'] / 2**20:.0f} ({r['eval_memory_ratio']:.2f}x)",
                     f"{r['train_peak_bytes'] / 2**20:.0f} ({r['train_memory_ratio']:.2f}x)"])
    layout = "channels_last" if args.channels_last else "NCHW"
    caption = (f"Axial-ResNets against a ResNet-50 (torchvision's, built in the benchmark), float32, "
               f"batch {args.batch}, {args.size}x{args.size} {layout} input, 1000 classes; "
               f"median of {args.repeats} alternated runs; "
               f"multiply-adds counted per image; memory is the peak resident set a fresh process adds for the call; "
               f"{machine}, a machine shared with other jobs.")
    table = markdown_table(["model", "params", "GMACs", "eval forward (ms)", "training step (ms)",
                            "eval peak memory (MiB)", "training peak memory (MiB)"], rows)
    print(f"\n{caption}\n\n{table}")
    write_results(__spec__.name, args, "resnets" + ("_channels_last" if args.channels_last else ""), results,
                  [(caption, table)])


def profile(args) -> None:
    from torch.profiler import profile as torch_profile

    torch.set_num_threads(args.threads)
    machine = machine_description()
    print(f"Machine: {machine}", flush=True)
    model = build(args.model, args.size, args.channels_last)
    run = step_fn(model, "eval", *inputs(args.batch, args.size, args.channels_last))
    run()  # warm-up: first-call allocations and kernel selection
    with torch_profile() as prof:
        for _ in range(args.repeats):
            run()
    ops = [(e.key, e.self_cpu_time_total, e.count) for e in prof.key_averages()]
    total = sum(t for _, t, _ in ops)
    ops.sort(key=lambda op: -op[1])
    results = {name: {"self_cpu_s": t / 1e6 / args.repeats, "share": t / total, "calls": count // args.repeats}
               for name, t, count in ops}
    rows = [[f"`{name}`", f"{r['self_cpu_s'] * 1e3:.1f}", f"{100 * r['share']:.1f}%", str(r["calls"])]
            for name, r in list(results.items())[:args.top]]
    layout = "channels_last" if args.channels_last else "NCHW"
    caption = (f"Operators of one {args.model} eval forward by self CPU time (torch.profiler, mean of {args.repeats}), "
               f"float32, batch {args.batch}, {args.size}x{args.size} {layout} input; the {args.top} largest of "
               f"{len(results)}; {machine}.")
    table = markdown_table(["operator", "self CPU (ms)", "share", "calls"], rows)
    print(f"\n{caption}\n\n{table}")
    write_results(__spec__.name, args, "profile" + ("_channels_last" if args.channels_last else ""), results,
                  [(caption, table)])


def main() -> None:
    parser = benchmark_parser(
        __doc__,
        child=True,
        repeats=dict(default=None, help="timed runs of each variant (default 15; profile: profiled forwards, 5)"),
        threads=dict(default=1, help="CPU threads; 1 by default because on a shared machine multi-threaded kernels "
                                     "spend more time waiting for a descheduled thread than computing"),
    )
    parser.add_argument("--part", choices=("forward", "resnets", "profile"), default="forward",
                        help="forward: one layer against the naive Eq. 4; resnets: Axial-ResNets against a "
                             "ResNet-50; profile: the operators of one model's eval forward")
    parser.add_argument("--size", type=int, default=None,
                        help="forward: map height = width = global span (56); resnets: image size (224)")
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--channels-last", action="store_true",
                        help="resnets, profile: channels_last inputs and models")
    parser.add_argument("--model", choices=tuple(MODELS), default="axial_resnet50s", help="profile: the model")
    parser.add_argument("--top", type=int, default=12, help="profile: operators tabulated")
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child))
    args.repeats = args.repeats or (5 if args.part == "profile" else 15)
    if args.part == "resnets":
        args.size = args.size or 224
        if args.quick:
            args.size, args.batch, args.repeats = 64, 1, 1
        return resnets(args)
    if args.part == "profile":
        args.size = args.size or 224
        if args.quick:
            args.size, args.batch, args.repeats = 64, 1, 1
        return profile(args)
    args.size = args.size or 56
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
