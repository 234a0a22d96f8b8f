"""Effective receptive fields (docs/protocols.md §4, after RepLKNet).

For each stage output (after its norm): the centre vector (H//2, W//2) -> ReLU -> channel sum
gives one scalar per image; its gradient w.r.t. the (normalised) input image -> ReLU -> RGB sum
is that image's contribution map (H, W). One backward of the batch sum gives every image's map at
once, since images do not interact in eval mode. Maps are averaged over images (NaN maps
skipped and counted), log10(map + 1) normalised by the max, and summarised by the
high-contribution area ratio: the smallest centred square holding more than a fraction t of
the total.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..models.features import Normalized, frozen_parameters, stage_outputs


# --- contribution maps -----------------------------------------------------------------------
def contribution_maps(net: Normalized, pixels: torch.Tensor, stages: Sequence[int]) -> dict[int, torch.Tensor]:
    """Per-image contribution maps of the centre pixel of each stage.

    Args:
        net: model wrapper taking pixels in [0, 1] (its ``model`` sees normalised inputs).
        pixels: images (B, 3, H, W) in [0, 1].
        stages: 0-based stage indices.
    Returns: {stage: maps (B, H, W) float32 on the device}; gradients are taken w.r.t. the
    normalised input, as in RepLKNet's and the authors' scripts.
    """
    stages = sorted(set(stages))
    x = net.normalize(pixels).detach().requires_grad_(True)
    feats = stage_outputs(net.model, x, stages)
    maps: dict[int, torch.Tensor] = {}
    for k, (stage, feat) in enumerate(zip(stages, feats)):
        h, w = feat.shape[-2:]
        score = torch.relu(feat[:, :, h // 2, w // 2]).sum()
        (grad,) = torch.autograd.grad(score, x, retain_graph=k < len(stages) - 1)
        maps[stage] = torch.relu(grad).sum(dim=1)
    return maps


def saved_bytes_per_image(net: Normalized, pixels: torch.Tensor, stages: Sequence[int]) -> int:
    """Bytes autograd keeps for one image's forward to the deepest stage (exact, any device)."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    x = net.normalize(pixels[:1]).detach().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        stage_outputs(net.model, x, [max(stages)])
    return total


def available_memory_bytes(device: torch.device) -> int:
    """Free memory for the analysis: CUDA free memory, or MemAvailable of this machine."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def safe_sub_batch(per_image: int, batch_size: int, device: torch.device, fraction: float = 0.5) -> int:
    """Largest sub-batch (<= batch_size) whose saved activations (x3 headroom) fit in ``fraction``
    of the free memory."""
    budget = available_memory_bytes(device) * fraction
    return int(max(1, min(batch_size, budget // max(1, 3 * per_image))))


def flush_denormals() -> bool:
    """Flush subnormal floats to zero on the CPU, on the calling thread (the run's
    `stm_probe.runtime.precision.numeric_flags` restores the caller's mode afterwards).

    Gradients of a centre pixel decay towards the edge of its receptive field (layer scale 1e-6
    on every residual branch, -100 attention masks) into subnormal floats, which x86 CPUs process
    many times slower; flushing changes a contribution map by less than 1.2e-38 per pixel and
    speeds the backward up to 2x. The setting is per thread (with torch 2.14's OpenMP pool, only
    the calling thread's share of a parallel operation is flushed, whether the pool started before
    or after). Returns False where the CPU does not support it.
    """
    return torch.set_flush_denormal(True)


class MapMaker:
    """Contribution maps of batches, split into sub-batches that fit in memory.

    The sub-batch is sized from the first image's saved activations (x3 headroom, half the free
    memory); on a CUDA out-of-memory error it is halved and the work retried.
    """

    def __init__(self, net: Normalized, stages: Sequence[int], device: torch.device, batch_size: int) -> None:
        self.net, self.stages, self.device, self.batch_size = net, list(stages), device, batch_size
        self.sub: int | None = None

    def __call__(self, pixels: torch.Tensor) -> dict[int, np.ndarray]:
        """pixels (B, 3, H, W) in [0, 1] -> {stage: (B, H, W) float32 numpy}; NaN maps are kept."""
        pixels = pixels.to(self.device, non_blocking=True)
        if self.sub is None:
            self.sub = safe_sub_batch(saved_bytes_per_image(self.net, pixels, self.stages), self.batch_size,
                                      self.device)
        parts: dict[int, list[np.ndarray]] = {s: [] for s in self.stages}
        start = 0
        while start < pixels.shape[0]:
            chunk = pixels[start:start + self.sub]
            try:
                with frozen_parameters(self.net):
                    maps = contribution_maps(self.net, chunk, self.stages)
            except torch.OutOfMemoryError:
                if self.sub == 1:
                    raise
                self.sub = max(1, self.sub // 2)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            for stage, m in maps.items():
                parts[stage].append(m.detach().to("cpu", torch.float32).numpy())
            start += chunk.shape[0]
        return {s: np.concatenate(p) for s, p in parts.items()}


# --- normalisation and area ratios -------------------------------------------------------------
def log_normalize(mean_map: np.ndarray) -> np.ndarray:
    """log10(map + 1) divided by its max (a zero map stays zero). Works on (..., H, W)."""
    logged = np.log10(np.asarray(mean_map, dtype=np.float64) + 1.0)
    peak = logged.max(axis=(-2, -1), keepdims=True)
    return np.divide(logged, peak, out=np.zeros_like(logged), where=peak > 0)


def peak_normalize(mean_map: np.ndarray) -> np.ndarray:
    """map / max (no log): the scale-free normalisation (a zero map stays zero). (..., H, W)."""
    mean_map = np.asarray(mean_map, dtype=np.float64)
    peak = mean_map.max(axis=(-2, -1), keepdims=True)
    return np.divide(mean_map, peak, out=np.zeros_like(mean_map), where=peak > 0)


NORMALISATIONS = {"log": log_normalize, "peak": peak_normalize}


def centred_square_fractions(maps: np.ndarray) -> np.ndarray:
    """Fraction of each map's total inside the centred (2i+1)^2 squares, i = 1 .. min(H, W)//2 - 1.

    ``maps`` (..., H, W) -> (..., K). The squares are those of RepLKNet's area function (centre
    (H//2, W//2), i from 1 while i < H//2); computed with an integral image, vectorised.
    """
    maps = np.asarray(maps, dtype=np.float64)
    h, w = maps.shape[-2:]
    cy, cx = h // 2, w // 2
    radii = np.arange(1, min(h, w) // 2)
    integral = np.zeros(maps.shape[:-2] + (h + 1, w + 1))
    integral[..., 1:, 1:] = maps.cumsum(-2).cumsum(-1)
    top, bottom = cy - radii, cy + radii + 1
    left, right = cx - radii, cx + radii + 1
    sums = (integral[..., bottom, right] - integral[..., top, right]
            - integral[..., bottom, left] + integral[..., top, left])
    total = integral[..., -1, -1][..., None]
    return np.divide(sums, total, out=np.zeros_like(sums), where=total > 0)


@dataclass(frozen=True)
class AreaRatio:
    """Smallest centred square holding more than ``threshold`` of a map's total."""

    threshold: float
    side_px: int  # side of the square in pixels (the full image side when never reached)
    side_ratio: float  # side_px / image side (H for the vertical, as RepLKNet: side / H)
    area_ratio: float  # side_px^2 / (H * W); 1.0 when never reached
    reached: bool


def area_ratios(norm_maps: np.ndarray, thresholds: Sequence[float]) -> list[np.ndarray]:
    """Vectorised area ratio of many maps: for each threshold an array (...,) of area ratios
    (1.0 where the threshold is never reached)."""
    fractions = centred_square_fractions(norm_maps)
    h, w = np.shape(norm_maps)[-2:]
    sides = 2 * np.arange(1, fractions.shape[-1] + 1) + 1
    results = []
    for t in thresholds:
        passed = fractions > t
        first = passed.argmax(axis=-1)
        reached = passed.any(axis=-1)
        side = np.where(reached, sides[first] if sides.size else 0, 0)
        results.append(np.where(reached, side * side / (h * w), 1.0))
    return results


def area_ratio(norm_map: np.ndarray, threshold: float) -> AreaRatio:
    """High-contribution area ratio of one normalised map (H, W) at ``threshold``.

    Grows a centred (2i+1)^2 square from i = 1 until its sum exceeds threshold x total. A
    threshold never reached gives the full image (side = H, ratio 1) with ``reached=False``.
    """
    h, w = norm_map.shape
    fractions = centred_square_fractions(norm_map)
    hits = np.nonzero(fractions > threshold)[0]
    if hits.size == 0:
        return AreaRatio(threshold, h, 1.0, 1.0, False)
    side = 2 * int(hits[0] + 1) + 1
    return AreaRatio(threshold, side, side / h, side * side / (h * w), True)


def bootstrap_area_ci(maps: np.ndarray, thresholds: Sequence[float], n_boot: int, seed: int,
                      level: float = 0.95, chunk: int = 64, normalise: str = "log") -> list[tuple[float, float]]:
    """Percentile bootstrap CI of the area ratio over images, one (low, high) per threshold.

    Each replicate resamples the N per-image maps (N, H, W) with replacement, averages them,
    normalises (``log``: log10(x + 1) / max, the paper's; ``peak``: x / max) and measures the
    area ratio. Replicates are computed in chunks as one matrix product of resampling counts
    (chunk, N) @ maps (N, H*W).
    """
    norm_fn = NORMALISATIONS[normalise]
    n = maps.shape[0]
    if n == 0:
        return [(float("nan"), float("nan"))] * len(thresholds)
    if n == 1 or n_boot <= 0:
        point = area_ratios(norm_fn(maps.astype(np.float64).mean(0)), thresholds)
        return [(float(p), float(p)) for p in point]
    h, w = maps.shape[1:]
    flat = maps.reshape(n, h * w).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = [[] for _ in thresholds]
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(size, n))
        counts = np.zeros((size, n))
        np.add.at(counts, (np.arange(size)[:, None], idx), 1.0)
        means = (counts @ flat / n).reshape(size, h, w)
        for k, values in enumerate(area_ratios(norm_fn(means), thresholds)):
            draws[k].append(values)
    alpha = (1 - level) / 2
    return [tuple(float(q) for q in np.quantile(np.concatenate(d), [alpha, 1 - alpha])) for d in draws]
