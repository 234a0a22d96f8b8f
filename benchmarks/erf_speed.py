"""ERF speed: batched maps vs a one-image-at-a-time loop, and vs raw forward+input-gradient.

Reported as ratios (images/s over images/s), e.g.

    python benchmarks/erf_speed.py --model unified_convnext_tiny --batch-size 16 --images 32
    python benchmarks/erf_speed.py --model unified_convnext_tiny --input-size 1024 --images 2 --memory-only

Targets (issue 3): batched >= 3x the loop on CPU; last-stage ERF >= 90% of the model's
batched forward+input-gradient throughput; peak memory of a tiny model at 1024 on CPU < 16 GB.

The loop is the straightforward reference (as in tests/test_erf.py and RepLKNet's script): for
each image and each stage, a forward to that stage and a backward of its centre score. A second
loop line runs the same per-image loop with frozen parameters, as the analysis does. Subnormal
floats are flushed to zero for the whole process, as `stm-probe erf` does, so every line
benefits equally.
"""
from __future__ import annotations

import argparse
import resource
import time

import torch

from stm_probe.runtime.session import resolve_device
from stm_probe.core.erf import MapMaker, contribution_maps, flush_denormals
from stm_probe.models import create_model
from stm_probe.models.features import Normalized, frozen_parameters, stage_outputs


def _timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def reference_loop(net: Normalized, images: torch.Tensor, stages: list[int]) -> None:
    """Per image, per stage: forward to the stage, backward of the centre score."""
    for img in images:
        for stage in stages:
            x = net.normalize(img[None]).detach().requires_grad_(True)
            feat = stage_outputs(net.model, x, [stage])[0]
            h, w = feat.shape[-2:]
            torch.autograd.grad(feat[0, :, h // 2, w // 2].relu().sum(), x)


def _maps(net: Normalized, batches: list, stages: list[int], device: torch.device, batch_size: int) -> None:
    """The probe's maps of every batch (`MapMaker`, sub-batched to fit in memory)."""
    maker = MapMaker(net, stages, device, batch_size)
    for pixels in batches:
        maker(pixels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unified_convnext_micro")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--memory-only", action="store_true", help="only run the batched ERF and report peak memory")
    args = parser.parse_args()
    flush_denormals()  # as `stm-probe erf` does; applies to every timing below
    device = resolve_device(args.device)
    net = Normalized(create_model(args.model)).to(device).eval()
    images = torch.rand(args.images, 3, args.input_size, args.input_size, device=device)
    batches = list(images.split(args.batch_size))
    all_stages, last = [0, 1, 2, 3], [3]
    contribution_maps(net, images[:1], all_stages)  # warm-up

    batched = args.images / _timed(lambda: _maps(net, batches, all_stages, device, args.batch_size), device)
    peak = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    print(f"{args.model} on {device}, input {args.input_size}, batch {args.batch_size}, {args.images} images")
    print(f"batched ERF, 4 stages:        {batched:8.2f} img/s   peak memory {peak:.2f} GB")
    if args.memory_only:
        return
    loop = args.images / _timed(lambda: reference_loop(net, images, all_stages), device)
    with frozen_parameters(net):
        loop_same = args.images / _timed(lambda: reference_loop(net, images, all_stages), device)
    last_stage = args.images / _timed(lambda: _maps(net, batches, last, device, args.batch_size), device)

    def forward_input_grad() -> None:
        for batch in batches:
            x = batch.detach().requires_grad_(True)
            torch.autograd.grad(net(x).sum(), x)

    raw = args.images / _timed(forward_input_grad, device)
    print(f"one-image loop, 4 stages:     {loop:8.2f} img/s   batched/loop = {batched / loop:.2f}x (target >= 3)")
    print(f"  same loop, frozen params:  {loop_same:8.2f} img/s   batched/loop = {batched / loop_same:.2f}x")
    print(f"batched ERF, last stage:      {last_stage:8.2f} img/s")
    print(f"forward+input-gradient (raw): {raw:8.2f} img/s   last-stage ERF/raw = {last_stage / raw:.2f} "
          f"(target >= 0.90); 4-stage ERF/raw = {batched / raw:.2f}")


if __name__ == "__main__":
    main()
