"""Statistics shared by the analyses: seeded bootstrap confidence intervals over images."""
from __future__ import annotations

from typing import Callable

import numpy as np


def bootstrap_ci(
    values: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``statistic`` (default: mean over axis 0) over the first axis.

    ``values``: per-image values (N, ...) ; ``statistic`` maps a resampled (N, ...) array to a
    scalar. Resampling draws N indices with replacement ``n_boot`` times from a generator seeded
    with ``seed``. Returns (low, high); (nan, nan) for no images, (v, v) for one image or n_boot 0.
    """
    values = np.asarray(values)
    n = values.shape[0]
    if n == 0:
        return float("nan"), float("nan")
    stat = statistic or (lambda v: v.mean(axis=0))
    if n == 1 or n_boot <= 0:
        point = float(stat(values))
        return point, point
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    if statistic is None:
        samples = values[idx].mean(axis=1)
    else:
        samples = np.array([stat(values[i]) for i in idx])
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha])
    return float(low), float(high)
