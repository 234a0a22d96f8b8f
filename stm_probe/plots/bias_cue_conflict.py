"""The cue-conflict figure of `stm-probe bias`: per-category shape bias, as popularised by the
model-vs-human benchmark (Geirhos et al., NeurIPS 2021). Drawn only from the ``shape_bias`` rows
of ``bias.csv``: ``bias_cue_conflict.png/.pdf``."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .figures import model_palette, save_figure
from .style import FigureStyle, annotate, model_look

OVERALL = "all"


def plot_cue_conflict(out_dir: Path, rows: pd.DataFrame, style: FigureStyle | None = None) -> list[Path]:
    """``bias_cue_conflict.png/.pdf``: shape categories on the y axis, shape bias (0 = all texture
    decisions, 1 = all shape decisions) on x; one marker per model and category, and each model's
    overall shape bias as a vertical line (its 95% CI as a faint band). Every measured category has
    a row; one where a model's shape bias is undefined (no shape or texture hit) has no marker.
    Nothing is drawn when no ``shape_bias`` row exists at all."""
    style = style or FigureStyle()
    rows = rows.assign(variant=rows["variant"].fillna("").astype(str))
    categories = sorted(set(rows["variant"]) - {OVERALL}, reverse=True)  # every category measured, a-z from the top
    rows = rows[rows["metric"] == "shape_bias"]
    if not len(rows):
        return []
    overall = rows[rows["variant"] == OVERALL]
    per_category = rows[rows["variant"] != OVERALL]
    models = list(dict.fromkeys(rows["model"]))
    palette = model_palette(models)
    position = {name: i for i, name in enumerate(categories)}

    fig, axes = style.subplots(1, 1, aspect=0.07 * max(len(categories), 4) + 0.25, extra_height=1.2,
                               width=None if style.paper else 6.4)
    ax = axes[0][0]
    for model in models:
        colour, marker = palette[model], model_look(model).marker
        line = overall[overall["model"] == model]
        label = model
        if len(line):
            value = float(line["value"].iloc[0])
            ax.axvline(value, color=colour, linewidth=1.5, zorder=1)
            ax.axvspan(float(line["ci_low"].iloc[0]), float(line["ci_high"].iloc[0]), color=colour, alpha=0.08,
                       linewidth=0, zorder=0)
            label = f"{model} ({value:.2f})"
        points = per_category[per_category["model"] == model]
        ax.scatter(points["value"], points["variant"].map(position), color=colour, marker=marker, s=36,
                   edgecolors=(0.3, 0.3, 0.3, 0.5), linewidths=0.4, zorder=3, clip_on=False, label=label)
    for i in range(len(categories) - 1):
        ax.axhline(i + 0.5, color="gray", linestyle=":", linewidth=0.6, alpha=0.5)
    ax.set_yticks(range(len(categories)), categories)
    ax.set_ylim(-0.5, max(len(categories), 1) - 0.5)
    ax.set_xlim(0, 1)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0\ntexture", "0.25", "0.5", "0.75", "1\nshape"])
    ax.set_xlabel("shape bias: shape hits / (shape + texture hits)")
    ax.set_ylabel("shape category")
    style.legend(fig, *ax.get_legend_handles_labels())
    annotate(fig, "cue conflict (line: overall shape bias per model, band: 95% CI)", rows)
    return save_figure(fig, Path(out_dir) / "bias_cue_conflict")
