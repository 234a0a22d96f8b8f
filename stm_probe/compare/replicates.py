"""Replicates: several checkpoints of one architecture (training seeds) compared as one model.

`stm-probe compare --checkpoint NAME=s0.pth,s1.pth,s2.pth ...` runs every analysis once per replicate
(folders ``<analysis>-r0``, ``-r1``, ...; each run's CSV carries a ``replicate`` column). A model's
headline value is the mean over its replicates of the single-replicate values, and its interval and
the pairwise tests come from a hierarchical bootstrap that resamples replicates, then images within
each (Davison & Hinkley 1997, §3.8; the usual two-stage bootstrap of nested data), so they include the
variance between seeds as well as between images (a column without per-image values, such as shape bias,
takes the union of its replicates' intervals). Images are shared by every model, so a pairwise test
resamples the same images for both models and the replicates of each model independently.

Plain numpy: `stm-probe report` uses this module without torch.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import UsageError

FOLDER = "{analysis}-r{replicate}"  # an analysis's run folder for one replicate


def replicate_checkpoints(entries: Sequence[str] | None) -> list[tuple[str, ...]] | None:
    """``--checkpoint`` values -> one checkpoint tuple per replicate, or None when no entry lists several files.

    ``("a=s0.pth,s1.pth", "b=t0.pth,t1.pth")`` -> ``[("a=s0.pth", "b=t0.pth"), ("a=s1.pth", "b=t1.pth")]``.
    Every entry must then be ``NAME=P1,P2,...`` with the same number of files (UsageError otherwise).
    """
    entries = [str(e) for e in (entries or ())]
    lists = [e for e in entries if "=" in e and "," in e.partition("=")[2]]
    if not lists:
        return None
    if len(lists) != len(entries):
        single = next(e for e in entries if e not in lists)
        raise UsageError(f"--checkpoint {single}: with replicates give every model its checkpoints as NAME=P1,P2,... "
                         "(one file per replicate, in the same order for every model)")
    parsed = [(name, [p for p in paths.split(",")]) for name, _, paths in (e.partition("=") for e in entries)]
    if any(not p.strip() for _, paths in parsed for p in paths):
        raise UsageError("--checkpoint NAME=P1,P2,...: an empty file name in the list; drop the stray comma")
    counts = {name: len(paths) for name, paths in parsed}
    if len(set(counts.values())) != 1:
        shown = ", ".join(f"{name}: {n}" for name, n in counts.items())
        raise UsageError(f"--checkpoint: every model needs the same number of replicates ({shown}); give each model "
                         "one checkpoint per training seed")
    count = next(iter(counts.values()))
    return [tuple(f"{name}={paths[r]}" for name, paths in parsed) for r in range(count)]


def _resampled_means(vectors: Sequence[np.ndarray], picks: np.ndarray, images: np.ndarray) -> np.ndarray:
    """(B,) bootstrap statistics: for draw b, the mean over j of vectors[picks[b, j]] at images[b, j] (its mean)."""
    stacked = np.stack([np.asarray(v, dtype=np.float64) for v in vectors])  # (R, N)
    return stacked[picks[:, :, None], images].mean(axis=2).mean(axis=1)


_BLOCK_ELEMENTS = 4_000_000  # image draws held at once (memory), as in pairwise.paired_bootstrap


def _draws(rng: np.random.Generator, n_boot: int, replicates: Sequence[int], n: int):
    """Blocks of (start, stop, [picks per model (b, R_m)], images (b, max R, N)) of a hierarchical bootstrap."""
    depth = max(replicates)
    block = max(1, _BLOCK_ELEMENTS // (depth * n))
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        picks = [rng.integers(0, r, size=(stop - start, r)) for r in replicates]
        yield start, stop, picks, rng.integers(0, n, size=(stop - start, depth, n))


def hierarchical_interval(vectors: Sequence[np.ndarray], n_boot: int, seed: int,
                          level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean over replicates of the per-image mean, by resampling R replicates with
    replacement and then the N images of each drawn replicate with replacement. ``vectors``: one (N,) array of
    per-image values per replicate, aligned by image."""
    r, n = len(vectors), len(vectors[0])
    stats = np.empty(n_boot)
    for start, stop, (picks,), images in _draws(np.random.default_rng(seed), n_boot, [r], n):
        stats[start:stop] = _resampled_means(vectors, picks, images)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(low), float(high)


def hierarchical_difference(a: Sequence[np.ndarray], b: Sequence[np.ndarray], n_boot: int, seed: int,
                            level: float = 0.95) -> tuple[float, float, float, float]:
    """(difference of the means over replicates of A and B, interval low, high, two-sided p) by a hierarchical
    bootstrap: each draw resamples the replicates of A and of B independently and the N shared images once,
    used for both models (the images pair the models). p by test inversion, as `pairwise.paired_bootstrap`."""
    ra, rb, n = len(a), len(b), len(a[0])
    diffs = np.empty(n_boot)
    for start, stop, (pa, pb), images in _draws(np.random.default_rng(seed), n_boot, [ra, rb], n):
        diffs[start:stop] = _resampled_means(a, pa, images[:, :ra]) - _resampled_means(b, pb, images[:, :rb])
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(diffs, [alpha, 1.0 - alpha])
    below = (1 + int((diffs <= 0).sum())) / (n_boot + 1)
    above = (1 + int((diffs >= 0).sum())) / (n_boot + 1)
    observed = float(np.mean([np.mean(v) for v in a]) - np.mean([np.mean(v) for v in b]))
    return observed, float(low), float(high), min(1.0, 2.0 * min(below, above))
