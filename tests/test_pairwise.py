"""Paired tests of stm_probe.compare.pairwise against hand-computed answers and second implementations."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from stm_probe.compare.folders import AnalysisRun
from stm_probe.compare.headline import HeadlineSpec, headline_table
from stm_probe.compare.pairwise import holm, mcnemar, paired_bootstrap, pairwise_table
from stm_probe.core.stats import bootstrap_ci


def _outcomes(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([1] * both + [1] * only_a + [0] * only_b + [0] * neither, dtype=bool)
    b = np.array([1] * both + [0] * only_a + [1] * only_b + [0] * neither, dtype=bool)
    return a, b


def test_mcnemar_exact_and_mid_p_by_hand() -> None:
    # 7 images only A gets right, 1 only B: under H0 min(b, c) = 1 ~ Binomial(8, 1/2)
    a, b = _outcomes(both=5, only_a=7, only_b=1, neither=3)
    result = mcnemar(a, b)
    assert (result.n, result.b, result.c) == (16, 7, 1)
    assert result.p_exact == pytest.approx(2 * (1 + 8) / 256)  # 2 P(X <= 1) = 18/256
    assert result.p_mid == pytest.approx(2 * (1 + 8) / 256 - 8 / 256)  # minus P(X = 1)
    assert result.difference == pytest.approx(100 * 6 / 16)  # accuracy A - B in points


def test_mcnemar_agrees_with_scipy_binomtest_and_edge_cases() -> None:
    from scipy.stats import binomtest

    for only_a, only_b in [(0, 5), (3, 9), (10, 10), (12, 2), (30, 17)]:
        a, b = _outcomes(4, only_a, only_b, 4)
        expected = binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue
        assert mcnemar(a, b).p_exact == pytest.approx(expected, rel=1e-12)
    tied = mcnemar(*_outcomes(4, 5, 5, 4))  # b == c: mid-p = 2 P(X <= 5) - P(X = 5) = 1 exactly (X ~ Bin(10, 1/2))
    assert (tied.p_exact, tied.p_mid) == (pytest.approx(1.0), pytest.approx(1.0))
    same = mcnemar(*_outcomes(6, 0, 0, 2))  # no discordant image: no evidence at all
    assert (same.p_exact, same.p_mid) == (1.0, 1.0)
    assert mcnemar(*_outcomes(0, 20, 0, 0)).p_exact == pytest.approx(2 / 2 ** 20)


def test_paired_bootstrap_constant_and_symmetric_differences() -> None:
    b = np.linspace(0, 1, 50)
    shifted = paired_bootstrap(b + 0.25, b, n_boot=999, seed=3)
    assert (shifted.difference, shifted.ci_low, shifted.ci_high) == pytest.approx((0.25, 0.25, 0.25))
    assert shifted.p_value == pytest.approx(2 / 1000)  # every resample > 0: the smallest p 999 replicates give
    d = np.tile([-1.0, 1.0], 40)  # mean exactly 0, symmetric
    null = paired_bootstrap(d, np.zeros_like(d), n_boot=2000, seed=0)
    assert null.difference == 0 and null.ci_low < 0 < null.ci_high and null.p_value > 0.8
    zero = paired_bootstrap(b, b, n_boot=500)
    assert zero.p_value == 1.0


def test_paired_bootstrap_interval_matches_second_implementations() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.3, 1.0, 400), rng.normal(0.0, 1.0, 400)
    result = paired_bootstrap(a, b, n_boot=2000, seed=7)
    low, high = bootstrap_ci(a - b, n_boot=2000, seed=7)  # the same resampling, written separately
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high))
    d = a - b
    half = 1.96 * d.std(ddof=1) / math.sqrt(d.size)  # normal approximation of the mean's interval
    assert result.ci_low == pytest.approx(d.mean() - half, abs=0.03)
    assert result.ci_high == pytest.approx(d.mean() + half, abs=0.03)
    assert (result.p_value < 0.05) == (result.ci_low > 0 or result.ci_high < 0)


def _holm_reference(p: list[float]) -> list[float]:
    """Holm written as the step-down test: the smallest alpha at which each hypothesis is rejected."""
    try:
        from statsmodels.stats.multitest import multipletests

        return list(multipletests(p, method="holm")[1])
    except ImportError:
        m = len(p)
        order = sorted(range(m), key=lambda i: p[i])
        out = [0.0] * m
        for pos, i in enumerate(order):
            out[i] = min(1.0, max((m - k) * p[order[k]] for k in range(pos + 1)))
        return out


def test_holm_by_hand_and_against_reference() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    rng = np.random.default_rng(0)
    for _ in range(20):
        values = list(rng.uniform(0, 0.2, size=int(rng.integers(1, 12))))
        assert holm(values) == pytest.approx(_holm_reference(values))
    with_nan = holm([0.01, float("nan"), 0.02])
    assert np.isnan(with_nan[1]) and with_nan[[0, 2]] == pytest.approx([0.02, 0.02])


def _run(metric: str, outcomes: dict[str, np.ndarray]) -> AnalysisRun:
    """An in-memory adversarial run: per-image 0/100 outcomes of each model at one setting."""
    where = {"attack": "pgd", "norm": "Linf", "eps": 4.0}
    tidy, per_image = [], []
    for model, values in outcomes.items():
        tidy.append({"model": model, "weights": "checkpoint", **where, "metric": metric, "value": values.mean(),
                     "ci_low": 0.0, "ci_high": 100.0, "n_images": values.size})
        per_image.append(pd.DataFrame({"image": np.arange(values.size), "model": model, "weights": "checkpoint",
                                       **where, "repeat": 0, "metric": metric, "value": values}))
    return AnalysisRun("adversarial", "adversarial", None, pd.DataFrame(tidy), {}, {},
                       pd.concat(per_image, ignore_index=True), True)


@pytest.mark.parametrize("metric, winner, loser", [("robust_acc", "a", "b"), ("flip_rate", "b", "a")])
def test_pairwise_table_claims_only_what_holds(metric: str, winner: str, loser: str) -> None:
    """A differs from B on 20 of 24 images (p = 2^-19), C equals A: A-B and B-C hold, A-C does not; the
    claim names the more robust model (higher robust accuracy, lower flip rate)."""
    a = np.array([100.0] * 22 + [0.0] * 2)
    b = np.array([0.0] * 20 + [100.0] * 2 + [0.0] * 2)
    run = _run(metric, {"a": a, "b": b, "c": a.copy()})
    specs, table = headline_table([run], ["a", "b", "c"])
    assert [s.metric for s in specs] == [metric]
    assert table.set_index("model")["value"].to_dict() == pytest.approx({"a": a.mean(), "b": b.mean(), "c": a.mean()})
    pairs = pairwise_table([run], specs, ["a", "b", "c"]).set_index(["a", "b"])
    assert pairs.loc[("a", "b"), "p"] == pytest.approx(2 / 2 ** 20)
    assert pairs.loc[("a", "b"), "p_holm"] == pytest.approx(3 * 2 / 2 ** 20)  # smallest of 3 tests
    assert pairs.loc[("a", "c"), "p_holm"] == 1.0 and not pairs.loc[("a", "c"), "significant"]
    assert pairs.loc[("a", "b"), "claim"].startswith(f"{winner} is more robust than {loser} to pgd")
    assert pairs.loc[("b", "c"), "claim"].startswith(f"{'c' if winner == 'a' else 'b'} is more robust than")
    assert pairs.loc[("a", "c"), "claim"] == ""


def test_no_test_without_per_image_values() -> None:
    spec = HeadlineSpec("adversarial", "k", "x", "robust_acc", test=None)
    run = _run("robust_acc", {"a": np.array([100.0, 0.0]), "b": np.array([0.0, 0.0])})
    assert pairwise_table([run], [spec], ["a", "b"]).empty
