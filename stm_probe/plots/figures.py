"""Figure helpers shared by every plot: a figure without pyplot, atomic saving in the style's formats,
model colours and lines with confidence bands."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import pandas as pd

if TYPE_CHECKING:
    import numpy as np

from ..files import atomic_path


def new_figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] | None = None, squeeze: bool = False,
               **kwargs: Any) -> tuple[Any, Any]:
    """A figure and its axes (``squeeze=False``: an (nrows, ncols) array) drawn with matplotlib's
    object API: no pyplot state and no backend chosen or switched, so a notebook's backend is left
    as it was and no figure is shown. ``layout`` and the subplot keywords (``sharey``, ...) as
    ``plt.subplots``; rcParams (constrained layout, dpi) apply as there."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout=kwargs.pop("layout", None))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze, **kwargs)


def save_figure(fig, stem: str | Path, formats: Sequence[str] | None = None, dpi: int | None = None) -> list[Path]:
    """Save a matplotlib figure as ``stem.<format>`` (atomically) and close it; ``formats``: those of
    the style drawn in (`stm_probe.plots.style.figure_formats`: PNG, and PDF with the paper style or
    ``--formats``) unless given.

    Fonts are embedded as TrueType (Type 42) in PDF/PS. A figure laid out by constrained layout
    (every figure of `stm_probe.plots`) keeps its exact size (paper widths); any other is cropped
    to its contents. ``dpi``: the style's (rcParams savefig.dpi) unless given.
    """
    import sys

    import matplotlib
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    from .style import figure_formats

    formats = tuple(formats or figure_formats())
    exact = isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine)
    paths = []
    with matplotlib.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42}):
        for fmt in formats:
            path = Path(f"{stem}.{fmt}")
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=dpi or _style_dpi(),
                            bbox_inches=None if exact else "tight", metadata=_fixed_metadata(fmt))
            paths.append(path)
    if getattr(fig.canvas, "manager", None) is not None and "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close(fig)  # a caller's pyplot figure (ours are never in pyplot)
    return paths


def _style_dpi() -> float:
    """The style's resolution (rcParams savefig.dpi), 150 outside any `stm_probe.plots.style` context."""
    import matplotlib

    dpi = matplotlib.rcParams["savefig.dpi"]
    return 150.0 if dpi == "figure" else float(dpi)


def _fixed_metadata(fmt: str) -> dict | None:
    """No creation date in PDFs, so a redraw from the same files gives the same bytes."""
    return {"CreationDate": None} if fmt == "pdf" else None


def model_palette(models: Sequence[str]) -> dict[str, tuple]:
    """{model: RGB colour} in the given order; each model's colour is fixed by its name (its STM
    for unified models, a hash for others: `stm_probe.plots.style.model_look`), never by order."""
    from matplotlib.colors import to_rgb

    from .style import model_look

    return {m: to_rgb(model_look(m).colour) for m in dict.fromkeys(models)}


#: curves closer than this fraction of the axis' value range count as identical (`lines_with_ci`)
OVERLAP_TOLERANCE = 0.005


def weights_in_labels(frame: pd.DataFrame) -> bool:
    """Whether a figure names the weights beside each model: where a model was measured with several
    weights, or random-init models stand beside trained ones. Otherwise each model has one label and
    the figure's note lists the weights (every model trained on its own checkpoint, as in a study,
    would else carry a line-long label that crowds the axes)."""
    if "weights" not in frame.columns or not len(frame):
        return False
    random_init = frame["weights"].eq("random-init")
    several = frame.groupby("model")["weights"].nunique().max() > 1
    return bool(several or (random_init.any() and not random_init.all()))


def row_label(model: str, weights: str, with_weights: bool) -> str:
    """A model's row label in a table-like figure: its short name, with its weights when ``with_weights``."""
    from .style import short_name

    return short_name(model) + (f" ({weights})" if with_weights else "")


def _curve_label(model: str, weights: str | None) -> str:
    return model if weights is None else f"{model} ({'init' if weights == 'random-init' else weights})"


def lines_with_ci(ax, data: pd.DataFrame, x: str, palette: dict[str, tuple], legend: bool = False,
                  note_overlap: bool = True, points: bool = False) -> list[tuple[str, object]]:
    """One line per model of ``value`` vs ``x`` with its ``ci_low``..``ci_high`` band (NaN bounds:
    no band); with ``points`` (or where a model has one x only) markers with error bars and no line,
    so nothing is drawn between values that were not measured. Colour from ``palette``, marker and dashes by the model's size (fixed per model);
    a model measured with several weights gets one line per weights (hollow markers for
    random-init). Identical curves stay visible: each later curve is drawn thinner with smaller
    markers on top of the earlier ones, and ``note_overlap`` writes which curves coincide (within
    0.5% of the value range) in the panel. Returns [(label, legend handle)] in drawing order."""
    import matplotlib
    import numpy as np
    from matplotlib.lines import Line2D

    from .style import model_look

    split = weights_in_labels(data)
    keys = ["model", "weights"] if split else ["model"]
    order = {m: i for i, m in enumerate(palette)}
    groups = sorted(data.groupby(keys, sort=False), key=lambda g: order.get(g[0][0], len(order)))
    base_ms, base_lw = matplotlib.rcParams["lines.markersize"], matplotlib.rcParams["lines.linewidth"]
    handles, curves = [], []
    for k, (key, line) in enumerate(groups):
        model, weights = key[0], (key[1] if split else None)
        line = line.sort_values(x)
        look = model_look(str(model))
        colour = palette.get(model, look.colour)
        shrink = 1.0 - 0.45 * k / max(len(groups) - 1, 1)
        hollow = weights == "random-init"
        label = _curve_label(str(model), weights)
        as_points = points or len(line) == 1
        if as_points:
            values = line["value"].astype(float).to_numpy()
            errors = None
            if {"ci_low", "ci_high"} <= set(line.columns):
                errors = np.vstack([values - line["ci_low"].astype(float).to_numpy(),
                                    line["ci_high"].astype(float).to_numpy() - values])
                errors = np.where(np.isfinite(errors), errors, 0.0)
            ax.errorbar(line[x], values, yerr=errors, color=colour, marker=look.marker, linestyle="none",
                        markersize=base_ms * 1.5 * shrink, elinewidth=base_lw * shrink, capsize=3, alpha=0.9,
                        markerfacecolor="white" if hollow else colour, zorder=2 + k)
        else:
            ax.plot(line[x], line["value"], color=colour, marker=look.marker, linestyle=look.linestyle,
                    markersize=base_ms * 1.5 * shrink, linewidth=base_lw * 1.6 * shrink, alpha=0.9,
                    markerfacecolor="white" if hollow else colour, zorder=2 + k)
        if not as_points and {"ci_low", "ci_high"} <= set(line.columns):
            ax.fill_between(line[x], line["ci_low"].astype(float), line["ci_high"].astype(float), color=colour,
                            alpha=0.15, linewidth=0, zorder=1)
        handles.append((label, Line2D([], [], color=colour, marker=look.marker,
                                      linestyle="none" if as_points else look.linestyle,
                                      markerfacecolor="white" if hollow else colour)))
        curves.append((label, line[x].to_numpy(float), line["value"].to_numpy(float)))
    if legend and handles:
        ax.legend([h for _, h in handles], [lab for lab, _ in handles])
    if note_overlap and len(curves) > 1:
        values = np.concatenate([c[2] for c in curves])
        span = float(np.nanmax(values) - np.nanmin(values)) if np.isfinite(values).any() else 0.0
        tolerance = OVERLAP_TOLERANCE * span if span > 0 else 1e-9
        note = overlap_note(curves, tolerance)
        if note:
            ax.text(0.02, 0.98, note, transform=ax.transAxes, fontsize="x-small", color="0.25", va="top",
                    ha="left", zorder=20, bbox={"facecolor": "white", "alpha": 0.75, "linewidth": 0, "pad": 1.0})
    return handles


def overlap_note(curves: Sequence[tuple[str, "np.ndarray", "np.ndarray"]], tolerance: float) -> str:
    """``curves overlap: a = b`` for the (label, x, y) curves that coincide within ``tolerance``
    at the same x values; '' when none do."""
    import numpy as np

    from .style import short_name

    groups: list[list[int]] = []
    for i, (_, xi, yi) in enumerate(curves):
        for group in groups:
            _, xj, yj = curves[group[0]]
            if xi.shape == xj.shape and np.allclose(xi, xj) and np.all(np.abs(yi - yj) <= tolerance):
                group.append(i)
                break
        else:
            groups.append([i])
    same = [g for g in groups if len(g) > 1]
    if not same:
        return ""
    parts = [" = ".join(short_name(curves[i][0]) for i in g) if len(g) <= 3 else f"{len(g)} curves" for g in same]
    return "curves overlap: " + "; ".join(parts)
