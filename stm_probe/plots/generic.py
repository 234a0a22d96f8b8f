"""The figure of any probe without its own: metric vs one setting, one line per model, CI band.

Reads only ``<probe>.csv``. The x axis is the last setting column (between ``weights`` and
``metric``) with more than one numeric value; one panel per metric.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import UsageError
from ..report import lines_with_ci, model_palette, read_results, save_figure, use_headless_backend


def setting_columns(frame: pd.DataFrame) -> list[str]:
    columns = list(frame.columns)
    return columns[columns.index("weights") + 1:columns.index("metric")]


def plot_generic(out_dir: str | Path, probe: str) -> list[Path]:
    """``<probe>.png/.pdf``: one panel per metric, value vs the swept setting per model."""
    use_headless_backend()
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    frame = read_results(out_dir / f"{probe}.csv", ("model", "weights", "metric", "value", "ci_low", "ci_high"))
    numeric = [c for c in setting_columns(frame)
               if pd.to_numeric(frame[c], errors="coerce").notna().all() and frame[c].nunique() > 1]
    if not numeric:
        raise UsageError(f"{out_dir / f'{probe}.csv'} sweeps no numeric setting: nothing to draw as a curve")
    x = numeric[-1]
    metrics = list(dict.fromkeys(frame["metric"]))
    palette = model_palette(list(dict.fromkeys(frame["model"])))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics) + 1.0, 3.0), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        rows = frame[frame["metric"] == metric].sort_values(x)
        lines_with_ci(ax, rows, x, palette, legend=ax is axes[0][0])
        ax.set_xlabel(x)
        ax.set_ylabel(metric, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out_dir / probe)
