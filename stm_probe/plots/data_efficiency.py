"""Data efficiency: val accuracy and shape bias vs the fraction of the training split.

Reads only ``data-efficiency.csv``. One line per model (and weights) of ``repeat_mean`` (the
mean over training seeds) against the fraction on a log2 axis, with the band
``repeat_low``..``repeat_high`` (Student-t 95% over seeds; with one seed, the band over images
``ci_low``..``ci_high``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UsageError
from ..report import model_palette, read_results, save_figure, use_headless_backend

PANELS = (("val_acc", "val accuracy (%)"), ("shape_bias", "shape bias (cue conflict)"))


def _band(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high) per row: over seeds where there are several, else the interval over images."""
    several = rows["repeats"].astype(int) > 1
    mean = np.where(several, rows["repeat_mean"], rows["value"]).astype(float)
    low = np.where(several, rows["repeat_low"], rows["ci_low"]).astype(float)
    high = np.where(several, rows["repeat_high"], rows["ci_high"]).astype(float)
    return mean, low, high


def plot_data_efficiency(out_dir: str | Path, probe: str = "data-efficiency") -> list[Path]:
    """``data-efficiency.png/.pdf``: val accuracy (left) and shape bias (right) vs fraction."""
    use_headless_backend()
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    path = out_dir / f"{probe}.csv"
    frame = read_results(path, ("model", "weights", "fraction", "metric", "value", "ci_low", "ci_high", "repeats",
                                "repeat_mean", "repeat_low", "repeat_high"), numeric=("fraction",))
    if not (frame["metric"] == "val_acc").any():
        raise UsageError(f"{path} holds no val_acc rows (nothing to draw): the file is damaged; rerun the probe")
    labels = list(dict.fromkeys(frame["model"].astype(str)))
    palette = model_palette(labels)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(8.4, 3.3), squeeze=False)
    fractions = sorted(frame["fraction"].unique())
    for ax, (metric, ylabel) in zip(axes[0], PANELS):
        for (model, _weights), rows in frame[frame["metric"] == metric].groupby(["model", "weights"], sort=False):
            rows = rows.sort_values("fraction")
            mean, low, high = _band(rows)
            x = rows["fraction"].to_numpy(float)
            ax.plot(x, mean, marker="o", markersize=4, color=palette[str(model)], label=str(model))
            ax.fill_between(x, low, high, color=palette[str(model)], alpha=0.2, linewidth=0)
        ax.set_xscale("log", base=2)
        ax.set_xticks(fractions)
        ax.set_xticklabels([f"{f:g}" for f in fractions], fontsize=7)
        ax.minorticks_off()
        ax.set_xlabel("fraction of the training split")
        ax.set_ylabel(ylabel, fontsize=8)
        if metric == "shape_bias":
            ax.set_ylim(-0.02, 1.02)
            ax.axhline(0.5, color="grey", linewidth=0.6, linestyle=":")
    axes[0][0].legend(fontsize=7)
    steps = frame["steps"].iloc[0] if "steps" in frame.columns else None
    if steps is not None:
        fig.suptitle(f"same budget at every fraction: {int(steps)} optimiser steps; band: 95% over seeds",
                     fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out_dir / probe)
