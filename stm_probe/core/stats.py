"""Statistics shared by every probe: intervals over images and over repeats.

* Rates (per-image 0/1 outcomes, reported in percent): Wilson score interval. The percentile
  bootstrap collapses to (100, 100) for 4/4 and undercovers near 0 or 100 % (76 % instead of
  95 % at a true rate of 0.97 with 50 images); Wilson covers close to the nominal level.
* Means of continuous per-image values (KL, norms, loss): seeded percentile bootstrap.
* Maxima: no interval (NaN, NaN); a bootstrap of a maximum is not a confidence interval.
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Callable, Literal

import numpy as np

Statistic = Literal["rate", "mean", "max"]


def wilson_interval(successes: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion, as fractions in [0, 1]; (nan, nan) for n = 0."""
    if n <= 0:
        return float("nan"), float("nan")
    z = NormalDist().inv_cdf(0.5 + level / 2)  # the standard library's, so a run need not import scipy (0.7 s)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


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


def summarise_values(values: np.ndarray, statistic: Statistic, n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float, int]:
    """(value, ci_low, ci_high, n) of per-image ``values`` (N,); NaN entries are left out.

    rate: values are 0 or 100 (percent); mean and Wilson interval, in percent.
    mean: mean and seeded percentile-bootstrap interval.
    max: the maximum, no interval.
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    n = int(values.size)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    if statistic == "rate":
        hits = float((values > 0).sum())
        low, high = wilson_interval(hits, n, level)
        return 100.0 * hits / n, 100.0 * low, 100.0 * high, n
    if statistic == "max":
        return float(values.max()), float("nan"), float("nan"), n
    if statistic == "mean":
        low, high = bootstrap_ci(values, n_boot=n_boot, level=level, seed=seed)
        return float(values.mean()), low, high, n
    raise ValueError(f"unknown statistic {statistic!r}")


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of a few repeat values with a Student-t interval; (v, nan, nan) for one."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if values.size < 2:
        return mean, float("nan"), float("nan")
    from scipy.stats import t as _t  # only for repeats: scipy.stats costs ~0.6 s to import

    half = float(_t.ppf(0.5 + level / 2, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size))
    return mean, mean - half, mean + half
