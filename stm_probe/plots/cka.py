"""CKA figures, drawn only from ``cka.csv``: per kernel, ``cka_layers[_<kernel>]`` (one layer x layer heat map
per model and weights) and ``cka_models[_<kernel>]`` (one model x model heat map per stage; with
``--layers blocks`` each model's last block of the stage). Colour scale [0, 1] (CKA's range), one
colour bar per figure; cells are annotated with their value when few enough to read."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import UsageError
from .figures import save_figure
from . import open_runs
from .style import FigureStyle, annotate, short_name

COLOURBAR_LABEL = "CKA"
#: cells per side up to which each cell shows its value
ANNOTATE_CELLS = 8


def entity_label(model: str, weights: str) -> str:
    """How a (model, weights) is named on an axis: ``convnext_micro`` or ``convnext_micro (init)``."""
    return short_name(model) + (" (init)" if str(weights).startswith("random-init (copy)") else "")


def stage_of(layer: str) -> str:
    """``stage2.block3`` -> ``stage2``."""
    return str(layer).split(".")[0]


def _entities(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return list(dict.fromkeys(zip(frame["model"].astype(str), frame["weights"].astype(str))))


def _draw(ax, matrix: np.ndarray, labels: Sequence[str], cmap: str):
    image = ax.imshow(matrix, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels, rotation=90, fontsize="x-small")
    ax.set_yticks(ticks, labels, fontsize="x-small")
    ax.spines[:].set_visible(True)
    if len(labels) <= ANNOTATE_CELLS:
        for (i, j), value in np.ndenumerate(matrix):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize="xx-small",
                        color="black" if value > 0.6 else "white")
    return image


def _matrix(rows: pd.DataFrame, row_keys: list, col_keys: list, row_of, col_of) -> np.ndarray:
    """(len(row_keys), len(col_keys)) of ``value``; NaN where the CSV holds no such pair."""
    lookup = {(row_of(r), col_of(r)): float(r.value) for r in rows.itertuples()}
    return np.array([[lookup.get((a, b), np.nan) for b in col_keys] for a in row_keys])


def _grid(style: FigureStyle, count: int, cells: int):
    cols = min(count, 4 if style.paper else 5)
    width = None if style.paper else min(2.6 * cols + 1.4 + 0.08 * cells, 18.0)
    return style.subplots(-(-count // cols), cols, aspect=1.0, extra_height=1.2 + 0.06 * cells, width=width)


def plot_layers(out_dir: Path, frame: pd.DataFrame, kernel: str, style: FigureStyle, suffix: str) -> list[Path]:
    """``cka_layers<suffix>``: each model's own layer x layer CKA (the diagonal is 1)."""
    entities = _entities(frame)
    own = frame[(frame["model"] == frame["other_model"]) & (frame["weights"] == frame["other_weights"])]
    layers_of = {e: list(dict.fromkeys(own.loc[(own["model"] == e[0]) & (own["weights"] == e[1]), "layer"]))
                 for e in entities}
    cells = max(len(v) for v in layers_of.values())
    fig, axes = _grid(style, len(entities), cells)
    image = None
    for ax, entity in zip(axes.ravel(), entities):
        rows = own[(own["model"] == entity[0]) & (own["weights"] == entity[1])]
        layers = layers_of[entity]
        matrix = _matrix(rows, layers, layers, lambda r: r.layer, lambda r: r.other_layer)
        image = _draw(ax, matrix, layers, style.cmap)
        ax.set_title(entity_label(*entity), fontsize="small")
    for ax in axes.ravel()[len(entities):]:
        ax.set_axis_off()
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label=COLOURBAR_LABEL)
    annotate(fig, f"{kernel} CKA between the layers of each model", frame)
    return save_figure(fig, out_dir / f"cka_layers{suffix}")


def stage_layers(frame: pd.DataFrame) -> dict[str, dict[tuple[str, str], str]]:
    """stage -> {(model, weights): the layer that stands for it}: the stage output itself, or the last
    block of the stage (layers in CSV order); only stages every model has."""
    out: dict[str, dict[tuple[str, str], str]] = {}
    for (model, weights), rows in frame.groupby(["model", "weights"], sort=False):
        for layer in dict.fromkeys(rows["layer"].astype(str)):
            out.setdefault(stage_of(layer), {})[(str(model), str(weights))] = layer
    count = len(_entities(frame))
    return {stage: chosen for stage, chosen in out.items() if len(chosen) == count}


def plot_models(out_dir: Path, frame: pd.DataFrame, kernel: str, style: FigureStyle, suffix: str) -> list[Path]:
    """``cka_models<suffix>``: per stage, CKA between every two models at that stage."""
    entities = _entities(frame)
    stages = stage_layers(frame)
    if not stages:
        return []
    labels = [entity_label(*e) for e in entities]
    fig, axes = _grid(style, len(stages), len(entities))
    image = None
    for ax, (stage, chosen) in zip(axes.ravel(), stages.items()):
        rows = frame[[chosen.get((str(m), str(w))) == layer and chosen.get((str(om), str(ow))) == other
                      for m, w, layer, om, ow, other in zip(frame["model"], frame["weights"], frame["layer"],
                                                            frame["other_model"], frame["other_weights"],
                                                            frame["other_layer"])]]
        matrix = _matrix(rows, entities, entities, lambda r: (str(r.model), str(r.weights)),
                         lambda r: (str(r.other_model), str(r.other_weights)))
        image = _draw(ax, matrix, labels, style.cmap)
        ax.set_title(stage.replace("stage", "stage "), fontsize="small")
    for ax in axes.ravel()[len(stages):]:
        ax.set_axis_off()
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label=COLOURBAR_LABEL)
    annotate(fig, f"{kernel} CKA between models, stage by stage", frame)
    return save_figure(fig, out_dir / f"cka_models{suffix}")


def plot_cka(out_dir: str | Path, probe: str = "cka", *, sources: Sequence[Path] | None = None,
             style: FigureStyle | None = None) -> list[Path]:
    """Draw every CKA figure of a run folder (or several, drawn together) from ``cka.csv``: per kernel
    ``cka_layers`` and, with more than one model (or an init copy), ``cka_models``; files of kernels
    after the first carry ``_<kernel>``."""
    out_dir, folders, style, frame = open_runs(out_dir, sources, style, "cka.csv", probe, ("model", "weights", "layer", "other_model", "other_weights",
                                                  "other_layer", "kernel", "metric", "value"))
    frame = frame[frame["metric"] == "cka"]
    if not len(frame):
        raise UsageError(f"{folders[0] / 'cka.csv'} holds no cka rows (nothing to draw): the file is damaged; rerun "
                         "the probe")
    written: list[Path] = []
    with style.context():
        for number, kernel in enumerate(dict.fromkeys(frame["kernel"].astype(str))):
            rows = frame[frame["kernel"] == kernel]
            suffix = "" if number == 0 else f"_{kernel}"
            written += plot_layers(out_dir, rows, kernel, style, suffix)
            if len(_entities(rows)) > 1:
                written += plot_models(out_dir, rows, kernel, style, suffix)
    return written
