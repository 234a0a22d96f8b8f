"""DCNv3 speed: the sampling implementations against the grid_sample reference, op and model.

    python benchmarks/dcnv3_speed.py --device cpu --batch-size 8 --model-batch-size 8
    python benchmarks/dcnv3_speed.py --device cuda --batch-size 64 --model-batch-size 64

Part 1, the sampling op at the four stage shapes of the tiny model (56x56 C64 G4, 28x28 C128
G8, 14x14 C256 G16, 7x7 C512 G32; 3x3 points, offsets ~N(0, 2) px): time per call of the
forward and of forward+backward (gradients w.r.t. value, offsets and weights), median of
``--repeats`` after a warm-up, with the largest deviation of each implementation's output and
gradients from the reference (each relative to the reference's largest magnitude). A point
within rounding of an integer coordinate can take the other one-sided slope of the bilinear
kink if an implementation's coordinate arithmetic differs by an ulp from grid_sample's; that
shows as a large offsets-gradient deviation at a single coordinate.

Part 2, models: forward+input-gradient images/s of ``unified_dcn_v3_tiny`` with each
implementation and of ``unified_convnext_tiny`` (random init), the ratio of their times, and the
largest relative deviation of the DCNv3 logits and input gradient from the reference (layer
scales set to 1 for that, as 1e-6 would hide the mixers; it does not change the time).

Implementations: "reference" (grid_sample) and "gather" (embedding_bag) everywhere, "triton"
on CUDA when triton is importable (`stm_probe.ops.dcnv3`). Targets (issue 13): tiny DCNv3
forward+input-gradient within 1.5x of ConvNeXt's time on a GPU; on CPU at least as fast as the
reference (the default there).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable

import torch

from stm_probe.models import create_model
from stm_probe.ops import DCNV3_IMPL_ENV, dcnv3_from_offsets
from stm_probe.runtime.session import resolve_device

STAGES = ((56, 64, 4), (28, 128, 8), (14, 256, 16), (7, 512, 32))  # map size, channels, groups
POINTS = 9


def _median_ms(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn()`` in ms after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def _rel_dev(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def implementations(device: torch.device) -> list[str]:
    impls = ["reference", "gather"]
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
            impls.append("triton")
        except ImportError:
            print("triton not importable: no 'triton' line")
    return impls


def op_benchmark(device: torch.device, batch: int, repeats: int, impls: list[str]) -> None:
    print(f"\nsampling op, batch {batch}, {device}: ms per call (reference / impl = speed-up), max rel. deviation")
    for size, channels, groups in STAGES:
        gen = torch.Generator().manual_seed(0)
        length = size * size
        value = torch.randn(batch, size, size, channels, generator=gen).to(device)
        offsets = (2 * torch.randn(batch, length, groups, POINTS, 2, generator=gen)).to(device)
        weights = torch.randn(batch, length, groups, POINTS, generator=gen).softmax(-1).to(device)
        probe = torch.randn(batch, length, channels, generator=gen).to(device)
        inputs = tuple(t.requires_grad_() for t in (value, offsets, weights))

        def forward(impl: str) -> torch.Tensor:
            with torch.no_grad():
                return dcnv3_from_offsets(*inputs, impl=impl)

        def forward_backward(impl: str) -> tuple[torch.Tensor, ...]:
            out = dcnv3_from_offsets(*inputs, impl=impl)
            return (out.detach(), *torch.autograd.grad((out * probe).sum(), inputs))

        reference = forward_backward("reference")
        times = {impl: (_median_ms(lambda: forward(impl), device, repeats),
                        _median_ms(lambda: forward_backward(impl), device, repeats)) for impl in impls}
        ref_f, ref_fb = times["reference"]
        print(f"{size}x{size} C{channels} G{groups}:")
        for impl in impls:
            fwd, fwd_bwd = times[impl]
            devs = " ".join(f"{_rel_dev(a, b):.0e}" for a, b in zip(forward_backward(impl), reference))
            print(f"  {impl:9s} forward {fwd:8.2f} ms ({ref_f / fwd:5.2f}x)   forward+backward {fwd_bwd:8.2f} ms"
                  f" ({ref_fb / fwd_bwd:5.2f}x)   deviation out/d value/d offsets/d weights {devs}")


def model_benchmark(device: torch.device, batch: int, size: int, repeats: int, impls: list[str]) -> None:
    print(f"\nmodels, forward+input-gradient, batch {batch} at {size} px, {device}: images/s")
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=gen).to(device)

    def input_gradient(net: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.detach().requires_grad_(True)
        logits = net(x)
        return logits.detach(), torch.autograd.grad(logits.sum(), x)[0]

    torch.manual_seed(0)
    convnext = create_model("unified_convnext_tiny").to(device).eval()
    convnext_ms = _median_ms(lambda: input_gradient(convnext), device, repeats)
    print(f"  unified_convnext_tiny        {batch / convnext_ms * 1e3:8.1f}")
    torch.manual_seed(0)
    dcn = create_model("unified_dcn_v3_tiny")
    with torch.no_grad():  # layer scales 1 (not 1e-6) so the deviations below say something
        for name, param in dcn.named_parameters():
            if name.endswith(("gamma1", "gamma2")):
                param.fill_(1.0)
    dcn = dcn.to(device).eval()
    previous = os.environ.get(DCNV3_IMPL_ENV)
    try:
        os.environ[DCNV3_IMPL_ENV] = "reference"
        reference = input_gradient(dcn)
        ref_ms = None
        for impl in impls:
            os.environ[DCNV3_IMPL_ENV] = impl
            ms = _median_ms(lambda: input_gradient(dcn), device, repeats)
            ref_ms = ms if impl == "reference" else ref_ms
            logits, grad = input_gradient(dcn)
            print(f"  unified_dcn_v3_tiny {impl:9s}{batch / ms * 1e3:8.1f}   time vs convnext {ms / convnext_ms:5.2f}x"
                  f"   speed-up vs reference {ref_ms / ms:5.2f}x   logits deviation {_rel_dev(logits, reference[0]):.1e}"
                  f"   input-gradient deviation {_rel_dev(grad, reference[1]):.1e}")
    finally:
        if previous is None:
            os.environ.pop(DCNV3_IMPL_ENV, None)
        else:
            os.environ[DCNV3_IMPL_ENV] = previous


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=None, help="op batch (default 64 on CUDA, 8 on CPU)")
    parser.add_argument("--model-batch-size", type=int, default=None, help="default 64 on CUDA, 8 on CPU")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-models", action="store_true")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # lines appear at once, also in a pipe
    device = resolve_device(args.device)
    default_batch = 64 if device.type == "cuda" else 8
    impls = implementations(device)
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} CPU threads")
    op_benchmark(device, args.batch_size or default_batch, args.repeats, impls)
    if not args.skip_models:
        model_benchmark(device, args.model_batch_size or default_batch, args.input_size, args.repeats, impls)


if __name__ == "__main__":
    main()
