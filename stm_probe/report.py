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


def read_csv(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path)


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
