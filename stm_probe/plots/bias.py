"""Figures of `stm-probe bias`, one per method, drawn only from ``bias.csv`` (and the method's
array files): ``bias_<method>.png/.pdf``. A method with its own figure is listed in ``FIGURES``;
the others get `plot_curves` (metric vs level, a panel per metric and variant, a line per model)."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Sequence

import pandas as pd

from .figures import lines_with_ci, model_palette, save_figure
from . import open_runs
from .style import FigureStyle, annotate, log2_axis

#: method -> "module:function(out_dir, rows, style) -> list[Path]" for methods with their own figure
FIGURES: dict[str, str] = {
    "fourier": "stm_probe.plots.bias_fourier:plot_fourier",
    "cue-conflict": "stm_probe.plots.bias_cue_conflict:plot_cue_conflict",
    "attribution": "stm_probe.plots.bias_attribution:plot_attribution",
}
X_LABELS = {"patch-shuffle": "grid g (g x g patches shuffled)", "patch-drop": "fraction of patches dropped",
            "frequency-filter": "cutoff radius (px of the centred spectrum)"}
CURVE_METRICS = ("consistency", "top1", "kl")


def plot_curves(out_dir: Path, rows: pd.DataFrame, method: str, style: FigureStyle | None = None) -> list[Path]:
    """``bias_<method>.png/.pdf``: a panel per metric (rows) and variant (columns), value vs level,
    a line per model with its 95% CI band; levels that double (grids) on a log2 axis."""
    style = style or FigureStyle()
    rows = rows.assign(variant=rows["variant"].fillna(""))
    rows = rows[rows["metric"].isin(CURVE_METRICS)]
    if not len(rows):
        return []
    variants = list(dict.fromkeys(rows["variant"]))
    metrics = [m for m in CURVE_METRICS if (rows["metric"] == m).any()]
    palette = model_palette(list(dict.fromkeys(rows["model"])))
    fig, axes = style.subplots(len(metrics), len(variants))
    handles: dict[str, object] = {}
    for r, metric in enumerate(metrics):
        for c, variant in enumerate(variants):
            ax = axes[r][c]
            sel = rows[(rows["variant"] == variant) & (rows["metric"] == metric)]
            if not len(sel):
                ax.set_visible(False)
                continue
            handles.update(lines_with_ci(ax, sel, "level", palette))
            log2_axis(ax, sel["level"].dropna())
            ax.set_xlabel(X_LABELS.get(method, "level") if r == len(metrics) - 1 else "")
            ax.set_ylabel(metric)
            if r == 0:
                ax.set_title(f"{method}{' (' + variant + ')' if variant else ''}", fontsize="medium")
    style.legend(fig, list(handles.values()), list(handles))
    annotate(fig, f"{method} (bands: 95% CI over images)", rows)
    return save_figure(fig, out_dir / f"bias_{method}")


def plot_bias(out_dir: str | Path, probe: str = "bias", *, sources: Sequence[Path] | None = None,
              style: FigureStyle | None = None) -> list[Path]:
    """Every ``bias_<method>`` figure of a run folder (or several, drawn together), from ``bias.csv``
    and the methods' files."""
    out_dir, folders, style, frame = open_runs(out_dir, sources, style, "bias.csv", probe, ("model", "weights", "probe", "variant", "level", "level2",
                                                   "metric", "value", "ci_low", "ci_high"), numeric=("level", "level2"))
    written: list[Path] = []
    with style.context():
        for method, rows in frame.groupby("probe", sort=False):
            if method in FIGURES:
                module_name, func = FIGURES[method].split(":")
                written += getattr(importlib.import_module(module_name), func)(out_dir, rows, style)
            else:
                written += plot_curves(out_dir, rows, str(method), style)
    return written
