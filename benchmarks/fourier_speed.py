"""Fourier heat map cost: `stm-probe bias --probe fourier` vs the raw batched forward passes it needs.

The heat map of N images over F frequency classes needs, per loader batch of B images, one clean
forward pass and F * B perturbed ones in chunks of ``--batch-size`` pairs. The baseline runs
exactly those forward passes (same model, device, chunk shapes and top-1) on a tensor already on
the device, so the ratio is the price of everything else: drawing the signs, building the bases
and the perturbed pairs, clipping, and gathering the per-image values (target: within 1.2x).
Run on demand, e.g.

    python benchmarks/fourier_speed.py --model unified_convnext_tiny --num-images 50 --batch-size 128
    python benchmarks/fourier_speed.py --model unified_convnext_micro --num-images 2 --grid 8  # CPU
"""
from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import torch

from stm_probe.data import eval_transform, make_loader, resolve_source
from stm_probe.models import create_model
from stm_probe.models.features import Normalized
from stm_probe.probes.bias import BiasConfig
from stm_probe.probes.bias.fourier import FourierHeatMap
from stm_probe.runtime.session import resolve_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _method(size: int, batch_size: int, grid: int, device: torch.device) -> FourierHeatMap:
    """The probe's method on a minimal session (the settings `measure` reads)."""
    session = SimpleNamespace(options=SimpleNamespace(input_size=size, batch_size=batch_size, seed=0), seed=0,
                              device=device, source=SimpleNamespace(has_labels=False))
    return FourierHeatMap(BiasConfig(fourier_grid=grid), session)


def run_ours(method: FourierHeatMap, model: SimpleNamespace, batches: list, device: torch.device) -> float:
    """Wall seconds of `FourierHeatMap.measure` over every batch (per-image values on the CPU)."""
    _sync(device)
    start = time.perf_counter()
    for batch in batches:
        method.measure(model, batch, repeat=0)
    _sync(device)
    return time.perf_counter() - start


@torch.inference_mode()
def run_raw(method: FourierHeatMap, net: Normalized, batches: list, device: torch.device) -> float:
    """Wall seconds of the same forward passes on inputs already on the device (top-1 only)."""
    size, frequencies = method.input_size, len(method.cells)
    _sync(device)
    start = time.perf_counter()
    for batch in batches:
        b = batch.images.shape[0]
        step = method.chunk_size(b)
        chunk = torch.rand(step * b, 3, size, size, device=device)
        net(batch.images.to(device)).argmax(-1)
        for first in range(0, frequencies, step):
            pairs = min(step, frequencies - first) * b
            net(chunk[:pairs]).argmax(-1)
    _sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unified_convnext_tiny")
    parser.add_argument("--data", default=None, help="images (default: the embedded sample set)")
    parser.add_argument("--num-images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16, help="(image, frequency) pairs per forward pass")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--grid", type=int, default=4, help="every k-th frequency (the --fourier-grid default: 4)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    source = resolve_source(args.data).take(args.num_images)
    loader = make_loader(source, batch_size=args.batch_size, transform=eval_transform(args.input_size, "center"))
    batches = list(loader)
    net = Normalized(create_model(args.model, input_size=args.input_size)).to(device).eval()
    model = SimpleNamespace(name=args.model, net=net)
    method = _method(args.input_size, args.batch_size, args.grid, device)
    pairs = len(method.cells) * len(source)
    print(f"device={device} threads={torch.get_num_threads()} model={args.model} images={len(source)} "
          f"input={args.input_size} grid={args.grid} frequencies={len(method.cells)} pairs={pairs} "
          f"pairs/forward={args.batch_size}")
    warm = _method(args.input_size, args.batch_size, args.input_size // 2, device)  # zero + Nyquist only
    run_ours(warm, model, batches[:1], device)
    run_raw(warm, net, batches[:1], device)
    raw = run_raw(method, net, batches, device)
    ours = run_ours(method, model, batches, device)
    print(f"{'pipeline':36s} {'wall s':>8s} {'pairs/s':>9s}")
    for name, seconds in (("raw forward passes (top-1 only)", raw), ("stm-probe fourier (measure)", ours)):
        print(f"{name:36s} {seconds:8.2f} {pairs / seconds:9.1f}")
    print(f"ratio (stm-probe / raw forward passes): {ours / raw:.3f}x (target <= 1.2x)")


if __name__ == "__main__":
    main()
