"""Shape bias (Geirhos et al., ICLR 2019): shape decisions / (shape + texture decisions) over cue-conflict
images, and its Wilson score interval over the decisions. Plain numpy."""
from __future__ import annotations

import numpy as np

from .stats import wilson_interval


def shape_bias(shape_hit: np.ndarray, texture_hit: np.ndarray) -> float:
    """Shape hits / (shape hits + texture hits) of 0/1 arrays (N,); NaN when both are zero."""
    total = float(shape_hit.sum() + texture_hit.sum())
    return float(shape_hit.sum()) / total if total > 0 else float("nan")


def shape_bias_interval(shape_hit: np.ndarray, texture_hit: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of `shape_bias` (fractions) over the D decisions (images decided by their shape
    or by their texture class; each image gives at most one, so the shape decisions are Binomial(D, bias)).

    Never a point while D > 0: 0 shape decisions of 8 give [0, 0.32], where a percentile bootstrap over
    images gives [0, 0]. Its coverage is the Wilson interval's (docs/protocols.md §7, measured exactly in
    tests/test_stats.py). (nan, nan) without a decision.
    """
    decisions = int(round(float(shape_hit.sum() + texture_hit.sum())))
    return wilson_interval(float(shape_hit.sum()), decisions, level)
