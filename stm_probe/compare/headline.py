"""Which number of each analysis goes in the headline table, how it is aggregated, and which way is better.

Each analysis contributes columns (`HeadlineSpec`), chosen from what its CSV holds by its probe's
``compare_columns`` (declared in the probe's file):

=============  ===========================================================================  ==========
analysis       column                                                                       better
=============  ===========================================================================  ==========
eval           top-1 accuracy (%)                                                           higher
erf            area ratio at t = 0.99 (else the largest threshold), last stage              none
invariance     consistency (%) averaged over the levels of translation (> 0 px),            higher
               rotation (pre-rotation, > 0 deg; else post-rotation) and scale (all ratios)
adversarial    robust accuracy (%) per attack and eps when labelled, else flip rate (%)     higher /
                                                                                            lower
bias           patch-shuffle consistency (%) over grids g > 1; Fourier error (else flip)    none /
               rate (%) averaged over the heat map; shape bias (cue-conflict)               lower
corruption     mCE                                                                          lower
=============  ===========================================================================  ==========

"none": the metric describes the model, it is not better or worse (a larger ERF, a stronger
shape bias); such columns are ranked largest-first and drawn larger-is-brighter.

A single-row column takes the CSV's value and interval as they are. A column averaged over levels
takes the mean of the CSV's values over those levels, and its interval from a seeded bootstrap
over images of each image's mean over the levels (per_image.csv); without per-image values it
has no interval.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..errors import UsageError
from ..probes.columns import HeadlineSpec, saturation, select
from .folders import AnalysisRun


# --- the columns of each analysis: declared by the probes -------------------------------------
def by_analysis(runs: list[AnalysisRun]) -> dict[str, list[AnalysisRun]]:
    """{analysis name: its runs}, one run per analysis, or one per replicate (`compare.replicates`)."""
    grouped: dict[str, list[AnalysisRun]] = {}
    for run in runs:
        grouped.setdefault(run.name, []).append(run)
    return grouped


def headline_specs(runs: list[AnalysisRun]) -> list[HeadlineSpec]:
    """Every headline column of these runs, in analysis order (replicates' rows taken together)."""
    specs = []
    for name, group in by_analysis(runs).items():
        builder = _declared_columns(group[0].probe)
        if builder is not None:
            frame = group[0].frame if len(group) == 1 else pd.concat([r.frame for r in group], ignore_index=True)
            specs += builder(name, frame)
    return specs


def _declared_columns(probe: str) -> Callable[[str, pd.DataFrame], list[HeadlineSpec]] | None:
    """The ``compare_columns`` a registered probe declares (None for a probe without, or unknown)."""
    from ..probes import PROBES, get_probe

    return get_probe(probe).compare_columns if probe in PROBES else None


# --- cells -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    value: float
    ci_low: float
    ci_high: float
    n_images: int


def _seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


def per_image_vector(run: AnalysisRun, spec: HeadlineSpec, model: str) -> pd.Series | None:
    """The model's per-image values of a column (repeat 0), indexed by image (each image's mean over
    the averaged levels); None when per_image.csv holds none. Images missing a level are left out."""
    frame = run.per_image
    if frame is None:
        return None
    rows = select(frame[(frame["model"] == model) & (pd.to_numeric(frame["repeat"]) == 0)], spec)
    if not len(rows):
        return None
    if not spec.average_over:
        if rows["image"].duplicated().any():
            raise UsageError(f"{run.path / 'per_image.csv'}: {model} has several {spec.metric} values per image for "
                             f"'{spec.label}': the file is damaged or mixes runs; rerun the {run.name} analysis")
        return rows.set_index("image")["value"].dropna().sort_index()
    table = rows.pivot_table(index="image", columns=list(spec.average_over), values="value", aggfunc="first",
                             dropna=False)
    return table.dropna().mean(axis=1).sort_index()


def cell(run: AnalysisRun, spec: HeadlineSpec, model: str, n_boot: int = 1000) -> Cell | None:
    """The headline number of one model: the CSV's row, or the mean of its rows over levels with a
    bootstrap interval over images (see module docstring). None when the CSV holds no such row."""
    rows = select(run.frame[run.frame["model"] == model], spec)
    if not len(rows):
        return None
    if not spec.average_over:
        if len(rows) > 1:
            raise UsageError(f"{run.path}: {len(rows)} rows for {model} '{spec.label}' where one was expected: the "
                             f"CSV mixes runs; rerun the {run.name} analysis")
        row = rows.iloc[0]
        return Cell(float(row["value"]), float(row["ci_low"]), float(row["ci_high"]), int(row["n_images"]))
    value = float(rows["value"].mean())
    n = int(rows["n_images"].min())
    per_image = per_image_vector(run, spec, model)
    low = high = float("nan")
    if per_image is not None and len(per_image) == n and np.isclose(per_image.mean(), value, atol=1e-9, rtol=1e-9):
        from ..core.stats import bootstrap_ci

        low, high = bootstrap_ci(per_image.to_numpy(), n_boot=n_boot, seed=_seed(spec.key, model))
    return Cell(value, low, high, n)


def replicate_cell(runs: list[AnalysisRun], spec: HeadlineSpec, model: str, n_boot: int = 1000) -> Cell | None:
    """The headline number of one model over its replicates: the mean of the single-replicate values, with
    a hierarchical bootstrap interval (replicates, then images: `compare.replicates`) where every replicate
    has per-image values whose mean is its value, else the union of the replicates' own intervals (from the
    lowest low to the highest high: conservative, within the metric's range, e.g. shape bias). None when a
    replicate lacks the row."""
    from .replicates import hierarchical_interval

    cells = [cell(run, spec, model, n_boot) for run in runs]
    if any(c is None for c in cells):
        return None
    values = np.array([c.value for c in cells])
    vectors = replicate_vectors(runs, spec, model)
    n = min(c.n_images for c in cells)
    if vectors is not None and all(np.isclose(v.mean(), c.value, rtol=1e-9, atol=1e-9) for v, c in zip(vectors, cells)):
        low, high = hierarchical_interval(vectors, n_boot, _seed(spec.key, model, "replicates"))
    else:
        low, high = min(c.ci_low for c in cells), max(c.ci_high for c in cells)
    return Cell(float(values.mean()), float(low), float(high), n)


def replicate_vectors(runs: list[AnalysisRun], spec: HeadlineSpec, model: str) -> list[np.ndarray] | None:
    """One per-image vector per replicate, on the images every replicate measured (same order); None when a
    replicate has no per-image values for the column or they share no image."""
    series = [per_image_vector(run, spec, model) for run in runs]
    if any(s is None or not len(s) for s in series):
        return None
    common = series[0].index
    for s in series[1:]:
        common = common.intersection(s.index)
    if not len(common):
        return None
    return [s.loc[common].to_numpy(dtype=np.float64) for s in series]


def headline_table(runs: list[AnalysisRun], models: list[str], n_boot: int = 1000) -> tuple[list[HeadlineSpec],
                                                                                              pd.DataFrame]:
    """(columns, long table with column key, model, value, ci_low, ci_high, n_images, rank, saturated).

    ``saturated`` holds why a column cannot separate the models ("identical", "at its bound"; see
    `stm_probe.probes.columns.saturation`), "" otherwise; a saturated column gets no ranks."""
    grouped = by_analysis(runs)
    specs = headline_specs(runs)
    records = []
    for spec in specs:
        for model in models:
            group = grouped[spec.analysis]
            found = cell(group[0], spec, model, n_boot) if len(group) == 1 else \
                replicate_cell(group, spec, model, n_boot)
            if found is not None:
                records.append({"key": spec.key, "model": model, **found.__dict__})
    table = pd.DataFrame(records, columns=["key", "model", "value", "ci_low", "ci_high", "n_images"])
    table["rank"] = np.nan
    table["saturated"] = ""
    for spec in specs:
        sel = table["key"] == spec.key
        why = saturation(table.loc[sel, "value"].astype(float).tolist(), spec)
        table.loc[sel, "saturated"] = why
        if not why:
            table.loc[sel, "rank"] = table.loc[sel, "value"].rank(ascending=spec.better == "lower", method="min")
    specs = [s for s in specs if (table["key"] == s.key).any()]
    return specs, table
