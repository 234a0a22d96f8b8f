"""Which number of each analysis goes in the headline table, how it is aggregated, and which way is better.

Each analysis contributes columns (`HeadlineSpec`), chosen from what its CSV holds:

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
from ..probes.columns import HeadlineSpec, matches, numeric_values, select  # noqa: F401 (compare's names)
from .folders import AnalysisRun


# --- the columns of each analysis ---------------------------------------------------------------
def _erf(name: str, frame: pd.DataFrame) -> list[HeadlineSpec]:
    rows = frame[(frame["metric"] == "area_ratio") & matches(frame["init_copy"], False)]
    if not len(rows):
        return []
    thresholds = numeric_values(rows, "threshold")
    t = next((v for v in thresholds if np.isclose(v, 0.99)), thresholds[-1])
    stage = int(max(numeric_values(rows, "stage")))
    return [HeadlineSpec(name, f"{name}:area", f"ERF area ratio (t={t:g}, stage {stage})", "area_ratio",
                         {"init_copy": False, "stage": stage, "threshold": t}, better=None, unit="fraction",
                         describe=f"share of the input (0-1) covered by the smallest centred square holding {t:g} of "
                                  f"the log-normalised mean contribution map of stage {stage}'s centre pixel; larger "
                                  "= wider effective receptive field (not better or worse)",
                         claim="{a}'s per-image ERF area ratios are larger than {b}'s (per-image maps, not the mean "
                               "map of the headline)",
                         test_note="the ERF test pairs each image's own area ratio (its map normalised alone), while "
                                   "the headline value is the area ratio of the mean map over images")]


_INVARIANCE = (("translation", ("translation",), (0.0,), "translation", "jitters > 0 px"),
               ("rotation", ("pre-rotation", "post-rotation"), (0.0,), "rotation", "angles > 0 degrees"),
               ("scale", ("scale",), (), "scale", "every crop ratio"))


def _invariance(name: str, frame: pd.DataFrame) -> list[HeadlineSpec]:
    specs = []
    for short, kinds, identity, what, levels in _INVARIANCE:
        kind = next((k for k in kinds if ((frame["kind"] == k) & (frame["metric"] == "consistency")).any()), None)
        if kind is None:
            continue
        specs.append(HeadlineSpec(
            name, f"{name}:{short}", f"{short} consistency (%)", "consistency", {"kind": kind}, ("level",),
            {"level": identity}, describe=f"share of images whose top-1 prediction under {kind} equals the standard "
                                          f"view's, averaged over {levels}; higher = more invariant",
            claim=f"{{a}} is more invariant to {what} than {{b}}"))
    return specs


def _adversarial(name: str, frame: pd.DataFrame) -> list[HeadlineSpec]:
    specs = []
    settings = frame[["attack", "norm", "eps"]].drop_duplicates()
    for attack, norm, eps in settings.itertuples(index=False):
        where = {"attack": attack, "norm": norm, "eps": float(eps)}
        eps_text = f"{eps:g}/255" if norm == "Linf" else f"{eps:g}"
        rows = frame[matches(frame["attack"], attack) & matches(frame["norm"], norm) & matches(frame["eps"], eps)]
        if (rows["metric"] == "robust_acc").any():
            specs.append(HeadlineSpec(
                name, f"{name}:{attack}:{norm}:{eps:g}", f"{attack} robust acc. @{eps_text} (%)", "robust_acc", where,
                test="mcnemar", describe=f"share of images classified correctly both clean and under {attack} "
                                         f"({norm}, eps {eps_text}); higher = more robust",
                claim=f"{{a}} is more robust than {{b}} to {attack} at eps {eps_text}"))
        elif (rows["metric"] == "flip_rate").any():
            specs.append(HeadlineSpec(
                name, f"{name}:{attack}:{norm}:{eps:g}", f"{attack} flip rate @{eps_text} (%)", "flip_rate", where,
                better="lower", test="mcnemar",
                describe=f"share of images whose top-1 prediction {attack} ({norm}, eps {eps_text}) changes "
                         "(no labels: robustness of the prediction); lower = more robust",
                claim=f"{{a}} is more robust than {{b}} to {attack} at eps {eps_text}"))
    return specs


def _bias(name: str, frame: pd.DataFrame) -> list[HeadlineSpec]:
    specs = []
    methods = set(frame["probe"].astype(str))
    if "cue-conflict" in methods:
        specs.append(HeadlineSpec(
            name, f"{name}:shape-bias", "shape bias", "shape_bias", {"probe": "cue-conflict", "variant": "all"},
            better=None, unit="fraction", test=None,
            describe="cue-conflict images decided by shape / (by shape + by texture), 0-1 (Geirhos et al. 2019); "
                     "higher = more shape-biased (humans: about 0.96)",
            claim="{a} is more shape-biased than {b}"))
    if "patch-shuffle" in methods:
        specs.append(HeadlineSpec(
            name, f"{name}:patch-shuffle", "patch-shuffle consistency (%)", "consistency", {"probe": "patch-shuffle"},
            ("level",), {"level": (1.0,)}, better=None,
            describe="share of images whose top-1 prediction survives shuffling g x g patches, averaged over grids "
                     "g > 1 (Naseer et al. 2021); higher = less reliant on global spatial structure (not better or "
                     "worse)", claim="{a} keeps its prediction under patch shuffling more often than {b}"))
    if "fourier" in methods:
        rows = frame[frame["probe"] == "fourier"]
        metric = "error" if (rows["metric"] == "error").any() else "flip"
        specs.append(HeadlineSpec(
            name, f"{name}:fourier", f"Fourier {'error' if metric == 'error' else 'flip'} rate (%)", metric,
            {"probe": "fourier"}, ("level", "level2"), better="lower", test=None,
            describe=f"{'error' if metric == 'error' else 'prediction flip'} rate under single Fourier-basis "
                     "perturbations, averaged over the heat map's frequencies (Yin et al. 2019); lower = more robust",
            claim="{a} is more robust to Fourier-basis noise than {b}"))
    return specs


def _eval(name: str, frame: pd.DataFrame) -> list[HeadlineSpec]:
    if not (frame["metric"] == "top1").any():
        return []
    return [HeadlineSpec(name, f"{name}:top1", "top-1 accuracy (%)", "top1", test="mcnemar",
                         describe="share of images whose top-1 prediction is the label", 
                         claim="{a} is more accurate than {b} (top-1)")]


def _corruption(name: str, frame: pd.DataFrame) -> list[HeadlineSpec]:
    if not (frame["metric"] == "mce").any():
        if not (frame["metric"] == "mean_flip_rate").any():
            return []
        # the mean of the (corruption, severity) flip rates, i.e. the probe's mean_flip_rate, made from the
        # per-unit rows so that per_image.csv pairs each image's mean flip between models
        return [HeadlineSpec(name, f"{name}:flip", "corruption flip rate (%)", "flip_rate",
                             average_over=("corruption", "severity"), better="lower",
                             describe="share of images whose top-1 prediction a corruption changes, averaged "
                                                 "over the corruptions and severities run (no mCE: it needs labels and "
                                                 "all 15 corruptions at 5 severities); lower = more robust",
                             claim="{a} is more robust to corruptions than {b}")]
    return [HeadlineSpec(name, f"{name}:mce", "mCE", "mce", better="lower", unit="", test=None,
                         describe="mean corruption error: each corruption's error summed over severities, divided "
                                  "by the reference model's, averaged over corruptions (Hendrycks and Dietterich "
                                  "2019); lower = more robust", claim="{a} is more robust to corruptions than {b}")]


#: probe name -> function (analysis name, tidy frame) -> its headline columns
SPECS: dict[str, Callable[[str, pd.DataFrame], list[HeadlineSpec]]] = {
    "eval": _eval, "erf": _erf, "invariance": _invariance, "adversarial": _adversarial, "bias": _bias,
    "corruption": _corruption,
}


def headline_specs(runs: list[AnalysisRun]) -> list[HeadlineSpec]:
    """Every headline column of these runs, in analysis order."""
    specs = []
    for run in runs:
        builder = SPECS.get(run.probe) or _declared_columns(run.probe)
        if builder is not None:
            specs += builder(run.name, run.frame)
    return specs


def _declared_columns(probe: str) -> Callable[[str, pd.DataFrame], list[HeadlineSpec]] | None:
    """The ``compare_columns`` a registered probe declares (None for a probe without, or unknown)."""
    from ..probes import PROBES, get_probe

    return getattr(get_probe(probe), "compare_columns", None) if probe in PROBES else None


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


def headline_table(runs: list[AnalysisRun], models: list[str], n_boot: int = 1000) -> tuple[list[HeadlineSpec],
                                                                                              pd.DataFrame]:
    """(columns, long table with column key, model, value, ci_low, ci_high, n_images, rank)."""
    by_name = {run.name: run for run in runs}
    specs = headline_specs(runs)
    records = []
    for spec in specs:
        for model in models:
            found = cell(by_name[spec.analysis], spec, model, n_boot)
            if found is not None:
                records.append({"key": spec.key, "model": model, **found.__dict__})
    table = pd.DataFrame(records, columns=["key", "model", "value", "ci_low", "ci_high", "n_images"])
    table["rank"] = np.nan
    for spec in specs:
        sel = table["key"] == spec.key
        table.loc[sel, "rank"] = table.loc[sel, "value"].rank(ascending=spec.better == "lower", method="min")
    specs = [s for s in specs if (table["key"] == s.key).any()]
    return specs, table
