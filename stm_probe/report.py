"""Tidy CSV outputs and figures: written atomically, figures drawn only from saved data files."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import pandas as pd

if TYPE_CHECKING:
    import numpy as np

from .runs import atomic_path

def write_frame(path: str | Path, frame: pd.DataFrame) -> None:
    """Write a DataFrame as CSV (no index), atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


NUMERIC_COLUMNS = ("value", "ci_low", "ci_high", "n_images")
#: metrics in percent (0..100) and fractions (0..1): a value outside is a damaged file
PERCENT_METRICS = frozenset({"top1", "top5", "consistency", "clean_acc", "robust_acc", "success_rate", "flip_rate",
                             "error", "flip", "shape_hits", "texture_hits", "auc_consistency", "auc_top1"})
FRACTION_METRICS = frozenset({"area_ratio", "area_ratio_raw", "side_ratio", "reached", "shape_bias",
                              "concentration"})
DATA_SUFFIXES = (".csv", ".npy", ".npz")  # run outputs whose sha256 the manifest keeps


def file_checksums(out_dir: Path, paths: Sequence[Path]) -> dict[str, str]:
    """{path relative to out_dir: sha256} of the data files among ``paths`` (for manifest.json);
    hashes are cached by size and mtime, so the figures' `verify_file` does not read them again."""
    from .runs import file_sha256

    sums = {}
    for path in paths:
        if Path(path).suffix in DATA_SUFFIXES and Path(path).is_file():
            sums[str(Path(path).relative_to(out_dir))] = file_sha256(path)
    return sums


def verify_file(path: str | Path) -> None:
    """Refuse (UsageError) a run file that is missing, not a file, or changed since its run wrote it.

    The run folder is the file's folder or the one above (``erf/x.npy``); its manifest.json keeps
    the sha256 of every data file. A folder with ``run.json`` but no manifest is an unfinished run.
    """
    import json

    from .errors import UsageError
    from .runs import file_sha256

    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a directory, not a data file: the run folder is damaged; rerun the probe")
    if not path.is_file():
        raise UsageError(f"{path} not found: the run folder is incomplete; rerun the probe (or --resume it)")
    for folder in (path.parent, path.parent.parent):
        manifest = folder / "manifest.json"
        if manifest.is_file():
            try:
                sums = json.loads(manifest.read_text(encoding="utf-8")).get("checksums", {})
            except (ValueError, OSError):
                raise UsageError(f"{manifest} is not readable JSON: the run folder is damaged; rerun the probe") from None
            expected = sums.get(str(path.relative_to(folder)))
            if expected is not None and file_sha256(path) != expected:
                raise UsageError(f"{path} was changed after its run wrote it (sha256 differs from {manifest.name}): "
                                 "rerun the probe to rewrite it")
            return
        if (folder / "run.json").is_file():
            raise UsageError(f"the run in {folder} is unfinished (no manifest.json): finish it with the same command "
                             "and --resume before drawing")


def read_table(path: str | Path, required: Sequence[str], writer: str) -> pd.DataFrame:
    """A CSV with ``required`` columns and at least one row; UsageError naming the file otherwise
    (missing, empty, not text, columns lacking, header only). ``writer``: what to rerun."""
    from .errors import UsageError

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path} not found: rerun {writer}")
    try:
        frame = pd.read_csv(path)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        reason = "it is empty" if isinstance(exc, pd.errors.EmptyDataError) else f"it is not a readable CSV ({type(exc).__name__})"
        raise UsageError(f"{path}: {reason}; rerun {writer} to rewrite it") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise UsageError(f"{path} lacks the column(s) {', '.join(missing)}: it is not the CSV {writer} writes, or damaged")
    if not len(frame):
        raise UsageError(f"{path} holds a header but no rows: nothing to draw; rerun {writer}")
    return frame


def read_results(path: str | Path, required: Sequence[str] = ("model", "metric", "value"),
                 numeric: Sequence[str] = ()) -> pd.DataFrame:
    """Read a run's tidy CSV for plotting, refusing (UsageError, one line naming the file) a file
    that is missing, changed since its run, empty, header-only, not text, lacks ``required``
    columns, holds duplicate rows, text or non-finite numbers where numbers belong (``numeric``
    setting columns too), intervals that do not hold their value, or rates out of range."""
    from .errors import UsageError

    path = Path(path)
    verify_file(path)
    frame = read_table(path, required, "the probe")

    def refuse(column: str, bad: pd.Series, what: str) -> None:
        row = int(bad.idxmax())
        raise UsageError(f"{path}: column {column!r} holds '{frame[column].iloc[row]}' (row {row + 2}), {what}: the "
                         "file is damaged; rerun the probe")

    for column in [c for c in (*NUMERIC_COLUMNS, *numeric) if c in frame.columns]:
        numbers = pd.to_numeric(frame[column], errors="coerce")
        text = numbers.isna() & frame[column].notna()
        if text.any():
            refuse(column, text, "not a number")
        infinite = numbers.isin([float("inf"), float("-inf")])
        if infinite.any():
            refuse(column, infinite, "an infinite value")
        frame[column] = numbers
    if frame["value"].isna().any():
        refuse("value", frame["value"].isna(), "an empty value")
    if "model" in frame.columns and (frame["model"].isna() | (frame["model"].astype(str).str.strip() == "")).any():
        refuse("model", frame["model"].isna() | (frame["model"].astype(str).str.strip() == ""), "an empty model name")
    if "metric" in frame.columns:
        percent = frame["metric"].isin(PERCENT_METRICS) & ~frame["value"].between(0, 100)
        fraction = frame["metric"].isin(FRACTION_METRICS) & ~frame["value"].between(0, 1)
        if (percent | fraction).any():
            refuse("value", percent | fraction, "out of its metric's range")
    if {"ci_low", "ci_high"} <= set(frame.columns):
        tol = 1e-9 * (1 + frame["value"].abs())
        outside = (frame["ci_low"] > frame["value"] + tol) | (frame["ci_high"] < frame["value"] - tol)
        if outside.any():
            refuse("ci_low", outside, "an interval that does not hold its value")
    keys = [c for c in frame.columns if c not in ("value", "ci_low", "ci_high", "n_images", "n_skipped", "repeats",
                                                  "repeat_mean", "repeat_low", "repeat_high")]
    duplicated = frame.duplicated(subset=keys)
    if duplicated.any():
        refuse("metric", duplicated, "a row that appears twice")
    return frame


def load_npz(npz: str | Path, fields: Sequence[str]) -> dict[str, "np.ndarray"]:
    """The arrays of a run's ``.npz`` file (never unpickled), checked against the manifest's sha256
    first; UsageError naming the file when it is unreadable, changed since its run, or lacks one of
    ``fields``."""
    import numpy as np

    from .errors import UsageError

    verify_file(npz)
    try:
        with np.load(npz, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError) as exc:
        raise UsageError(f"{npz} is not a readable example file ({type(exc).__name__}): rerun the probe") from None
    missing = [k for k in fields if k not in arrays]
    if missing:
        raise UsageError(f"{npz} lacks {', '.join(missing)}: the file is damaged; rerun the probe")
    return arrays


def load_array(path: str | Path, ndim: int | None = None) -> "np.ndarray":
    """A finite, real, numeric .npy array (never unpickled) of ``ndim`` dimensions; UsageError naming
    the file otherwise (missing, changed since its run, object, complex, empty, wrong shape)."""
    import numpy as np

    from .errors import UsageError

    path = Path(path)
    verify_file(path)
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UsageError(f"{path} is not a numeric .npy array ({' '.join(str(exc).split())[:80]}): rerun the probe") from None
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise UsageError(f"{path} holds non-numeric or complex values: the file is damaged; rerun the probe")
    if array.size == 0 or (ndim is not None and array.ndim != ndim):
        raise UsageError(f"{path} holds an array of shape {array.shape}, not a {ndim}-D map: the file is damaged; "
                         "rerun the probe")
    if not np.isfinite(array).all():
        raise UsageError(f"{path} holds non-finite values: the file is damaged; rerun the probe")
    return array


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

    from .plots.style import figure_formats

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

    from .plots.style import model_look

    return {m: to_rgb(model_look(m).colour) for m in dict.fromkeys(models)}


#: curves closer than this fraction of the axis' value range count as identical (`lines_with_ci`)
OVERLAP_TOLERANCE = 0.005


def _curve_label(model: str, weights: str | None) -> str:
    return model if weights is None else f"{model} ({'init' if weights == 'random-init' else weights})"


def lines_with_ci(ax, data: pd.DataFrame, x: str, palette: dict[str, tuple], legend: bool = False,
                  note_overlap: bool = True) -> list[tuple[str, object]]:
    """One line per model of ``value`` vs ``x`` with its ``ci_low``..``ci_high`` band (NaN bounds:
    no band). Colour from ``palette``, marker and dashes by the model's size (fixed per model);
    a model measured with several weights gets one line per weights (hollow markers for
    random-init). Identical curves stay visible: each later curve is drawn thinner with smaller
    markers on top of the earlier ones, and ``note_overlap`` writes which curves coincide (within
    0.5% of the value range) in the panel. Returns [(label, legend handle)] in drawing order."""
    import matplotlib
    import numpy as np
    from matplotlib.lines import Line2D

    from .plots.style import model_look

    split = "weights" in data.columns and data["weights"].nunique() > 1
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
        ax.plot(line[x], line["value"], color=colour, marker=look.marker, linestyle=look.linestyle,
                            markersize=base_ms * 1.5 * shrink, linewidth=base_lw * 1.6 * shrink, alpha=0.9,
                            markerfacecolor="white" if hollow else colour, zorder=2 + k)
        if {"ci_low", "ci_high"} <= set(line.columns):
            ax.fill_between(line[x], line["ci_low"].astype(float), line["ci_high"].astype(float), color=colour,
                            alpha=0.15, linewidth=0, zorder=1)
        handles.append((label, Line2D([], [], color=colour, marker=look.marker, linestyle=look.linestyle,
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

    from .plots.style import short_name

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
