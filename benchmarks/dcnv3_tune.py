"""Tune the Triton DCNv3 kernels' launch (rows per program, warps) on a CUDA GPU.

    python benchmarks/dcnv3_tune.py [--batch-size 64] [--block-rows 16,32,64,128,256] [--warps 1,2,4,8]

For the four stage shapes of the tiny model (as `dcnv3_speed.py`: 56x56 C64 G4, 28x28 C128 G8,
14x14 C256 G16, 7x7 C512 G32; 3x3 points, offsets ~N(0, 2) px), times the forward kernel and the
forward+backward (gradients w.r.t. value, locations and weights) for every (BLOCK_R, num_warps) in
the grid, through `triton.testing.do_bench` (median ms), checks each configuration's output and
gradients against the grid_sample reference, and prints the configuration with the least total
time over the four shapes for each kernel beside the current `GPU_LAUNCH` and the official
InternImage CUDA op's times measured on an H200 (shared/reference/GPU_MEASUREMENTS.md).
"""
from __future__ import annotations

import argparse
import itertools

import torch

STAGES = ((56, 64, 4), (28, 128, 8), (14, 256, 16), (7, 512, 32))  # map size, channels, groups
POINTS = 9
# official compiled op on an H200, batch 64: (forward ms, forward+backward ms) per stage
OFFICIAL_MS = ((0.49, 2.74), (0.25, 1.35), (0.13, 0.66), (0.06, 0.30))


def _inputs(size: int, channels: int, groups: int, batch: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    value = torch.randn(batch, size, size, channels, generator=gen)
    centre = (torch.arange(size) + 0.5) / size
    grid = torch.stack(torch.meshgrid(centre, centre, indexing="xy"), -1).reshape(1, size * size, 1, 1, 2)
    offsets = 2 * torch.randn(batch, size * size, groups, POINTS, 2, generator=gen) / size
    locations = grid + offsets
    weights = torch.randn(batch, size * size, groups, POINTS, generator=gen).softmax(-1)
    return tuple(t.cuda() for t in (value, locations, weights))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--block-rows", default="16,32,64,128,256")
    parser.add_argument("--warps", default="1,2,4,8")
    args = parser.parse_args()
    import triton.testing

    from stm_probe.ops import dcnv3_triton as kernels
    from stm_probe.ops.dcnv3 import dcnv3_core_reference

    blocks = [int(v) for v in args.block_rows.split(",")]
    warps = [int(v) for v in args.warps.split(",")]
    current = dict(kernels.GPU_LAUNCH)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__},"
          f" batch {args.batch_size}; current GPU_LAUNCH {current}")
    data = [_inputs(*stage, args.batch_size) for stage in STAGES]
    references = []
    for value, locations, weights in data:
        leaves = [t.clone().requires_grad_(True) for t in (value, locations, weights)]
        out = dcnv3_core_reference(*leaves)
        out.backward(torch.ones_like(out))
        references.append((out.detach(), *[t.grad for t in leaves]))

    def timings(config: dict) -> list[tuple[float, float, float]]:
        kernels.GPU_LAUNCH.update(config)
        rows = []
        for (value, locations, weights), ref in zip(data, references):
            leaves = [t.clone().requires_grad_(True) for t in (value, locations, weights)]
            out = kernels.dcnv3_core_triton(*leaves)
            out.backward(torch.ones_like(out))
            dev = max(((a - b).abs().max() / b.abs().max()).item()
                      for a, b in zip((out, *[t.grad for t in leaves]), ref))
            grad = torch.ones_like(out)

            def fwd():
                return kernels.dcnv3_core_triton(value, locations, weights)

            def fwd_bwd():
                outs = kernels.dcnv3_core_triton(*leaves)
                torch.autograd.grad(outs, leaves, grad)

            rows.append((triton.testing.do_bench(fwd), triton.testing.do_bench(fwd_bwd), dev))
        return rows

    base = timings(current)
    print("\ncurrent:", "  ".join(f"{f:.3f}/{fb:.3f} ms (dev {d:.1e})" for f, fb, d in base))
    best = {"forward": (sum(r[0] for r in base), current["forward"]),
            "backward": (sum(r[1] for r in base), current["backward"])}
    print("\nBLOCK_R warps | forward ms per stage | forward+backward ms per stage (forward kernel at the current config)")
    for block, warp in itertools.product(blocks, warps):
        fwd_rows = timings({"forward": (block, warp), "backward": current["backward"]})
        both_rows = timings({"forward": current["forward"], "backward": (block, warp)})
        worst = max(d for *_, d in fwd_rows + both_rows)
        print(f"{block:7d} {warp:5d} | " + " ".join(f"{r[0]:6.3f}" for r in fwd_rows) + " | "
              + " ".join(f"{r[1]:6.3f}" for r in both_rows) + f" | max dev {worst:.1e}")
        if worst > 1e-4:
            continue
        total_f = sum(r[0] for r in fwd_rows)
        total_b = sum(r[1] for r in both_rows)
        if total_f < best["forward"][0]:
            best["forward"] = (total_f, (block, warp))
        if total_b < best["backward"][0]:
            best["backward"] = (total_b, (block, warp))
    chosen = {kernel: cfg for kernel, (_, cfg) in best.items()}
    tuned = timings(chosen)
    print(f"\nbest: {chosen}")
    print("stage              | forward ms: ours / official = ratio | forward+backward ms: ours / official = ratio")
    for (size, channels, groups), (f, fb, _), (of, ofb) in zip(STAGES, tuned, OFFICIAL_MS):
        print(f"{size:2d}x{size:<2d} C{channels:<3d} G{groups:<2d} | {f:.3f} / {of:.2f} = {f / of:.2f}x"
              f" | {fb:.3f} / {ofb:.2f} = {fb / ofb:.2f}x")
    kernels.GPU_LAUNCH.update(current)


if __name__ == "__main__":
    main()
