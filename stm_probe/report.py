"""Tidy CSV outputs and figures: written atomically, figures drawn only from saved data files."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from .runs import atomic_path

# columns every analysis CSV starts with (see LoadedModel.columns)
ID_COLUMNS = ("model", "stm", "size", "weights")


def write_csv(path: str | Path, rows: Iterable[dict], columns: Sequence[str]) -> pd.DataFrame:
    """Write ``rows`` as a tidy CSV with exactly ``columns`` in that order (atomically)."""
    frame = pd.DataFrame(list(rows))
    missing = [c for c in columns if c not in frame.columns]
    if missing and len(frame):
        raise ValueError(f"rows lack columns {missing}")
    frame = frame.reindex(columns=list(columns))
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return frame


def write_frame(path: str | Path, frame: pd.DataFrame) -> None:
    """Write a DataFrame as CSV (no index), atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


NUMERIC_COLUMNS = ("value", "ci_low", "ci_high", "n_images")


def read_results(path: str | Path, required: Sequence[str] = ("model", "metric", "value")) -> pd.DataFrame:
    """Read a run's tidy CSV for plotting, refusing (UsageError, one line naming the file) a file
    that is missing, empty, header-only, not text, lacks ``required`` columns, or holds non-numeric
    or infinite numbers where numbers belong."""
    from .errors import UsageError

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path} not found: give the --out folder of a finished run")
    try:
        frame = pd.read_csv(path)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        reason = "it is empty" if isinstance(exc, pd.errors.EmptyDataError) else f"it is not a readable CSV ({type(exc).__name__})"
        raise UsageError(f"{path}: {reason}; rerun the probe to rewrite it") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise UsageError(f"{path} lacks the column(s) {', '.join(missing)}: it is not this probe's CSV, or damaged")
    if not len(frame):
        raise UsageError(f"{path} holds a header but no rows: nothing to draw; rerun the probe")
    for column in [c for c in NUMERIC_COLUMNS if c in frame.columns]:
        numbers = pd.to_numeric(frame[column], errors="coerce")
        bad = numbers.isna() & frame[column].notna()
        if bad.any():
            raise UsageError(f"{path}: column {column!r} holds {frame[column][bad].iloc[0]!r} (row {int(bad.idxmax()) + 2}),"
                             " not a number: the file is damaged; rerun the probe")
        if numbers.isin([float("inf"), float("-inf")]).any():
            raise UsageError(f"{path}: column {column!r} holds an infinite value: the file is damaged; rerun the probe")
        frame[column] = numbers
    if frame["value"].isna().all():
        raise UsageError(f"{path}: every value is empty: nothing to draw")
    return frame


def load_array(path: str | Path) -> "np.ndarray":
    """A numeric .npy array (never unpickled); UsageError naming the file when missing or not numeric."""
    import numpy as np

    from .errors import UsageError

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path} not found: the run folder is incomplete; rerun the probe (or --resume it)")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UsageError(f"{path} is not a numeric .npy array ({' '.join(str(exc).split())[:80]}): rerun the probe") from None
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise UsageError(f"{path} holds {'non-finite' if np.issubdtype(array.dtype, np.number) else 'non-numeric'} "
                         "values: the file is damaged; rerun the probe")
    return array


def save_figure(fig, stem: str | Path, formats: Sequence[str] = ("png", "pdf"), dpi: int = 150) -> list[Path]:
    """Save a matplotlib figure as ``stem.png`` and ``stem.pdf`` (atomically) and close it."""
    import matplotlib.pyplot as plt

    paths = []
    for fmt in formats:
        path = Path(f"{stem}.{fmt}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def model_palette(models: Sequence[str]) -> dict[str, tuple]:
    """One colour per model, in order (tab10 up to 10 models, husl beyond)."""
    import seaborn as sns

    return dict(zip(models, sns.color_palette("tab10" if len(models) <= 10 else "husl", len(models))))


def lines_with_ci(ax, data: pd.DataFrame, x: str, palette: dict[str, tuple], legend: bool = False) -> None:
    """One seaborn line per model of ``value`` vs ``x`` with its ``ci_low``..``ci_high`` band."""
    import seaborn as sns

    sns.lineplot(data=data, x=x, y="value", hue="model", hue_order=list(palette), palette=palette, marker="o",
                 markersize=4, errorbar=None, legend=legend, ax=ax)
    for model, line in data.groupby("model", sort=False):
        ax.fill_between(line[x], line["ci_low"], line["ci_high"], color=palette[model], alpha=0.2, linewidth=0)


def use_headless_backend() -> None:
    """Select matplotlib's Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
