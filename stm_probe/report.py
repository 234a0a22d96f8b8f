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


def use_headless_backend() -> None:
    """Select matplotlib's Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
