"""Invariance sweep throughput: stm-probe's batched tensor views vs the paper's per-image PIL pipeline.

The baseline is the original pipeline rebuilt: one run per kind (translation, pre-rotation,
post-rotation, scale), each decoding every image and, in the collate function, applying the
standard transform and one PIL/torchvision transform per level to every image, then running the
model on the standard batch and on each level's batch. stm-probe decodes each image once and makes
every view on the device (`stm_probe.core.invariance`). Same model, device, images, batch size, levels
and metrics; both run without loader workers. Run on demand, e.g.

    python benchmarks/invariance_speed.py --model unified_convnext_micro --num-images 8 --input-size 224
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

from stm_probe.runtime.session import resolve_device
from stm_probe.data import ShortSideResize, make_loader, resize_size, resolve_source
from stm_probe.core.invariance import (
    DIRECTIONS,
    SweepPlan,
    Views,
    default_levels,
    group_images,
    iter_views,
    prediction_metrics,
    run_sweep,
)
from stm_probe.models import create_model
from stm_probe.models.features import Normalized

KINDS = ("translation", "pre-rotation", "post-rotation", "scale")  # the kinds the original pipeline has
BICUBIC = T.InterpolationMode.BICUBIC


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- the original pipeline, rebuilt --------------------------------------------------------------
def _jitter_crop(x: torch.Tensor, shift: int, direction: tuple[int, int], size: int) -> torch.Tensor:
    """The paper's translation crop on a (3, h, w) tensor: window at the shifted centre, clipped to
    the image, zero-padded back to ``size`` on both sides."""
    h, w = x.shape[-2:]
    cy, cx = h // 2 + direction[0] * shift, w // 2 + direction[1] * shift
    half = size // 2
    crop = x[:, max(cy - half, 0):min(cy + half, h), max(cx - half, 0):min(cx + half, w)]
    ph, pw = size - crop.shape[1], size - crop.shape[2]
    return F.pad(crop, (pw // 2, (pw + 1) // 2, ph // 2, (ph + 1) // 2))


def original_transform(kind: str, level: float, size: int, mean, std) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> normalised (3, size, size) tensor, as the original per-level transforms do."""
    resize = T.Resize(resize_size(size), interpolation=BICUBIC)
    norm = T.Normalize(mean, std)
    if kind == "standard":
        return T.Compose([resize, T.CenterCrop(size), T.ToTensor(), norm])
    if kind == "scale":
        return T.Compose([T.Resize(int(size / level), interpolation=BICUBIC), T.CenterCrop(size), T.ToTensor(), norm])
    if kind == "translation":
        rng = np.random.default_rng(int(level))

        def jitter(img: Image.Image) -> torch.Tensor:
            direction = tuple(DIRECTIONS[rng.integers(8)].tolist())
            return norm(_jitter_crop(T.ToTensor()(resize(img)), int(level), direction, size))
        return jitter
    rotate = T.Lambda(lambda img: TF.rotate(img, level, interpolation=BICUBIC))
    steps = [resize, rotate, T.CenterCrop(size)] if kind == "pre-rotation" else [resize, T.CenterCrop(size), rotate]
    return T.Compose([*steps, T.ToTensor(), norm])


def run_original(net: Normalized, paths: list[str], size: int, batch_size: int, device: torch.device) -> dict:
    """One pass per kind over the images; returns wall time and the time spent in the collate (views)."""
    mean, std = net.mean.flatten().tolist(), net.std.flatten().tolist()
    collate_s, start = 0.0, time.perf_counter()
    for kind in KINDS:
        standard = original_transform("standard", 0, size, mean, std)
        variants = {lv: original_transform(kind, lv, size, mean, std) for lv in default_levels(kind)}
        for first in range(0, len(paths), batch_size):
            t0 = time.perf_counter()
            images = [Image.open(p).convert("RGB") for p in paths[first:first + batch_size]]
            std_batch = torch.stack([standard(img) for img in images])
            batches = {lv: torch.stack([t(img) for img in images]) for lv, t in variants.items()}
            collate_s += time.perf_counter() - t0
            labels = torch.full((len(images),), -1, device=device)
            with torch.inference_mode():
                reference = net.model(std_batch.to(device))
                for batch in batches.values():
                    prediction_metrics(reference, net.model(batch.to(device)), labels)
    _sync(device)
    return {"wall_s": time.perf_counter() - start, "views_s": collate_s}


# --- stm-probe -----------------------------------------------------------------------------------
def _plan(size: int) -> SweepPlan:
    return SweepPlan(KINDS, {k: tuple(default_levels(k, size)) for k in KINDS}, size)


def _batches(plan: SweepPlan, source, batch_size: int, device: torch.device):
    short, max_short = plan.base_short_sides()
    loader = make_loader(source, batch_size=1, transform=ShortSideResize(short, max_short))
    return group_images(loader, batch_size, device)


def run_ours(net: Normalized, source, size: int, batch_size: int, device: torch.device) -> dict:
    """The full sweep as `stm-probe invariance` runs it, then a pass that only decodes and makes views."""
    plan = _plan(size)
    start = time.perf_counter()
    run_sweep(net, plan, _batches(plan, source, batch_size, device))
    _sync(device)
    wall = time.perf_counter() - start
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in _batches(plan, source, batch_size, device):
            for _ in iter_views(plan, Views(batch, size)):
                pass
    _sync(device)
    return {"wall_s": wall, "views_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unified_convnext_micro")
    parser.add_argument("--data", default=None, help="images (default: the embedded sample set)")
    parser.add_argument("--num-images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    source = resolve_source(args.data).take(args.num_images)
    net = Normalized(create_model(args.model)).to(device).eval()
    views = sum(len(default_levels(k, args.input_size)) for k in KINDS)
    print(f"device={device} threads={torch.get_num_threads()} model={args.model} images={len(source)} "
          f"batch={args.batch_size} input={args.input_size} kinds={','.join(KINDS)} ({views} views per image)")
    run_ours(net, source.take(min(2, len(source))), args.input_size, args.batch_size, device)  # warm-up
    original = run_original(net, list(source.paths), args.input_size, args.batch_size, device)
    ours = run_ours(net, source, args.input_size, args.batch_size, device)
    print(f"{'pipeline':34s} {'wall s':>8s} {'img/s':>8s} {'views s':>8s} {'view share':>10s}")
    for name, r in (("original (per-image PIL collate)", original), ("stm-probe (batched tensor views)", ours)):
        print(f"{name:34s} {r['wall_s']:8.2f} {len(source) / r['wall_s']:8.3f} {r['views_s']:8.2f} "
              f"{r['views_s'] / r['wall_s']:10.1%}")
    print(f"throughput ratio (stm-probe / original): {original['wall_s'] / ours['wall_s']:.2f}x; "
          f"view making alone: {original['views_s'] / ours['views_s']:.2f}x faster")


if __name__ == "__main__":
    main()
