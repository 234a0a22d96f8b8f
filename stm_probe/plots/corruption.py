"""Corruption figures, drawn only from ``corruption.csv``:

* ``corruption_<family>`` (noise, blur, weather, digital): a panel per corruption of the family,
  top-1 error vs severity (severity 0 = the clean images) or, without labels, the flip rate vs
  severity; one line per model with its 95% Wilson band.
* ``corruption_heatmap``: models x corruptions, each cell the model's CE (AlexNet = 100; mCE in a
  last column) where the run has it, else the mean error (or flip rate) over the severities run.
* ``corruption_examples`` (runs that corrupted on the fly), drawn only from
  ``corruption_examples.npz``: the run's first image, clean and under each of the 19 corruptions at
  severities 1-5 (the pixels the models saw for it), a row per corruption.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..core.corruption_metrics import family_of, imagenet_c_facts
from ..errors import UsageError
from .figures import lines_with_ci, model_palette, row_label, save_figure, weights_in_labels
from ..runtime.results import load_npz
from ..probes.corruption import EXAMPLES_FILE
from . import open_runs
from .style import FigureStyle, annotate

HEATMAP_CMAP = "cividis_r"  # bright = low error: better is brighter
EXAMPLE_FIELDS = ("clean", "images", "corruptions", "severities", "path")
METRIC_LABELS = {"error": "top-1 error (%)", "flip_rate": "flip rate vs clean (%)", "ce": "CE (AlexNet = 100)",
                 "mean_error": "mean error over severities (%)", "mean_flip_rate": "mean flip rate over severities (%)"}


def plot_corruption(out_dir: str | Path, probe: str = "corruption", *, sources: Sequence[Path] | None = None,
                    style: FigureStyle | None = None) -> list[Path]:
    """Draw the family figures and the heat map of the run(s) (see the module docstring)."""
    out_dir, folders, style, frame = open_runs(out_dir, sources, style, f"{probe}.csv", probe, ("model", "weights", "corruption", "severity", "metric",
                                                       "value", "ci_low", "ci_high"))
    known = set(imagenet_c_facts()["corruptions"]) | set(imagenet_c_facts()["extra_corruptions"]) | {"clean", "all"}
    unknown = sorted(set(frame["corruption"].astype(str)) - known)
    if unknown:
        raise UsageError(f"{folders[0] / f'{probe}.csv'} names an unknown corruption {unknown[0]!r}: the file is "
                         "damaged; rerun the probe")
    per_unit = frame[~frame["corruption"].isin(["all"]) & frame["severity"].notna()].copy()
    per_unit["severity"] = pd.to_numeric(per_unit["severity"], errors="coerce")
    if per_unit["severity"].isna().any():
        raise UsageError(f"{folders[0] / f'{probe}.csv'} holds a severity that is not a number: the file is damaged; "
                         "rerun the probe")
    written: list[Path] = []
    with style.context():
        palette = model_palette(list(dict.fromkeys(frame["model"])))
        for family in ("noise", "blur", "weather", "digital"):
            written += _family_figure(out_dir, per_unit, family, palette, style)
        written += _heatmap(out_dir, frame, per_unit, style)
        if (out_dir / EXAMPLES_FILE).is_file():
            written += plot_examples(out_dir / EXAMPLES_FILE, out_dir / "corruption_examples", style)
    return written


def load_examples(npz: Path) -> dict[str, np.ndarray]:
    """The arrays of ``corruption_examples.npz`` (never unpickled): ``clean`` (H, W, 3) uint8, ``images``
    (corruptions, severities, H, W, 3) uint8, ``corruptions``, ``severities``, ``path``; UsageError naming
    the file when it is unreadable, changed since its run, or inconsistent."""
    arrays = load_npz(npz, EXAMPLE_FIELDS)
    shape = arrays["images"].shape
    if shape[:2] != (len(arrays["corruptions"]), len(arrays["severities"])) or shape[2:] != arrays["clean"].shape:
        raise UsageError(f"{npz} lacks fields or its arrays disagree in shape: the file is damaged; rerun the probe")
    return arrays


def plot_examples(npz: Path, stem: Path, style: FigureStyle | None = None) -> list[Path]:
    """A row per corruption: the clean image, then severities 1-5 (pixels shown as they are)."""
    style = style or FigureStyle()
    d = load_examples(npz)
    rows, cols = len(d["corruptions"]), len(d["severities"]) + 1
    width = style.width(2) if style.paper else 1.25 * cols
    fig, axes = style.subplots(rows, cols, aspect=1.0, width=width)
    for r, name in enumerate(d["corruptions"]):
        for c in range(cols):
            ax = axes[r, c]
            ax.imshow(d["clean"] if c == 0 else d["images"][r, c - 1], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[:].set_visible(False)
            if r == 0:
                ax.set_title("clean" if c == 0 else f"severity {int(d['severities'][c - 1])}", fontsize="small")
        axes[r, 0].set_ylabel(str(name).replace("_", " "), fontsize="small")
    fig.suptitle(f"ImageNet-C corruptions of {Path(str(d['path'])).name} ({d['clean'].shape[1]} px)")
    return save_figure(fig, stem)


def _curve_metric(rows: pd.DataFrame) -> str:
    return "error" if (rows["metric"] == "error").any() else "flip_rate"


def _family_figure(out_dir: Path, per_unit: pd.DataFrame, family: str, palette: dict, style: FigureStyle) -> list[Path]:
    members = [c for c in dict.fromkeys(per_unit["corruption"]) if c != "clean" and family_of(c) == family]
    if not members:
        return []
    metric = _curve_metric(per_unit)
    clean = per_unit[(per_unit["corruption"] == "clean") & (per_unit["metric"] == metric)]
    cols = min(len(members), 5)
    fig, axes = style.subplots(-(-len(members) // cols), cols)
    handles: dict[str, object] = {}
    for ax, corruption in zip(axes.ravel(), members):
        rows = per_unit[(per_unit["corruption"] == corruption) & (per_unit["metric"] == metric)]
        rows = pd.concat([clean, rows]).sort_values("severity")  # severity 0: the clean images
        handles.update(lines_with_ci(ax, rows, "severity", palette))
        ax.set_title(corruption.replace("_", " "))
        ax.set_xlabel("severity (0 = clean)" if len(clean) else "severity")
        ax.set_ylabel(METRIC_LABELS[metric])
        ax.set_xticks(sorted(rows["severity"].unique()))
    for ax in axes.ravel()[len(members):]:
        ax.set_axis_off()
    style.legend(fig, list(handles.values()), list(handles))
    annotate(fig, f"{family} corruptions: {METRIC_LABELS[metric]} vs severity (bands: 95% CI)", per_unit)
    return save_figure(fig, out_dir / f"corruption_{family}")


def _heatmap(out_dir: Path, frame: pd.DataFrame, per_unit: pd.DataFrame, style: FigureStyle) -> list[Path]:
    """Models x corruptions of CE (+ mCE), or of the mean over severities of the error (flip rate)."""
    labels = list(dict.fromkeys(zip(frame["model"], frame["weights"])))
    split = weights_in_labels(frame)
    ce = frame[frame["metric"] == "ce"]
    if len(ce):
        metric, columns = "ce", list(dict.fromkeys(ce["corruption"]))
    else:
        unit_metric = _curve_metric(per_unit)
        metric = f"mean_{unit_metric}"
        columns = [c for c in dict.fromkeys(per_unit["corruption"]) if c != "clean"]
    mce = frame[(frame["metric"] == "mce") & (frame["corruption"] == "all")]
    table = np.full((len(labels), len(columns) + (len(mce) > 0)), np.nan)
    for r, (model, weights) in enumerate(labels):
        own = frame[(frame["model"] == model) & (frame["weights"] == weights)]
        for c, corruption in enumerate(columns):
            if metric == "ce":
                hit = own[(own["metric"] == "ce") & (own["corruption"] == corruption)]["value"]
            else:  # every unit holds the same images: the mean of the unit rates is the per-image mean
                hit = per_unit[(per_unit["model"] == model) & (per_unit["weights"] == weights)
                               & (per_unit["corruption"] == corruption)
                               & (per_unit["metric"] == metric.removeprefix("mean_"))]["value"]
                hit = pd.Series([hit.mean()]) if len(hit) else hit
            if len(hit):
                table[r, c] = float(hit.iloc[0])
        if len(mce):
            hit = own[(own["metric"] == "mce") & (own["corruption"] == "all")]["value"]
            if len(hit):
                table[r, -1] = float(hit.iloc[0])
    names = [c.replace("_", " ") for c in columns] + (["mCE"] if len(mce) else [])
    width = style.width(2) if style.paper else min(2.0 + 0.55 * len(names), 18.0)
    fig, axes = style.subplots(1, 1, aspect=(0.3 * len(labels) + 0.3) / width, extra_height=1.8, width=width)
    ax = axes[0, 0]
    finite = table[np.isfinite(table)]
    vmax = max(100.0, float(finite.max())) if metric == "ce" and finite.size else 100.0
    image = ax.imshow(table, cmap=HEATMAP_CMAP, vmin=0, vmax=vmax, aspect="auto", interpolation="nearest")
    for (r, c), value in np.ndenumerate(table):
        if np.isfinite(value):
            ax.text(c, r, f"{value:.0f}", ha="center", va="center", fontsize="x-small",
                    color="white" if value > 0.55 * vmax else "black")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right")
    ax.set_yticks(range(len(labels)), [row_label(m, w, split) for m, w in labels])
    ax.spines[:].set_visible(False)
    ax.tick_params(length=0)
    fig.colorbar(image, ax=ax, shrink=0.8, label=METRIC_LABELS[metric])
    annotate(fig, f"{METRIC_LABELS[metric]} per model and corruption", frame)
    return save_figure(fig, out_dir / "corruption_heatmap")
