"""Batched forward and forward+input-gradient throughput (images/s) and peak memory per model.

The yardstick every analysis is compared against. Run on demand, e.g.

    python benchmarks/throughput.py --model unified_convnext_micro --model unified_swin_micro \
        --batch-size 16 --input-size 224 --device auto
"""
from __future__ import annotations

import argparse
import resource
import time

import torch

from stm_probe.runtime.session import resolve_device
from stm_probe.models import create_model, expand_model_patterns
from stm_probe.models.features import Normalized


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def time_images_per_s(fn, batch: torch.Tensor, repeats: int, device: torch.device) -> float:
    """Images per second of ``fn(batch)`` after one warm-up call, median of ``repeats`` timings."""
    fn(batch)
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(batch)
        _sync(device)
        times.append(time.perf_counter() - start)
    times.sort()
    return batch.shape[0] / times[len(times) // 2]


def forward_fn(net: torch.nn.Module):
    @torch.no_grad()
    def run(x: torch.Tensor) -> torch.Tensor:
        return net(x)
    return run


def input_gradient_fn(net: torch.nn.Module):
    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(net(x).sum(), x)
        return grad
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    names = expand_model_patterns(args.model or ["unified_*_micro"])
    print(f"device={device} batch={args.batch_size} input={args.input_size}")
    print(f"{'model':28s} {'fwd img/s':>10s} {'fwd+grad img/s':>15s} {'ratio':>6s} {'peak MB':>8s}")
    for name in names:
        net = Normalized(create_model(name)).to(device).eval()
        batch = torch.rand(args.batch_size, 3, args.input_size, args.input_size, device=device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        fwd = time_images_per_s(forward_fn(net), batch, args.repeats, device)
        grad = time_images_per_s(input_gradient_fn(net), batch, args.repeats, device)
        print(f"{name:28s} {fwd:10.1f} {grad:15.1f} {grad / fwd:6.2f} {_peak_mb(device):8.0f}")


if __name__ == "__main__":
    main()
