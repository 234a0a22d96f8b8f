"""The Fourier heat map figure of `stm-probe bias` (Yin et al., NeurIPS 2019, "A Fourier perspective
on model robustness in computer vision"); the grid layout it shares with the method is
`stm_probe.core.fourier`.

``bias_fourier.png/.pdf``: one heat map per model on one shared colour scale, low frequencies
centred, drawn from ``bias.csv`` alone (``fourier/<model>.npy`` holds the same numbers). No torch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.fourier import grid_offsets, heat_map
from ..probes.bias.files import MAP_METRICS
from .figures import save_figure
from .style import FigureStyle, annotate, short_name

MAP_LABELS = {"error": "error rate (%): top-1 wrong", "flip": "flip rate (%): top-1 changed"}


def _grid_step(rows: pd.DataFrame, size: int) -> int:
    """The grid step of a run: the smallest positive offset measured (the cell (step, 0))."""
    offsets = pd.concat([rows["level"], rows["level2"]]).astype(float).abs()
    positive = offsets[offsets > 0]
    return int(positive.min()) if len(positive) else size


def maps_from_rows(rows: pd.DataFrame) -> tuple[str, dict[str, np.ndarray], np.ndarray]:
    """(metric, {model: map}, offsets) from the fourier rows of ``bias.csv``."""
    metric = next(m for m in MAP_METRICS if (rows["metric"] == m).any())
    rows = rows[rows["metric"] == metric]
    size = int(rows["input_size"].iloc[0])
    step = _grid_step(rows, size)
    maps = {}
    for model, own in rows.groupby("model", sort=False):
        cells = {(int(r.level), int(r.level2)): r.value for r in own.itertuples()}
        maps[str(model)] = heat_map(cells, size, step)
    return metric, maps, grid_offsets(size, step)


def plot_fourier(out_dir: str | Path, rows: pd.DataFrame, style: FigureStyle | None = None) -> list[Path]:
    """``bias_fourier.png/.pdf``: a heat map per model (rows = vertical frequency i, columns =
    horizontal frequency j), one colour scale from 0 to the largest rate of any model."""
    style = style or FigureStyle()
    if not len(rows) or not rows["metric"].isin(MAP_METRICS).any():
        return []
    metric, maps, offsets = maps_from_rows(rows)
    top = max(float(np.nanmax(m)) if np.isfinite(m).any() else 0.0 for m in maps.values())
    cols = min(len(maps), 4)
    nrows = -(-len(maps) // cols)
    fig, axes = style.subplots(nrows, cols, aspect=1.0, extra_height=0.8, width=None if style.paper else 2.8 * cols + 1.2)
    half = (offsets[1] - offsets[0]) / 2 if len(offsets) > 1 else 0.5
    extent = (offsets[0] - half, offsets[-1] + half, offsets[-1] + half, offsets[0] - half)
    image = None
    for k, (ax, (model, grid)) in enumerate(zip(axes.ravel(), maps.items())):
        image = ax.imshow(grid, cmap="viridis", vmin=0.0, vmax=max(top, 1e-9), extent=extent,
                          interpolation="nearest")
        ax.set_title(short_name(model), fontsize="medium")
        if k + cols >= len(maps):  # the lowest panel of its column
            ax.set_xlabel("horizontal frequency j\n(cycles / image)", fontsize="small")
        if k % cols == 0:
            ax.set_ylabel("vertical frequency i\n(cycles / image)", fontsize="small")
        ax.tick_params(labelsize="x-small")
    for ax in axes.ravel()[len(maps):]:
        ax.set_axis_off()
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label=MAP_LABELS[metric])
    annotate(fig, "Fourier heat map: Fourier-basis perturbation per frequency", rows)
    return save_figure(fig, Path(out_dir) / "bias_fourier")
