"""Precision options: speed of the ERF and PGD work, and how far bf16 moves each analysis's numbers.

    python benchmarks/precision_speed.py speed [--device cuda] [--model unified_convnext_tiny] [--size 224]
    python benchmarks/precision_speed.py deviation [--models unified_convnext_micro,...] [--size 32]

``speed``: images/s of forward + gradient w.r.t. the input (the work of ERF maps and of every PGD
step), batch ``--batch``, for strict fp32, tf32 (CUDA), bf16 autocast, bf16 + channels_last and
bf16 + channels_last + torch.compile, each after warm-up, through `apply_precision` exactly as a
run applies it; the ERF work is the last stage's centre-vector gradient (one backward per batch).

``deviation``: runs erf, invariance, adversarial (PGD) and bias (patch-shuffle, frequency-filter,
attribution) in fp32 and in bf16 on the same models and images and prints the ERF mean-map
correlation per stage, and the largest change of consistency / flip rate in percentage points.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def _work(net, x, kind: str):
    import torch

    pixels = x.detach().requires_grad_(True)
    if kind == "erf":
        stage = net.stages(pixels, [3])[0]
        h, w = stage.shape[-2:]
        stage[:, :, h // 2, w // 2].relu().sum().backward()
    else:  # pgd step: cross-entropy on the clean prediction
        logits = net(pixels)
        torch.nn.functional.cross_entropy(logits, logits.argmax(1)).backward()
    return pixels.grad


def speed(args: argparse.Namespace) -> None:
    import torch

    from stm_probe.models import create_model
    from stm_probe.models.features import Normalized, frozen_parameters
    from stm_probe.runtime.precision import Precision, apply_precision, set_matmul_precision

    device = torch.device(args.device)
    settings = [("fp32", Precision()), ("bf16", Precision("bf16")),
                ("bf16 + channels_last", Precision("bf16", channels_last=True)),
                ("bf16 + channels_last + compile", Precision("bf16", channels_last=True, compile=True))]
    if device.type == "cuda":
        settings.insert(1, ("tf32", Precision("tf32")))
    x = torch.rand(args.batch, 3, args.size, args.size, device=device)
    print(f"{args.model} at {args.size} px, batch {args.batch}, {device}: images/s of forward + input gradient")
    base = {}
    for kind in ("erf", "pgd"):
        for label, precision in settings:
            torch.manual_seed(0)
            model = create_model(args.model, input_size=args.size).to(device).eval()
            net = Normalized(model).to(device).eval()
            set_matmul_precision(precision)
            apply_precision(model, precision, device.type)
            with frozen_parameters(net):
                for _ in range(args.warmup):
                    _work(net, x, kind)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(args.repeats):
                    _work(net, x, kind)
                if device.type == "cuda":
                    torch.cuda.synchronize()
            rate = args.batch * args.repeats / (time.perf_counter() - start)
            base.setdefault(kind, rate)
            print(f"  {kind:3s} {label:32s} {rate:9.1f} img/s  {rate / base[kind]:5.2f}x")
    set_matmul_precision(Precision())


def deviation(args: argparse.Namespace) -> None:
    import stm_probe

    models = args.models.split(",")
    common = dict(models=models, input_size=args.size, num_images=args.images, batch_size=args.images,
                  bootstrap=20, quiet=True, device="cpu", checkpoint=tuple(args.checkpoint), data=args.data)
    runs = {"erf": dict(thresholds=(0.2, 0.5)),
            "invariance": dict(kind=("translation", "scale", "pre-rotation")),
            "adversarial": dict(attack=("pgd",), eps=("1", "4"), steps=5),
            "bias": dict(probe=("patch-shuffle", "frequency-filter", "attribution"), attribution_images=2)}
    metrics = {"invariance": "consistency", "adversarial": "flip_rate", "bias": "consistency"}
    with tempfile.TemporaryDirectory() as tmp:
        for probe, extra in runs.items():
            frames = {}
            started = time.perf_counter()
            for precision in ("fp32", "bf16"):
                frames[precision] = stm_probe.run(probe, out=Path(tmp) / f"{probe}-{precision}", precision=precision,
                                                  **common, **extra)
            seconds = time.perf_counter() - started
            a, b = frames["fp32"], frames["bf16"]
            if probe == "erf":
                for model in models:
                    stages = sorted(a[a.model == model]["stage"].unique())
                    corr = []
                    for stage in stages:
                        x = np.load(Path(tmp) / "erf-fp32" / "erf" / f"{model}_stage{stage}.npy").ravel()
                        y = np.load(Path(tmp) / "erf-bf16" / "erf" / f"{model}_stage{stage}.npy").ravel()
                        corr.append(np.corrcoef(x, y)[0, 1])
                    sel = a[(a.model == model) & (a.metric == "area_ratio")]
                    other = b[(b.model == model) & (b.metric == "area_ratio")]
                    diff = np.abs(sel["value"].to_numpy() - other["value"].to_numpy()).max()
                    print(f"erf {model}: map correlation per stage {', '.join(f'{c:.4f}' for c in corr)}; "
                          f"largest area-ratio change {diff:.4f}")
            else:
                metric = metrics[probe]
                for model in models:
                    x = a[(a.model == model) & (a.metric == metric)]["value"].to_numpy()
                    y = b[(b.model == model) & (b.metric == metric)]["value"].to_numpy()
                    d = np.abs(x - y)
                    print(f"{probe} {model}: {metric} change, points: max {d.max():.1f}, mean {d.mean():.2f} "
                          f"over {len(d)} rows")
            print(f"  ({probe}: {seconds:.0f} s for both runs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("speed")
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="unified_convnext_tiny")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p = sub.add_parser("deviation")
    p.add_argument("--models", default="unified_convnext_micro,unified_dcn_v3_micro")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--checkpoint", action="append", default=[], help="NAME=PATH, as the probes take it")
    p.add_argument("--data", default=None, help="images (default: the embedded sample)")
    args = parser.parse_args()
    speed(args) if args.what == "speed" else deviation(args)


if __name__ == "__main__":
    main()
