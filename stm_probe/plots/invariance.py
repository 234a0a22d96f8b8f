"""Invariance figures: per kind, one panel per metric, one line per model with its 95% CI band
(``invariance_<kind>``), and ``invariance_summary``: each model's value at the largest level of
every kind as a dot with its interval. Drawn only from ``invariance.csv``."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from ..core.invariance.kinds import KINDS, PREDICTION_METRICS
from ..errors import UsageError
from .figures import lines_with_ci, model_palette, row_label, save_figure, weights_in_labels
from . import open_runs
from .style import FigureStyle, annotate, log2_axis, mark_standard_view, model_look

AXIS_LABELS = {"translation": "jitter (px)", "pre-rotation": "rotation before the crop (degrees)",
               "post-rotation": "rotation after the crop (degrees)", "scale": "crop ratio",
               "circular-shift": "largest circular shift (px)", "equivariance": "circular shift of the input (px)",
               "shift-consistency": "largest crop offset (px)"}
TITLES = {"translation": "translation", "pre-rotation": "rotation of the resized image",
          "post-rotation": "rotation of the centre crop", "scale": "scale (short side = input size / crop ratio)",
          "circular-shift": "consistency under circular shifts", "equivariance": "shift equivariance of each stage",
          "shift-consistency": "consistency of two shifted crops (Zhang 2019)"}
METRIC_LABELS = {"top1": "top-1 accuracy (%)", "top5": "top-5 accuracy (%)",
                 "consistency": "consistency with the standard view (%)", "soft_ce": "soft cross-entropy (nats)",
                 "kl": "KL divergence (nats)"}
SHORT_LABELS = {"consistency": "consistency (%)", "top1": "top-1 (%)", "kl": "KL (nats)"}
#: the metric of the summary dot plot, first present first
SUMMARY_METRICS = ("consistency", "top1", "kl")


def _metric_label(kind: str, metric: str) -> str:
    if metric.startswith("rel_error_interior_stage"):
        return f"relative error (interior), stage {metric.removeprefix('rel_error_interior_stage')}"
    if metric.startswith("rel_error_stage"):
        return f"relative error, stage {metric.removeprefix('rel_error_stage')}"
    if kind in ("circular-shift", "shift-consistency") and metric == "consistency":
        return "consistency of two shifts (%)"
    return METRIC_LABELS.get(metric, metric)


def _metrics(rows: pd.DataFrame) -> list[str]:
    """Metrics present in ``rows``: prediction metrics in a fixed order, then stage errors by stage."""
    present = list(rows["metric"].unique())
    ordered = [m for m in ("consistency", "top1", "top5", "soft_ce", "kl") if m in present]
    return ordered + sorted(m for m in present if m not in PREDICTION_METRICS)


def plot_kind(out_dir: Path, kind: str, rows: pd.DataFrame, palette: dict, style: FigureStyle) -> list[Path]:
    """``invariance_<kind>.png/.pdf``: a panel per metric, value vs level, a line per model. Doubling
    levels (circular shifts) on a log2 axis; the scale axis marks the standard view (crop ratio 0.875)."""
    metrics = _metrics(rows)
    cols = min(len(metrics), 3)
    fig, axes = style.subplots(-(-len(metrics) // cols), cols)
    handles: dict[str, object] = {}
    for ax, metric in zip(axes.ravel(), metrics):
        sel = rows[rows["metric"] == metric]
        handles.update(lines_with_ci(ax, sel, "level", palette))
        log2_axis(ax, sel["level"])
        if kind == "scale":
            mark_standard_view(ax)
        ax.set_xlabel(AXIS_LABELS[kind])
        ax.set_ylabel(_metric_label(kind, metric))
    for ax in axes.ravel()[len(metrics):]:
        ax.set_axis_off()
    style.legend(fig, list(handles.values()), list(handles))
    annotate(fig, f"{TITLES[kind]} (bands: 95% CI over images)", rows)
    return save_figure(fig, out_dir / f"invariance_{kind}")


def plot_summary(out_dir: Path, frame: pd.DataFrame, style: FigureStyle) -> list[Path]:
    """``invariance_summary.png/.pdf``: a panel per kind, one dot per model (fixed colour and marker)
    at its value at the kind's largest level, with the 95% CI as a bar; models top to bottom."""
    metric = next((m for m in SUMMARY_METRICS if (frame["metric"] == m).any()), None)
    if metric is None:
        return []
    rows = frame[frame["metric"] == metric]
    kinds = [k for k in KINDS if k in set(rows["kind"])]
    split = weights_in_labels(rows)
    labels = list(dict.fromkeys(zip(rows["model"], rows["weights"])))
    cols = min(len(kinds), 4)
    fig, axes = style.subplots(-(-len(kinds) // cols), cols, aspect=0.25 + 0.09 * len(labels), sharey=True)
    for ax, kind in zip(axes.ravel(), kinds):
        sel = rows[rows["kind"] == kind]
        top = sel["level"].max()
        sel = sel[sel["level"] == top]
        for y, (model, weights) in enumerate(labels):
            hit = sel[(sel["model"] == model) & (sel["weights"] == weights)]
            if not len(hit):
                continue
            look = model_look(model)
            value, low, high = (float(hit[c].iloc[0]) for c in ("value", "ci_low", "ci_high"))
            ax.errorbar([value], [y], xerr=[[max(value - low, 0)], [max(high - value, 0)]], color=look.colour,
                        marker=look.marker, markerfacecolor="white" if split and weights == "random-init" else look.colour,
                        capsize=2, linewidth=1)
        ax.set_title(f"{kind}, level {top:g}", fontsize="medium")
        ax.set_xlabel(SHORT_LABELS.get(metric, metric))
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(labels)), [row_label(m, w, split) for m, w in labels])
    axes[0][0].set_ylim(len(labels) - 0.5, -0.5)
    for ax in axes.ravel()[len(kinds):]:
        ax.set_axis_off()
    annotate(fig, f"{metric} at the largest level of each kind (bars: 95% CI over images)", rows)
    return save_figure(fig, out_dir / "invariance_summary")


def plot_invariance(out_dir: str | Path, probe: str = "invariance", *, sources: Sequence[Path] | None = None,
                    style: FigureStyle | None = None) -> list[Path]:
    """Draw ``invariance_<kind>.png/.pdf`` for every kind in ``invariance.csv`` (metric vs level, one
    line per model with its 95% CI band: Wilson for rates, bootstrap for means) and the summary."""
    out_dir, folders, style, frame = open_runs(out_dir, sources, style, "invariance.csv", probe, ("model", "weights", "kind", "level", "metric", "value",
                                                         "ci_low", "ci_high"), numeric=("level",))
    unknown = sorted(set(frame["kind"]) - set(KINDS))
    if unknown:
        raise UsageError(f"{folders[0] / 'invariance.csv'} names an unknown kind {unknown[0]!r}: the file is damaged; "
                         "rerun the probe")
    palette = model_palette(list(dict.fromkeys(frame["model"])))
    written: list[Path] = []
    with style.context():
        for kind in [k for k in KINDS if k in set(frame["kind"])]:
            written += plot_kind(out_dir, kind, frame[frame["kind"] == kind], palette, style)
        written += plot_summary(out_dir, frame, style)
    return written
