"""Results I/O: tidy CSV tables written atomically with their checksums, and read back (checked) by
plots, compare and the API."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import pandas as pd

if TYPE_CHECKING:
    import numpy as np

from ..files import atomic_path

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
    from ..files import file_sha256

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

    from ..errors import UsageError
    from ..files import file_sha256

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
    from ..errors import UsageError

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
                 numeric: Sequence[str] = (), ranges: Mapping[str, tuple[float, float]] | None = None) -> pd.DataFrame:
    """Read a run's tidy CSV for plotting, refusing (UsageError, one line naming the file) a file
    that is missing, changed since its run, empty, header-only, not text, lacks ``required``
    columns, holds duplicate rows, text or non-finite numbers where numbers belong (``numeric``
    setting columns too), intervals that do not hold their value, or values out of their metric's range
    (percent and fraction metrics of the paper's probes, and ``ranges``: metric -> (low, high) a probe
    declares in its ``metric_ranges``)."""
    from ..errors import UsageError

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
        declared = pd.Series(False, index=frame.index)
        for metric, (low, high) in (ranges or {}).items():
            declared |= (frame["metric"] == metric) & ~frame["value"].between(low, high)
        if (percent | fraction | declared).any():
            refuse("value", percent | fraction | declared, "out of its metric's range")
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

    from ..errors import UsageError

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

    from ..errors import UsageError

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
