"""ERF figures, drawn only from ``erf.csv`` and ``erf/*_norm.npy``: heat maps per model (1 x stages),
a models x stages grid, and ``erf_area_ratio``: the area ratio vs stage, one line per model and
one panel per threshold. Heat maps use the style's sequential colour map (``--cmap``; default
viridis, RepLKNet's red-yellow-green with ``--cmap RdYlGn``)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import UsageError
from .figures import lines_with_ci, model_palette, save_figure
from ..runtime.results import load_array
from ..probes.erf import map_path
from . import folder_of, open_runs
from .style import FigureStyle, annotate, short_name

COLOURBAR_LABEL = "log-normalised contribution"


def _is_init_copy(value) -> bool:
    return str(value).lower() == "true"


def _panels(frame: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """(file label, title, rows) per model and weights, in CSV order."""
    panels = []
    for (model, weights, init_copy), rows in frame.groupby(["model", "weights", "init_copy"], sort=False):
        init_copy = _is_init_copy(init_copy)
        label = f"{model}_init" if init_copy else str(model)
        panels.append((label, f"{model} ({weights}{', fresh init' if init_copy else ''})", rows))
    return panels


def _ratio_title(rows: pd.DataFrame, stage: int) -> str:
    parts = [f"stage {stage}"]
    sel = rows[rows["stage"] == stage]
    for t in (0.2, 0.99):
        hit = sel[np.isclose(sel["threshold"], t)]
        if len(hit):
            parts.append(f"{int(round(t * 100))}%: {hit['value'].iloc[0]:.3f}")
    return "\n".join([parts[0], "  ".join(parts[1:])]) if len(parts) > 1 else parts[0]


def _draw_row(axes, folder: Path, label: str, rows: pd.DataFrame, stages: list[int], cmap: str, titles: bool = True):
    image = None
    for ax, stage in zip(axes, stages):
        norm = load_array(map_path(folder, label, stage - 1, normalised=True), ndim=2)
        image = ax.imshow(norm, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
        if titles:
            ax.set_title(_ratio_title(rows, stage), fontsize="small")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.spines[:].set_visible(True)
    return image


def _heat_width(style: FigureStyle, stages: list[int]) -> float | None:
    """Heat maps are smaller than curves on screen; paper widths stay 3.5 / 7 in."""
    return None if style.paper else 2.3 * len(stages) + 1.2


def plot_area_ratio(out_dir: Path, frame: pd.DataFrame, style: FigureStyle) -> list[Path]:
    """``erf_area_ratio.png/.pdf``: area ratio (fraction of the input holding the threshold's share
    of the contribution) vs stage, a line per model (fresh-init copies as their own line), a panel
    per threshold; bands: the 95% bootstrap interval over images."""
    rows = frame.assign(model=[f"{m} (fresh init)" if _is_init_copy(i) else str(m)
                               for m, i in zip(frame["model"], frame["init_copy"])])
    palette = model_palette(list(dict.fromkeys(frame["model"])))
    palette.update({f"{m} (fresh init)": palette[m] for m in list(palette)})
    thresholds = sorted(rows["threshold"].unique())
    cols = min(len(thresholds), 4)
    fig, axes = style.subplots(-(-len(thresholds) // cols), cols, sharey=True)
    handles: dict[str, object] = {}
    for ax, t in zip(axes.ravel(), thresholds):
        handles.update(lines_with_ci(ax, rows[np.isclose(rows["threshold"], t)], "stage", palette))
        ax.set_title(f"threshold t = {t:g}", fontsize="medium")
        ax.set_xlabel("stage")
        ax.set_xticks(sorted(int(s) for s in rows["stage"].unique()))
        ax.set_ylim(0, 1.02)
    axes[0][0].set_ylabel("area ratio")
    for ax in axes.ravel()[len(thresholds):]:
        ax.set_axis_off()
    style.legend(fig, list(handles.values()), list(handles))
    annotate(fig, "ERF area ratio per stage (bands: 95% CI over images)", frame)
    return save_figure(fig, out_dir / "erf_area_ratio")


def plot_erf(out_dir: str | Path, probe: str = "erf", *, sources: Sequence[Path] | None = None,
             style: FigureStyle | None = None) -> list[Path]:
    """Draw every ERF figure of a run folder (or several, drawn together) from ``erf.csv`` and
    ``erf/*_norm.npy``.

    Per model (and weights): ``erf_<label>.png/.pdf`` with one heatmap per stage on a shared
    colour scale [0, 1]; with several panels also ``erf_grid.png/.pdf`` (rows x stages); always
    ``erf_area_ratio.png/.pdf``.
    """
    out_dir, folders, style, frame = open_runs(out_dir, sources, style, "erf.csv", probe, ("model", "weights", "init_copy", "stage", "threshold", "metric",
                                                  "value"), numeric=("stage", "threshold"))
    frame = frame[frame["metric"] == "area_ratio"]
    if not len(frame):
        raise UsageError(f"{folders[0] / 'erf.csv'} holds no area_ratio rows (no rows to draw): the file is damaged; "
                         "rerun the probe")
    stages = sorted(int(s) for s in frame["stage"].unique())
    panels = _panels(frame)
    written: list[Path] = []
    with style.context():
        for label, title, rows in panels:
            fig, axes = style.subplots(1, len(stages), aspect=1.0, extra_height=1.0, width=_heat_width(style, stages))
            image = _draw_row(axes[0], folder_of(rows, rows["model"].iloc[0], out_dir), label, rows, stages,
                              style.cmap)
            fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label=COLOURBAR_LABEL)
            annotate(fig, title, rows)
            written += save_figure(fig, out_dir / f"erf_{label}")
        if len(panels) > 1:
            fig, axes = style.subplots(len(panels), len(stages), aspect=0.9, extra_height=0.8,
                                       width=_heat_width(style, stages))
            for r, (row_axes, (label, title, rows)) in enumerate(zip(axes, panels)):
                image = _draw_row(row_axes, folder_of(rows, rows["model"].iloc[0], out_dir), label, rows, stages,
                                  style.cmap, titles=False)
                name = short_name(label.removesuffix("_init")) + (" (init)" if label.endswith("_init") else "")
                row_axes[0].set_ylabel(name, fontsize="small")
                if r == 0:
                    for ax, stage in zip(row_axes, stages):
                        ax.set_title(f"stage {stage}", fontsize="medium")
            fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label=COLOURBAR_LABEL)
            annotate(fig, "ERF per model and stage", frame)
            written += save_figure(fig, out_dir / "erf_grid")
        written += plot_area_ratio(out_dir, frame, style)
    return written
