"""Data efficiency: val accuracy and shape bias vs the fraction of the training split.

Reads only ``data-efficiency.csv``. One line per model (and weights) of ``repeat_mean`` (the
mean over training seeds) against the fraction on a log2 axis, with the band
``repeat_low``..``repeat_high`` (Student-t 95% over seeds; with one seed, the band over images
``ci_low``..``ci_high``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import UsageError
from .figures import model_palette, save_figure
from . import open_runs
from .style import FigureStyle, annotate, model_look

PANELS = (("val_acc", "val accuracy (%)"), ("shape_bias", "shape bias (cue conflict)"))


def _band(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high) per row: over seeds where there are several, else the interval over images."""
    several = rows["repeats"].astype(int) > 1
    mean = np.where(several, rows["repeat_mean"], rows["value"]).astype(float)
    low = np.where(several, rows["repeat_low"], rows["ci_low"]).astype(float)
    high = np.where(several, rows["repeat_high"], rows["ci_high"]).astype(float)
    return mean, low, high


def plot_data_efficiency(out_dir: str | Path, probe: str = "data-efficiency", *,
                         sources: Sequence[Path] | None = None, style: FigureStyle | None = None) -> list[Path]:
    """``data-efficiency.png/.pdf``: val accuracy (left) and shape bias (right) vs fraction."""
    out_dir, folders, style, frame = open_runs(out_dir, sources, style, f"{probe}.csv", probe, ("model", "weights", "fraction", "metric", "value", "ci_low",
                                                       "ci_high", "repeats", "repeat_mean", "repeat_low",
                                                       "repeat_high"), numeric=("fraction",))
    if not (frame["metric"] == "val_acc").any():
        raise UsageError(f"{folders[0] / f'{probe}.csv'} holds no val_acc rows (nothing to draw): the file is damaged; "
                         "rerun the probe")
    palette = model_palette(list(dict.fromkeys(frame["model"].astype(str))))
    fractions = sorted(frame["fraction"].unique())
    with style.context():
        fig, axes = style.subplots(1, len(PANELS))
        handles: dict[str, object] = {}
        for ax, (metric, ylabel) in zip(axes[0], PANELS):
            for k, ((model, _weights), rows) in enumerate(frame[frame["metric"] == metric].groupby(["model", "weights"],
                                                                                                  sort=False)):
                rows = rows.sort_values("fraction")
                mean, low, high = _band(rows)
                x = rows["fraction"].to_numpy(float)
                look = model_look(str(model))
                (line,) = ax.plot(x, mean, marker=look.marker, linestyle=look.linestyle, color=palette[str(model)],
                                  alpha=0.9, zorder=2 + k)
                ax.fill_between(x, low, high, color=palette[str(model)], alpha=0.15, linewidth=0)
                handles[str(model)] = line
            ax.set_xscale("log", base=2)
            ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
            ax.minorticks_off()
            ax.set_xlabel("fraction of the training split")
            ax.set_ylabel(ylabel)
            if metric == "shape_bias":
                ax.set_ylim(-0.02, 1.02)
                ax.axhline(0.5, color="grey", linewidth=0.6, linestyle=":")
        style.legend(fig, list(handles.values()), list(handles))
        steps = frame["steps"].iloc[0] if "steps" in frame.columns else None
        title = "val accuracy and shape bias vs training data; band: 95% over seeds"
        if steps is not None:
            title = f"same budget at every fraction: {int(steps)} optimiser steps; band: 95% over seeds"
        annotate(fig, title, frame)
        return save_figure(fig, out_dir / probe)
