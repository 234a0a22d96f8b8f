"""ERF heatmaps: one figure per model (1 x stages) and a models x stages grid."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UsageError
from ..report import load_array, read_results, save_figure, use_headless_backend


def map_path(out_dir: Path, label: str, stage: int, normalised: bool = False) -> Path:
    """Where the mean map of a model label (``<model>`` or ``<model>_init``) and stage is saved."""
    return Path(out_dir) / "erf" / f"{label}_stage{stage + 1}{'_norm' if normalised else ''}.npy"


def _panels(frame: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """(file label, title, rows) per model and weights, in CSV order."""
    panels = []
    for (model, weights, init_copy), rows in frame.groupby(["model", "weights", "init_copy"], sort=False):
        init_copy = str(init_copy).lower() == "true"
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


def _draw_row(axes, out_dir: Path, label: str, rows: pd.DataFrame, stages: list[int]):
    image = None
    for ax, stage in zip(axes, stages):
        norm = load_array(map_path(out_dir, label, stage - 1, normalised=True), ndim=2)
        image = ax.imshow(norm, cmap="RdYlGn", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(_ratio_title(rows, stage), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    return image


def plot_erf(out_dir: str | Path, probe: str = "erf") -> list[Path]:
    """Draw every ERF figure of a run folder from ``erf.csv`` and ``erf/*_norm.npy``.

    Per model (and weights): ``erf_<label>.png/.pdf`` with one heatmap per stage on a shared
    colour scale [0, 1]; with several panels also ``erf_grid.png/.pdf`` (rows x stages).
    """
    use_headless_backend()
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    frame = read_results(out_dir / "erf.csv", ("model", "weights", "init_copy", "stage", "threshold", "metric",
                                               "value"), numeric=("stage", "threshold"))
    frame = frame[frame["metric"] == "area_ratio"]
    if not len(frame):
        raise UsageError(f"{out_dir / 'erf.csv'} holds no area_ratio rows (no rows to draw): the file is damaged; "
                         "rerun the probe")
    stages = sorted(int(s) for s in frame["stage"].unique())
    panels = _panels(frame)
    written: list[Path] = []
    for label, title, rows in panels:
        fig, axes = plt.subplots(1, len(stages), figsize=(2.4 * len(stages) + 0.8, 2.9), squeeze=False)
        image = _draw_row(axes[0], out_dir, label, rows, stages)
        fig.suptitle(title, fontsize=9)
        fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="log-normalised contribution")
        written += save_figure(fig, out_dir / f"erf_{label}")
    if len(panels) > 1:
        fig, axes = plt.subplots(len(panels), len(stages), figsize=(2.4 * len(stages) + 0.8, 2.6 * len(panels)),
                                 squeeze=False)
        for row_axes, (label, title, rows) in zip(axes, panels):
            image = _draw_row(row_axes, out_dir, label, rows, stages)
            row_axes[0].set_ylabel(title, fontsize=7)
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label="log-normalised contribution")
        written += save_figure(fig, out_dir / "erf_grid")
    return written
