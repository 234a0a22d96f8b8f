"""Figures drawn only from saved data files (CSV/npy), so they can be redrawn without recomputing.

Every probe's plot function is ``plot_<probe>(out_dir, probe, *, sources=None, style=None)``: it
reads the run folders ``sources`` (default: ``out_dir`` alone) and writes its figures into
``out_dir``. Several folders of the same probe and settings are drawn together (`read_runs`):
their rows are concatenated, with a ``run_folder`` column telling where each model's array files lie.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..errors import UsageError

FOLDER_COLUMN = "run_folder"
#: manifest entries that must agree for runs to be drawn together (besides the probe settings)
SHARED_FACTS = ("input_size", "seed", "images")


def _manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _facts(manifest: dict[str, Any]) -> dict[str, Any]:
    settings = (manifest.get("probe") or {}).get("settings") or {}
    facts = {f"setting {k}": v for k, v in settings.items()}
    facts.update({k: manifest.get(k) for k in SHARED_FACTS if k in manifest})
    return facts


def _show(value: Any) -> str:
    if isinstance(value, list) and len(value) > 3:
        return f"{len(value)} entries"
    return json.dumps(value, default=str)


def check_runs(probe: str, folders: Sequence[Path]) -> None:
    """Refuse (one line) folders that are not runs of ``probe`` or whose settings, input size,
    seed or images differ from the first folder's (their numbers are not comparable)."""
    first: tuple[Path, dict[str, Any]] | None = None
    for folder in folders:
        if not Path(folder).is_dir():
            raise UsageError(f"{folder} is not a folder: give the --out folder of a `stm-probe {probe}` run")
        manifest = _manifest(Path(folder))
        if manifest is None:
            continue
        analysis = manifest.get("analysis")
        if analysis and analysis != probe:
            raise UsageError(f"{folder} holds a `stm-probe {analysis}` run, not {probe}: draw each probe's runs "
                             f"with `stm-probe plot {analysis} ...`")
        facts = _facts(manifest)
        if first is None:
            first = (Path(folder), facts)
            continue
        for key in sorted(set(facts) | set(first[1])):
            if facts.get(key) != first[1].get(key):
                raise UsageError(f"{folder} and {first[0]} differ in {key} ({_show(facts.get(key))} vs "
                                 f"{_show(first[1].get(key))}): only runs with the same settings and images can be "
                                 "drawn together")


def read_runs(folders: Sequence[str | Path], name: str, probe: str, required: Sequence[str],
              numeric: Sequence[str] = ()) -> pd.DataFrame:
    """The rows of ``<folder>/<name>`` of every folder (each checked by `stm_probe.runtime.results.read_results`),
    concatenated with a ``run_folder`` column; refused when the folders' runs are not comparable
    (`check_runs`) or a model (with the same weights) appears in two of them."""
    from ..probes import metric_ranges
    from ..runtime.results import read_results

    folders = [Path(f) for f in folders]
    if len(folders) > 1:
        check_runs(probe, folders)
    frames = []
    seen: dict[tuple, Path] = {}
    for folder in folders:
        frame = read_results(folder / name, required, numeric, metric_ranges(probe))
        keys = ["model", "weights"] if "weights" in frame.columns else ["model"]
        for key in frame[keys].drop_duplicates().itertuples(index=False):
            if tuple(key) in seen:
                raise UsageError(f"{key[0]} appears in both {seen[tuple(key)]} and {folder}: draw runs of distinct "
                                 "models together (or give one of the folders)")
            seen[tuple(key)] = folder
        frames.append(frame.assign(**{FOLDER_COLUMN: str(folder)}))
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def open_runs(out_dir: str | Path, sources: Sequence[Path] | None, style: Any, name: str, probe: str,
              required: Sequence[str], numeric: Sequence[str] = ()) -> tuple[Path, list[Path], Any, pd.DataFrame]:
    """What every figure function starts with: (its out folder, the run folders to draw (``sources`` or the out
    folder), the figure style (given, else the first run's own: `style.resolve_style`), their checked rows
    (`read_runs`))."""
    from .style import resolve_style

    out_dir = Path(out_dir)
    folders = [Path(f) for f in (sources or [out_dir])]
    style = style or resolve_style(folders[0])
    return out_dir, folders, style, read_runs(folders, name, probe, required, numeric)


def folder_of(rows: pd.DataFrame, model: str, default: str | Path) -> Path:
    """The run folder holding ``model``'s array files: its ``run_folder`` entry, else ``default``."""
    if FOLDER_COLUMN in rows.columns:
        own = rows.loc[rows["model"] == model, FOLDER_COLUMN]
        if len(own):
            return Path(own.iloc[0])
    return Path(default)
