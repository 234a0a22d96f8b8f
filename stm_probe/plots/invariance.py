"""Invariance curves: one figure per kind, one panel per metric, one line per model with its CI band."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import UsageError
from ..probes.invariance import KINDS
from ..report import lines_with_ci, model_palette, read_results, save_figure, use_headless_backend

PREDICTION_METRICS = ("top1", "top5", "consistency", "soft_ce", "kl")

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


def plot_invariance(out_dir: str | Path, probe: str = "invariance") -> list[Path]:
    """Draw ``invariance_<kind>.png/.pdf`` for every kind in ``invariance.csv``: metric vs level,
    one line per model (seaborn) with its 95% CI band (ci_low..ci_high: Wilson for rates,
    bootstrap for means)."""
    use_headless_backend()
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    frame = read_results(out_dir / "invariance.csv", ("model", "kind", "level", "metric", "value", "ci_low",
                                                     "ci_high"), numeric=("level",))
    unknown = sorted(set(frame["kind"]) - set(KINDS))
    if unknown:
        raise UsageError(f"{out_dir / 'invariance.csv'} names an unknown kind {unknown[0]!r}: the file is damaged; "
                         "rerun the probe")
    models = list(dict.fromkeys(frame["model"]))
    palette = model_palette(models)
    written: list[Path] = []
    for kind in [k for k in KINDS if k in set(frame["kind"])]:
        rows = frame[frame["kind"] == kind].sort_values("level")
        metrics = _metrics(rows)
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.3 * len(metrics) + 1.6, 3.0), squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            lines_with_ci(ax, rows[rows["metric"] == metric], "level", palette)
            ax.set_xlabel(AXIS_LABELS[kind])
            ax.set_ylabel(_metric_label(kind, metric), fontsize=8)
        handles = [plt.Line2D([], [], color=palette[m], marker="o", markersize=4) for m in models]
        fig.legend(handles, models, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
        fig.suptitle(f"{TITLES[kind]} (bands: 95% CI over images)", fontsize=9)
        fig.tight_layout()
        written += save_figure(fig, out_dir / f"invariance_{kind}")
    return written
