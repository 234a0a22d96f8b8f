"""Shape bias (Geirhos et al., ICLR 2019): shape hits / (shape hits + texture hits) over cue-conflict
images, and its percentile bootstrap interval over images. Plain numpy."""
from __future__ import annotations

import numpy as np


def shape_bias(shape_hit: np.ndarray, texture_hit: np.ndarray) -> float:
    """Shape hits / (shape hits + texture hits) of 0/1 arrays (N,); NaN when both are zero."""
    total = float(shape_hit.sum() + texture_hit.sum())
    return float(shape_hit.sum()) / total if total > 0 else float("nan")


def shape_bias_interval(shape_hit: np.ndarray, texture_hit: np.ndarray, n_boot: int, seed: int,
                        level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of `shape_bias` over images: ``n_boot`` resamples of the N images
    with replacement (numpy Generator seeded with ``seed``), the ratio recomputed on each; resamples
    with no hit at all are dropped. (nan, nan) when the ratio is undefined."""
    point = shape_bias(shape_hit, texture_hit)
    n = shape_hit.size
    if np.isnan(point) or n == 1 or n_boot <= 0:
        return point, point
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    shape_sum, texture_sum = shape_hit[idx].sum(1), texture_hit[idx].sum(1)
    total = shape_sum + texture_sum
    ratios = shape_sum[total > 0] / total[total > 0]
    if ratios.size == 0:  # no resample holds a shape or texture hit: no interval
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(ratios, [alpha, 1.0 - alpha])
    return float(low), float(high)
