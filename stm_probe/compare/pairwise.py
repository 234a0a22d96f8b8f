"""Paired tests between two models measured on the same images, and Holm's correction.

* `mcnemar`: per-image correctness (0/1) of two models. Only the discordant images count:
  ``b`` = A right and B wrong, ``c`` = A wrong and B right. Under "no difference" each discordant
  image is a fair coin, so ``min(b, c) ~ Binomial(b + c, 1/2)``; the exact two-sided p-value is
  ``min(1, 2 P(X <= min(b, c)))`` and the mid-p value subtracts ``P(X = min(b, c))`` (less
  conservative; Fagerland et al., BMC Med. Res. Methodol. 2013).
* `paired_bootstrap`: continuous per-image values (or a per-image mean over levels). The
  difference ``d_i = a_i - b_i`` is resampled over images; the interval is the percentile
  interval of the resampled mean and the two-sided p-value is the smallest level at which that
  interval excludes 0 (test inversion, with the +1 correction so p is never 0).
* `holm`: Holm's step-down adjustment of a family of p-values (controls the family-wise error
  rate at ``alpha`` under any dependence).

No torch: `stm-probe report` uses this module.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Collection, Sequence

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

#: resampled means computed per block (keeps memory at ~ this many float64 per block)
_BLOCK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test of two models' per-image correctness."""

    n: int  # images compared
    b: int  # A right, B wrong
    c: int  # A wrong, B right
    p_exact: float
    p_mid: float

    @property
    def difference(self) -> float:
        """Accuracy of A minus accuracy of B, in percentage points."""
        return 100.0 * (self.b - self.c) / self.n if self.n else float("nan")


def _binom_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exact (integer sums, one division)."""
    return math.fsum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n if n else 1.0


def mcnemar(a_correct: np.ndarray, b_correct: np.ndarray) -> McNemar:
    """Exact and mid-p McNemar test of two boolean vectors (N,) over the same images."""
    a = np.asarray(a_correct, dtype=bool)
    b_ = np.asarray(b_correct, dtype=bool)
    if a.shape != b_.shape:
        raise ValueError(f"per-image outcomes differ in shape: {a.shape} vs {b_.shape}")
    b, c = int((a & ~b_).sum()), int((~a & b_).sum())
    n, k = b + c, min(b, c)
    if n == 0:
        return McNemar(int(a.size), b, c, 1.0, 1.0)
    cdf = _binom_cdf_half(k, n)
    p_exact = min(1.0, 2.0 * cdf)
    p_mid = min(1.0, 2.0 * cdf - math.comb(n, k) / 2.0 ** n)  # from the uncapped tail: 1 when b == c
    return McNemar(int(a.size), b, c, p_exact, p_mid)


@dataclass(frozen=True)
class PairedBootstrap:
    """Paired bootstrap of the mean per-image difference A - B."""

    n: int
    difference: float  # mean of a_i - b_i, in the metric's units
    ci_low: float
    ci_high: float
    p_value: float
    n_boot: int


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 10_000, seed: int = 0,
                     level: float = 0.95) -> PairedBootstrap:
    """Percentile bootstrap of mean(a - b) over images (N,), seeded; p by test inversion.

    p = min(1, 2 min((1 + #{m* <= 0}) / (B + 1), (1 + #{m* >= 0}) / (B + 1))) over the B resampled
    means m*, so p < 1 - level exactly when the percentile interval leaves out 0 (up to the +1
    correction). All differences zero gives p = 1.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError("paired_bootstrap needs two equal-length, non-empty vectors")
    n = d.size
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    block = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        means[start:stop] = d[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    below = (1 + int((means <= 0).sum())) / (n_boot + 1)
    above = (1 + int((means >= 0).sum())) / (n_boot + 1)
    return PairedBootstrap(n, float(d.mean()), float(low), float(high), min(1.0, 2.0 * min(below, above)), n_boot)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values, in the input order: the i-th smallest p times (m - i + 1), made
    non-decreasing along the sorted order and capped at 1. NaN p-values stay NaN and do not count in m."""
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    if m == 0:
        return adjusted
    order = valid[np.argsort(p[valid], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def min_bootstrap_p(n_boot: int) -> float:
    """The smallest p-value a paired bootstrap of ``n_boot`` replicates can give."""
    return 2.0 / (n_boot + 1)


# --- every pair of models on every headline column ---------------------------------------------
def pairwise_table(runs: Sequence, specs: Sequence, models: Sequence[str], alpha: float = 0.05,
                   n_boot: int = 10_000, seed: int = 0, saturated: Collection[str] = ()) -> pd.DataFrame:
    """One row per (headline column with a per-image test, pair of models): the test, images
    compared, difference A - B with its interval (bootstrap) or the discordant counts (McNemar:
    ``only_a`` images where A's outcome is 1 and B's 0, ``only_b`` the reverse), p,
    Holm-adjusted p over the whole family (every row), and the claim where adjusted p < alpha.

    Only images both models measured are compared (their per-image values are paired by image
    index, repeat 0). Columns without per-image values (or a test), and the ``saturated`` column keys
    (every model the same or at the metric's bound), get no rows: they enter no family.
    """
    import pandas as pd

    from .headline import by_analysis, per_image_vector

    grouped = by_analysis(list(runs))
    rows = []
    for spec in specs:
        if spec.test is None or spec.key in saturated:
            continue
        if len(grouped[spec.analysis]) > 1:
            rows += _replicate_rows(grouped[spec.analysis], spec, models, n_boot, seed)
            continue
        run = grouped[spec.analysis][0]
        vectors = {m: per_image_vector(run, spec, m) for m in models}
        present = [m for m in models if vectors[m] is not None and len(vectors[m])]
        for i, a in enumerate(present):
            for b in present[i + 1:]:
                common = vectors[a].index.intersection(vectors[b].index)
                if not len(common):
                    continue
                va, vb = vectors[a].loc[common].to_numpy(), vectors[b].loc[common].to_numpy()
                row = {"key": spec.key, "label": spec.label, "a": a, "b": b, "n": len(common)}
                if spec.test == "mcnemar":
                    result = mcnemar(va > 0, vb > 0)
                    row.update(test="McNemar exact", difference=result.difference, ci_low=np.nan, ci_high=np.nan,
                               only_a=result.b, only_b=result.c, p=result.p_exact, p_mid=result.p_mid)
                else:
                    from .headline import _seed

                    result = paired_bootstrap(va, vb, n_boot=n_boot, seed=_seed(seed, spec.key, a, b))
                    row.update(test=f"paired bootstrap ({n_boot})", difference=result.difference,
                               ci_low=result.ci_low, ci_high=result.ci_high, only_a=np.nan, only_b=np.nan,
                               p=result.p_value, p_mid=np.nan)
                rows.append(row)
    columns = ["key", "label", "a", "b", "n", "test", "difference", "ci_low", "ci_high", "only_a", "only_b", "p",
               "p_mid", "p_holm", "significant", "claim"]
    table = pd.DataFrame(rows, columns=[c for c in columns if c not in ("p_holm", "significant", "claim")])
    table["p_holm"] = holm(table["p"].to_numpy()) if len(table) else []
    table["significant"] = table["p_holm"] < alpha
    specs_by_key = {s.key: s for s in specs}
    table["claim"] = [_claim(specs_by_key[r.key], r.a, r.b, r.difference) if r.significant else ""
                      for r in table.itertuples()]
    return table


def _replicate_rows(runs: Sequence, spec, models: Sequence[str], n_boot: int, seed: int) -> list[dict]:
    """Rows of one column whose analysis ran once per replicate: a hierarchical bootstrap of the difference
    (replicates of each model resampled independently, the shared images once for both; `replicates`)."""
    from .headline import _seed, replicate_vectors
    from .replicates import hierarchical_difference

    vectors = {m: replicate_vectors(list(runs), spec, m) for m in models}
    images = {m: (per_image_index(list(runs), spec, m)) for m in models if vectors[m] is not None}
    present = [m for m in models if vectors[m] is not None]
    rows = []
    for i, a in enumerate(present):
        for b in present[i + 1:]:
            common = images[a].intersection(images[b])
            if not len(common):
                continue
            pick_a, pick_b = images[a].get_indexer(common), images[b].get_indexer(common)
            va, vb = [v[pick_a] for v in vectors[a]], [v[pick_b] for v in vectors[b]]
            diff, low, high, p = hierarchical_difference(va, vb, n_boot, _seed(seed, spec.key, a, b, "replicates"))
            rows.append({"key": spec.key, "label": spec.label, "a": a, "b": b, "n": len(common),
                         "test": f"hierarchical bootstrap over {len(va)} + {len(vb)} replicates and images ({n_boot})",
                         "difference": diff, "ci_low": low, "ci_high": high, "only_a": np.nan, "only_b": np.nan,
                         "p": p, "p_mid": np.nan})
    return rows


def per_image_index(runs: list, spec, model: str):
    """The images (index) every replicate of ``model`` measured for a column, in `replicate_vectors` order."""
    from .headline import per_image_vector

    common = None
    for run in runs:
        index = per_image_vector(run, spec, model).index
        common = index if common is None else common.intersection(index)
    return common


def _claim(spec, a: str, b: str, difference: float) -> str:
    """The sentence a significant test supports: the better (or larger) model first."""
    first_is_a = difference > 0 if spec.better != "lower" else difference < 0
    winner, loser = (a, b) if first_is_a else (b, a)
    return spec.claim.format(a=winner, b=loser, label=spec.label)


def tied_with_best(specs: Sequence, table: pd.DataFrame, pairs: pd.DataFrame) -> dict[str, set[str]]:
    """{column key: models that no significant pairwise test separates from that column's best}.

    The best are the models ranked 1 in ``table`` (`headline_table`); another model is separated from
    them only where a test of the pair holds (``pairs.significant``); in a column without tests every
    model is tied with the best. Saturated (unranked) columns get no entry."""
    tied: dict[str, set[str]] = {}
    for spec in specs:
        column = table[table["key"] == spec.key]
        best = set(column.loc[column["rank"] == 1, "model"])
        if not best:
            continue
        held = pairs[(pairs["key"] == spec.key) & pairs["significant"]] if len(pairs) else pairs
        separated = {r.b if r.a in best else r.a for r in held.itertuples() if (r.a in best) != (r.b in best)}
        tied[spec.key] = {m for m in column["model"] if m not in best and m not in separated}
    return tied
