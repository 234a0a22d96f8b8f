"""What a probe puts in `stm-probe compare`'s headline table: `HeadlineSpec` (one column: which rows of the
probe's tidy CSV, aggregated how, read which way), declared by each probe's ``compare_columns`` and read by
`stm_probe.compare.headline`, which computes the cells, intervals and pairwise tests."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class HeadlineSpec:
    """One headline column: which rows of an analysis's CSV, aggregated how, and read which way."""

    analysis: str
    key: str  # unique column id
    label: str  # column header
    metric: str
    where: dict[str, Any] = field(default_factory=dict)  # setting column -> value
    average_over: tuple[str, ...] = ()  # setting columns averaged over (empty: exactly one row)
    exclude: dict[str, tuple] = field(default_factory=dict)  # values left out of the average
    better: str | None = "higher"  # "higher", "lower" or None (no better direction)
    unit: str = "%"
    test: str | None = "bootstrap"  # per-image test: "mcnemar" (0/1 outcomes), "bootstrap" or None
    describe: str = ""  # one sentence for the report's legend
    claim: str = "{a} scores higher than {b} on {label}"  # written where a pairwise test holds
    test_note: str = ""  # what the per-image test compares, where it is not the headline number itself
    #: (lowest, highest) value the metric can reach in this run; every model at one of them = saturated
    bounds: tuple[float, float] | None = None


def saturation(values: Sequence[float], spec: HeadlineSpec) -> str:
    """Why a column cannot separate models: "" when it can; otherwise "identical" (every model's value
    the same, to 1e-9 relative) or "at its bound" (every model at the lowest or every model at the highest
    value the metric can reach, ``spec.bounds``). Saturated columns are neither ranked nor tested."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if len(v) < 2:
        return ""
    if spec.bounds is not None:
        low, high = spec.bounds
        if (v <= low + 1e-9 * max(1.0, abs(low))).all() or (v >= high - 1e-9 * max(1.0, abs(high))).all():
            return "at its bound"
    if np.allclose(v, v[0], rtol=1e-9, atol=0.0):
        return "identical"
    return ""


def matches(series: pd.Series, value: Any) -> pd.Series:
    """Rows of ``series`` equal to ``value`` (numbers compared with a tolerance, booleans as text)."""
    if isinstance(value, bool):
        return series.astype(str).str.lower() == str(value).lower()
    if isinstance(value, (int, float, np.integer, np.floating)):
        numbers = pd.to_numeric(series, errors="coerce")
        return pd.Series(np.isclose(numbers.to_numpy(dtype=float), float(value)), index=series.index)
    return series.astype(str) == str(value)


def select(frame: pd.DataFrame, spec: HeadlineSpec) -> pd.DataFrame:
    """The rows of ``frame`` (tidy or per-image) a column is made from, before averaging."""
    keep = frame["metric"] == spec.metric
    for column, value in spec.where.items():
        if column not in frame.columns:
            return frame.iloc[0:0]
        keep &= matches(frame[column], value)
    for column, values in spec.exclude.items():
        for value in values:
            keep &= ~matches(frame[column], value)
    return frame[keep]


def numeric_values(frame: pd.DataFrame, column: str) -> list[float]:
    """The distinct numbers of one column, sorted (text and NaN left out)."""
    return sorted(pd.to_numeric(frame[column], errors="coerce").dropna().unique().tolist())
