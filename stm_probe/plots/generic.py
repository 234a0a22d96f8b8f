"""The figure of any probe without its own: metric vs one setting, one line per model, CI band.

Reads only ``<probe>.csv``. The x axis is the last setting column (between ``weights`` and
``metric``) with more than one numeric value (log2 when its levels double); one panel per metric.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from ..errors import UsageError
from .figures import lines_with_ci, model_palette, save_figure
from . import open_runs
from .style import FigureStyle, annotate, log2_axis


def setting_columns(frame: pd.DataFrame) -> list[str]:
    columns = list(frame.columns)
    return columns[columns.index("weights") + 1:columns.index("metric")]


def plot_generic(out_dir: str | Path, probe: str, *, sources: Sequence[Path] | None = None,
                 style: FigureStyle | None = None) -> list[Path]:
    """``<probe>.png/.pdf``: one panel per metric, value vs the swept setting per model."""
    out_dir, folders, style, frame = open_runs(out_dir, sources, style, f"{probe}.csv", probe, ("model", "weights", "metric", "value", "ci_low", "ci_high"))
    numeric = [c for c in setting_columns(frame)
               if pd.to_numeric(frame[c], errors="coerce").notna().all() and frame[c].nunique() > 1]
    if not numeric:
        raise UsageError(f"{folders[0] / f'{probe}.csv'} sweeps no numeric setting: nothing to draw as a curve")
    x = numeric[-1]
    frame[x] = pd.to_numeric(frame[x])
    metrics = list(dict.fromkeys(frame["metric"]))
    palette = model_palette(list(dict.fromkeys(frame["model"])))
    with style.context():
        cols = min(len(metrics), 4)
        fig, axes = style.subplots(-(-len(metrics) // cols), cols)
        handles: dict[str, object] = {}
        for ax, metric in zip(axes.ravel(), metrics):
            rows = frame[frame["metric"] == metric]
            handles.update(lines_with_ci(ax, rows, x, palette))
            log2_axis(ax, rows[x])
            ax.set_xlabel(x)
            ax.set_ylabel(metric)
        for ax in axes.ravel()[len(metrics):]:
            ax.set_axis_off()
        style.legend(fig, list(handles.values()), list(handles))
        annotate(fig, f"{probe} (bands: 95% CI)", frame)
        return save_figure(fig, out_dir / probe)
