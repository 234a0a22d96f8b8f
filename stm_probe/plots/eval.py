"""The figure of `stm-probe eval`, drawn from ``eval.csv`` only.

Left: top-1 (percent) of each model with its 95% interval, and the published top-1 (hollow
diamond) where the package has one. Right: ECE (percent, 15 bins) with its interval. One row per
model (and weights), in the CSV's order; random-init models get hollow markers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import UsageError
from .figures import model_palette, save_figure, weights_in_labels
from . import open_runs
from .style import FigureStyle, annotate

PANELS = (("top1", "top-1 (%)"), ("ece", "ECE (%, 15 bins)"))
ROW_INCHES = 0.28  # panel height per model row


def _label(model: str, weights: str, several: bool) -> str:
    return f"{model} ({'init' if weights == 'random-init' else weights})" if several else model


def _interval(row: pd.Series) -> list[list[float]] | None:
    """matplotlib's xerr of one row (distances to its CI bounds), None without an interval."""
    if not (np.isfinite(row.ci_low) and np.isfinite(row.ci_high)):
        return None
    return [[max(row.value - row.ci_low, 0.0)], [max(row.ci_high - row.value, 0.0)]]


def plot_eval(out_dir: str | Path, probe: str = "eval", *, sources: Sequence[Path] | None = None,
              style: FigureStyle | None = None) -> list[Path]:
    """``eval.png/.pdf`` in ``out_dir`` (see module docstring), from one or several run folders."""
    from matplotlib.lines import Line2D

    out_dir, folders, style, frame = open_runs(out_dir, sources, style, f"{probe}.csv", probe, ("model", "weights", "metric", "value", "ci_low", "ci_high",
                                                        "n_images"))
    if not (frame["metric"] == "top1").any():
        raise UsageError(f"{folders[0] / f'{probe}.csv'} holds no top1 rows: it is not the CSV eval writes, or "
                         "damaged; rerun eval")
    keys = list(dict.fromkeys(zip(frame["model"], frame["weights"])))
    several = weights_in_labels(frame)
    palette = model_palette(list(dict.fromkeys(frame["model"])))
    positions = np.arange(len(keys))[::-1]
    handles: dict[str, object] = {}
    with style.context():
        panel_width = style.width(len(PANELS)) / len(PANELS)
        fig, axes = style.subplots(1, len(PANELS), aspect=(ROW_INCHES * len(keys) + 0.5) / panel_width, sharey=True)
        for ax, (metric, title) in zip(axes[0], PANELS):
            for y, (model, weights) in zip(positions, keys):
                rows = frame[(frame["model"] == model) & (frame["weights"] == weights)].set_index("metric")
                if metric not in rows.index:
                    continue
                row, colour = rows.loc[metric], palette[model]
                face = "white" if weights == "random-init" else colour
                ax.errorbar([row.value], [y], xerr=_interval(row), fmt="o", color=colour, markerfacecolor=face,
                            capsize=2)
                handles.setdefault("measured (95% CI)", Line2D([], [], color="0.35", marker="o"))
                if metric == "top1" and "published_top1" in rows.index:
                    ax.plot([rows.loc["published_top1", "value"]], [y], "D", color=colour, markerfacecolor="none")
                    handles.setdefault("published top-1", Line2D([], [], color="0.35", marker="D",
                                                                  markerfacecolor="none", linestyle="none"))
            ax.set_xlabel(title)
            ax.grid(axis="x", alpha=0.3)
        axes[0][0].set_yticks(positions, [_label(m, w, several) for m, w in keys])
        axes[0][0].set_ylim(-0.7, len(keys) - 0.3)
        style.legend(fig, list(handles.values()), list(handles))
        annotate(fig, "eval: accuracy and calibration (bars: 95% CI)", frame[frame["metric"] == "top1"])
        return save_figure(fig, out_dir / probe)
