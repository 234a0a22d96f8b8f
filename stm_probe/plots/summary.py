"""The summary heat map of a comparison: models x headline metrics, each metric scaled so better is brighter.

Each column is scaled to [0, 1] over the models (min-max of its values); a lower-is-better column
is flipped, so the brightest cell of every column is its best model. A column without a better
direction (ERF size, shape bias) is drawn larger-is-brighter and marked with "(size)" in its label.
A column whose models all score the same is drawn mid-grey-scale (0.5). Cells show the raw values.
A saturated column (every model the same or at the metric's bound: `stm_probe.probes.columns.saturation`)
is drawn grey and labelled so; a cell that no pairwise test separates from its column's best is paled
(half white) and hatched, so that a colour difference is not read as evidence the tests reject, even where
the figure is shown small (a hatch alone vanishes when the image is scaled down). The figure says both
under it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Collection, Mapping, Sequence

import numpy as np
import pandas as pd

from .figures import model_palette, new_figure, save_figure
from .style import FigureStyle, wrap

#: a cell no test separates from its column's best: white over half its colour, dark hatch (150 dpi: visible at 1/4)
TIED_CELL = {"facecolor": (1.0, 1.0, 1.0, 0.5), "hatch": "//", "edgecolor": "#444444", "hatch_linewidth": 1.2,
             "linewidth": 0}

ARROWS = {"higher": "\u2191", "lower": "\u2193", None: "(size)"}


def scale_columns(values: pd.DataFrame, better: dict[str, str | None]) -> pd.DataFrame:
    """Each column of ``values`` (models x metrics) scaled to [0, 1], 1 = best (or largest); NaN stays NaN."""
    scaled = pd.DataFrame(index=values.index, columns=values.columns, dtype=float)
    for column in values.columns:
        v = values[column].astype(float)
        low, high = np.nanmin(v) if v.notna().any() else np.nan, np.nanmax(v) if v.notna().any() else np.nan
        if not np.isfinite(high - low):
            continue
        s = (v - low) / (high - low) if high > low else v * 0 + 0.5
        scaled[column] = 1.0 - s if better.get(column) == "lower" else s
    return scaled


def plot_summary(values: pd.DataFrame, better: dict[str, str | None], labels: dict[str, str], stem: str | Path,
                 formats: Sequence[str] | None = None, style: FigureStyle | None = None,
                 saturated: Collection[str] = (), tied: Mapping[str, Collection[str]] | None = None) -> list[Path]:
    """Draw ``values`` (index: models, columns: metric keys) as the summary heat map ``stem.png`` (and
    the other formats of ``style``, or ``formats`` when given).

    ``better[key]``: "higher", "lower" or None; ``labels[key]``: the column header; ``style``: the
    figure style (paper: 7 in wide; default: the runs' own); ``saturated``: column keys drawn grey, not
    scaled; ``tied[key]``: the models no test separates from that column's best (hatched).
    """
    style = style or FigureStyle()
    with style.context():
        return _draw(values, better, labels, stem, formats, style, set(saturated), dict(tied or {}))


def _draw(values: pd.DataFrame, better: dict[str, str | None], labels: dict[str, str], stem: str | Path,
          formats: Sequence[str] | None, style: FigureStyle, saturated: set[str],
          tied: dict[str, Collection[str]]) -> list[Path]:
    import matplotlib
    from matplotlib.patches import Rectangle

    scaled = scale_columns(values, better)
    for column in saturated & set(scaled.columns):
        scaled[column] = np.nan  # grey: not ranked
    n_models, n_cols = values.shape
    width = style.width(3) if style.paper else max(4.0, 0.9 * n_cols + 2.5)
    fig, ax = new_figure(figsize=(width, max(2.6, 0.45 * n_models + 2.3)), squeeze=True)  # + the legend line
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#dddddd")
    image = ax.imshow(np.ma.masked_invalid(scaled.to_numpy(dtype=float)), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    for i in range(n_models):
        for j in range(n_cols):
            raw = values.iloc[i, j]
            is_tied = values.index[i] in tied.get(values.columns[j], ()) and values.columns[j] not in saturated
            if is_tied:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, **TIED_CELL))
            if pd.isna(raw):
                text, colour = "n/a", "black"
            else:
                text = f"{raw:.3g}" if 0 < abs(raw) < 1 else f"{raw:.1f}"
                dark = scaled.iloc[i, j] <= 0.6 and not is_tied  # NaN (grey) and paled cells read black
                colour = "white" if dark else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color=colour,
                    bbox={"facecolor": "white", "alpha": 0.7, "linewidth": 0, "pad": 1} if is_tied else None)
    ax.set_xticks(range(n_cols))
    ax.set_xticklabels([f"{labels.get(c, c)} {'(saturated)' if c in saturated else ARROWS[better.get(c)]}"
                        for c in values.columns], rotation=40, ha="right", fontsize=7)
    ax.set_yticks(range(n_models))
    ax.set_yticklabels(values.index, fontsize=8)
    for tick, colour in zip(ax.get_yticklabels(), model_palette(list(values.index)).values()):
        tick.set_color(colour)
    bar = fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    bar.set_ticks([0, 1])
    bar.set_ticklabels(["worst", "best"], fontsize=7)
    ax.set_title(wrap("Summary: each column scaled over the models, brighter = better (\u2191 higher is better, "
                      "\u2193 lower is better, (size): larger, no better direction)", fig, fontsize=8), fontsize=8)
    fig.supxlabel(wrap("Pale and hatched: no pairwise test (Holm-corrected) separates the cell from its column's "
                       "best. "
                       "Grey column: saturated (every model the same or at the metric's bound), not ranked.",
                       fig, fontsize=7), fontsize=7)  # in the layout, so never clipped
    return save_figure(fig, stem, formats=formats)
