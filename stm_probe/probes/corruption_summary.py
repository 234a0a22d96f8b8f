"""The corruption probe's overall numbers of one model (`overall_summaries`): mean flip rate, mean error,
CE and relative CE per corruption, mCE and relative mCE, from the summary unit's per-image values, each
with a percentile bootstrap over images that resamples the same images in every unit
(`bootstrap_means`)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..core.corruption_metrics import (
    SEVERITIES,
    benchmark_corruptions,
    corruption_error,
    mean_corruption_error,
    relative_corruption_error,
)
from .base import Extra, Key

CLEAN = "clean"
OVERALL = "all"
#: the summary unit's per-image data (artefacts, not metrics): error and flip (N,) percent of every unit
ERROR, FLIP = Extra("error"), Extra("flip")
PRED = Extra("pred")  # the clean unit's top-1 class per image (kept for resumed runs' flip rates)
#: images per bootstrap chunk x replicates held at once (the weights matrix)
_BOOT_CHUNK = 4_000_000


def overall_summaries(values: dict[Key, np.ndarray], n_boot: int, boot_seed: int, ce_names: tuple[str, ...],
                      mce_ok: bool, relative_ok: bool) -> dict[Key, tuple]:
    """Overall rows of one model from the summary unit's per-image values (``(corruption, severity,
    ERROR | FLIP)``: (N,) percent), each with a percentile bootstrap of ``n_boot`` replicates
    seeded with ``boot_seed`` that resamples the same images in every unit: CE for ``ce_names``, mCE
    when ``mce_ok``, relative CE and mCE when ``relative_ok`` and the clean error is there."""
    variants = [(k[0], k[1]) for k in values if k[-1] == FLIP and k[0] != CLEAN]
    flips = np.stack([values[(c, s, FLIP)] for c, s in variants], axis=1)
    errors = np.stack([values[(c, s, ERROR)] for c, s in variants], axis=1)
    out: dict[Key, tuple] = {}
    kept = np.isfinite(flips).all(axis=1)
    if kept.any():
        stat = {(OVERALL, None, "mean_flip_rate"): lambda m: float(m.mean())}
        out.update(bootstrap_means(flips[kept], stat, n_boot, boot_seed))
    labelled = np.isfinite(errors).all(axis=1)
    if not labelled.any():
        return out
    clean = values.get((CLEAN, 0, ERROR))
    columns = {v: i for i, v in enumerate(variants)}
    matrix = errors[labelled] / 100.0
    if clean is not None and relative_ok:
        matrix = np.concatenate([matrix, clean[labelled, None] / 100.0], axis=1)
    stats = {(OVERALL, None, "mean_error"): lambda m: 100.0 * float(m[:len(variants)].mean())}
    for name in ce_names:
        cols = [columns[(name, s)] for s in SEVERITIES]
        stats[(name, None, "ce")] = lambda m, cols=cols, name=name: corruption_error(m[cols], name)
        if matrix.shape[1] > len(variants):
            stats[(name, None, "relative_ce")] = (lambda m, cols=cols, name=name:
                                                  relative_corruption_error(m[cols], m[-1], name))
    if mce_ok:
        stats[(OVERALL, None, "mce")] = lambda m: mean_corruption_error(
            {c: stats[(c, None, "ce")](m) for c in benchmark_corruptions()})
        if matrix.shape[1] > len(variants):
            stats[(OVERALL, None, "relative_mce")] = lambda m: mean_corruption_error(
                {c: stats[(c, None, "relative_ce")](m) for c in benchmark_corruptions()})
    out.update(bootstrap_means(matrix, stats, n_boot, boot_seed))
    return out


def bootstrap_means(matrix: np.ndarray, stats: dict[Key, Any], n_boot: int, seed: int) -> dict[Key, tuple]:
    """{key: (value, ci_low, ci_high, n, 0)}: each statistic of the column means of ``matrix`` (N, K) and
    its 95% percentile interval over ``n_boot`` resamplings of the N rows (the same rows for every
    statistic, drawn as multinomial counts from a generator seeded with ``seed``)."""
    n = matrix.shape[0]
    means = matrix.mean(axis=0)
    points = {k: f(means) for k, f in stats.items()}
    if n < 2 or n_boot <= 0:
        return {k: (v, v, v, n, 0) for k, v in points.items()}
    rng = np.random.default_rng(seed)
    samples: dict[Key, list[float]] = {k: [] for k in stats}
    chunk = max(1, _BOOT_CHUNK // n)
    for start in range(0, n_boot, chunk):
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=min(chunk, n_boot - start))
        for row in counts @ matrix / n:
            for k, f in stats.items():
                samples[k].append(f(row))
    out = {}
    for k, v in points.items():
        low, high = np.quantile(np.asarray(samples[k]), [0.025, 0.975])
        out[k] = (v, float(low), float(high), n, 0)
    return out
