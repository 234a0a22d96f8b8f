"""Adversarial figures, drawn only from ``adversarial.csv`` and ``adversarial_examples/*.npz``:
robust accuracy (or flip rate) vs eps (``adversarial``), a models x eps heat map
(``adversarial_heatmap``), per-model clean / perturbation / adversarial examples
(``adversarial_examples_<model>``) and one grid of the saved images x models
(``adversarial_examples``)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import UsageError
from .figures import lines_with_ci, model_palette, new_figure, row_label, save_figure, weights_in_labels
from ..runtime.results import load_npz
from ..probes.adversarial import examples_path
from . import folder_of, open_runs
from .style import FigureStyle, annotate, log2_axis, short_name, wrap

EXAMPLE_FIELDS = ("clean", "adversarial", "label", "clean_pred", "adv_pred", "clean_prob", "adv_prob", "clean_name",
                  "adv_name", "attack", "norm", "eps")
#: colour map of the models x eps heat map (sequential, colour-blind safe; rates 0..100)
HEATMAP_CMAP = "cividis"


def _metric(frame: pd.DataFrame) -> str:
    return "robust_acc" if (frame["metric"] == "robust_acc").any() else "flip_rate"


def _metric_label(metric: str) -> str:
    return "robust accuracy (%)" if metric == "robust_acc" else "flip rate of top-1 (%)"


def _eps_label(norm: str) -> str:
    return "eps (1/255)" if norm == "Linf" else "eps (L2)"


def _with_clean_point(rows: pd.DataFrame, metric: str, at: float = 0.0) -> pd.DataFrame:
    """Curve of one model x attack with the clean point prepended at eps ``at``: clean accuracy for
    robust_acc (with its CI), 0 for flip_rate."""
    curve = rows[rows["metric"] == metric].sort_values("eps")
    clean = rows[rows["metric"] == "clean_acc"]
    if metric == "robust_acc" and len(clean):
        start = clean.iloc[[0]].assign(eps=at)
    else:
        start = curve.iloc[[0]].assign(eps=at, value=0.0, ci_low=0.0, ci_high=0.0)
    return pd.concat([start, curve], ignore_index=True)


def _panel_title(attack: str, norm: str, rows: pd.DataFrame) -> str:
    steps = rows["steps"].dropna()
    count = int(steps.iloc[0]) if len(steps) else None
    return f"{attack} ({norm}" + (f", {count} step{'s' if count > 1 else ''})" if count else ")")


def plot_curves(out_dir: Path, frame: pd.DataFrame, style: FigureStyle | None = None) -> list[Path]:
    """``adversarial.png/.pdf``: one panel per attack (and norm), one line per model with its
    95% CI band (Wilson), or points with error bars where one eps was run; robust accuracy when the
    run had labels, else flip rate. Eps that
    double are drawn on a log2 axis, the clean point (eps 0) half a step left of the smallest."""
    style = style or FigureStyle()
    metric = _metric(frame)
    panels = list(frame.groupby(["attack", "norm"], sort=False))
    colours = model_palette(list(dict.fromkeys(frame["model"])))
    cols = min(len(panels), 4)
    fig, axes = style.subplots(-(-len(panels) // cols), cols, sharey=True)
    handles: dict[str, object] = {}
    for ax, ((attack, norm), rows) in zip(axes.ravel(), panels):
        eps = sorted(rows.loc[rows["metric"] == metric, "eps"].unique())
        log = log2_axis(ax, eps)
        clean_at = eps[0] / 2 if log else 0.0
        curves = pd.concat([_with_clean_point(r, metric, clean_at) for _, r in rows.groupby("model", sort=False)])
        # one eps: the clean point and that eps as points with error bars, no line between them
        handles.update(lines_with_ci(ax, curves, "eps", colours, points=len(eps) == 1))
        if log:
            ax.set_xticks([clean_at, *eps], ["clean", *[f"{e:g}" for e in eps]])
        ax.set_title(_panel_title(attack, norm, rows), fontsize="medium")
        ax.set_xlabel(_eps_label(norm))
        ax.set_ylim(-3, 103)
    axes[0][0].set_ylabel(_metric_label(metric))
    for ax in axes.ravel()[len(panels):]:
        ax.set_axis_off()
    style.legend(fig, list(handles.values()), list(handles))
    annotate(fig, f"{_metric_label(metric)} under attack (bands: 95% CI over images)", frame)
    return save_figure(fig, out_dir / "adversarial")


def plot_heatmap(out_dir: Path, frame: pd.DataFrame, style: FigureStyle) -> list[Path]:
    """``adversarial_heatmap.png/.pdf``: per attack (and norm) a models x eps table of robust
    accuracy (or flip rate) in % on one colour scale 0..100, each cell written out; the first
    column is the clean accuracy when the run had labels."""
    metric = _metric(frame)
    panels = list(frame.groupby(["attack", "norm"], sort=False))
    labels = list(dict.fromkeys(zip(frame["model"], frame["weights"])))
    split = weights_in_labels(frame)
    cols = min(len(panels), 2)
    fig, axes = style.subplots(-(-len(panels) // cols), cols, aspect=0.15 + 0.12 * len(labels), extra_height=1.1)
    image = None
    for i, (ax, ((attack, norm), rows)) in enumerate(zip(axes.ravel(), panels)):
        eps = sorted(rows.loc[rows["metric"] == metric, "eps"].unique())
        clean = metric == "robust_acc" and (rows["metric"] == "clean_acc").any()
        table = np.full((len(labels), len(eps) + clean), np.nan)
        for r, (model, weights) in enumerate(labels):
            own = rows[(rows["model"] == model) & (rows["weights"] == weights)]
            if clean and (own["metric"] == "clean_acc").any():
                table[r, 0] = own.loc[own["metric"] == "clean_acc", "value"].iloc[0]
            for c, e in enumerate(eps):
                hit = own[(own["metric"] == metric) & np.isclose(own["eps"], e)]
                if len(hit):
                    table[r, c + clean] = hit["value"].iloc[0]
        image = ax.imshow(table, cmap=HEATMAP_CMAP, vmin=0, vmax=100, aspect="auto", interpolation="nearest")
        for (r, c), value in np.ndenumerate(table):
            if np.isfinite(value):
                ax.text(c, r, f"{value:.0f}", ha="center", va="center", fontsize="x-small",
                        color="black" if value > 55 else "white")
        ax.set_xticks(range(table.shape[1]), (["clean"] if clean else []) + [f"{e:g}" for e in eps])
        ax.set_yticks(range(len(labels)), [row_label(m, w, split) if i % cols == 0 else "" for m, w in labels])
        ax.set_xlabel(_eps_label(norm))
        ax.set_title(_panel_title(attack, norm, rows), fontsize="medium")
        ax.spines[:].set_visible(False)
        ax.tick_params(length=0)
    for ax in axes.ravel()[len(panels):]:
        ax.set_axis_off()
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label=_metric_label(metric))
    annotate(fig, f"{_metric_label(metric)} per model and eps", frame)
    return save_figure(fig, out_dir / "adversarial_heatmap")


def load_examples(npz: Path) -> dict[str, np.ndarray]:
    """The arrays of one ``adversarial_examples/<model>.npz`` (never unpickled); UsageError naming
    the file when it is unreadable, changed since its run, or lacks a field."""
    return load_npz(npz, EXAMPLE_FIELDS)


def _show(ax, image: np.ndarray, title: str, colour: str = "black") -> None:
    ax.imshow(np.clip(image.transpose(1, 2, 0), 0, 1), interpolation="nearest")
    ax.set_title(title, fontsize="x-small", color=colour)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.spines[:].set_visible(False)


def plot_examples(npz: Path, stem: Path, style: FigureStyle | None = None) -> list[Path]:
    """K rows of clean / amplified perturbation / adversarial image with top-1 predictions."""
    d = load_examples(npz)
    k = d["clean"].shape[0]
    unit = "/255" if str(d["norm"]) == "Linf" else ""
    width = (style or FigureStyle()).width(3) if style is not None and style.paper else 7.2
    fig, axes = new_figure(k, 3, figsize=(width, width / 3 * 1.15 * k + 0.5))
    for i, row in enumerate(axes):
        delta = d["adversarial"][i] - d["clean"][i]
        peak = float(np.abs(delta).max())
        amp = 0.5 / peak if peak > 0 else 1.0
        label = f" (label {d['label'][i]})" if d["label"][i] >= 0 else ""
        _show(row[0], d["clean"][i], wrap(f"clean: {d['clean_name'][i]} p={d['clean_prob'][i]:.2g}{label}", fig,
                                          share=0.3))
        _show(row[1], 0.5 + amp * delta, f"perturbation x{amp:.0f}, max {peak * (255 if unit else 1):.3g}{unit}")
        changed = d["adv_pred"][i] != d["clean_pred"][i]
        _show(row[2], d["adversarial"][i], wrap(f"adversarial: {d['adv_name'][i]} p={d['adv_prob'][i]:.2g}", fig,
                                                share=0.3), "#D55E00" if changed else "black")
    fig.suptitle(f"{stem.name.replace('adversarial_examples_', '')}: {d['attack']} {d['norm']} "
                 f"eps {float(d['eps']):g}{unit}")
    return save_figure(fig, stem)


def plot_examples_grid(out_dir: Path, examples: dict[str, dict[str, np.ndarray]], style: FigureStyle,
                       frame: pd.DataFrame | None = None) -> list[Path]:
    """``adversarial_examples.png/.pdf``: rows = the saved images, columns = the clean image and each
    model's adversarial image titled with its top-1 (orange when the attack changed it). The
    models must have saved the same clean images (same run settings), else nothing is drawn
    that would pair the wrong images: UsageError."""
    models = list(examples)
    first = examples[models[0]]
    count = min(len(e["clean"]) for e in examples.values())
    for model in models[1:]:
        if not np.allclose(examples[model]["clean"][:count], first["clean"][:count], atol=1e-6):
            raise UsageError(f"the saved examples of {model} and {models[0]} are not the same images: draw runs "
                             "made with the same data and --save-examples together")
    if count == 0:
        return []
    unit = "/255" if str(first["norm"]) == "Linf" else ""
    cols = len(models) + 1
    width = style.width(cols) if style.paper else 1.7 * cols + 0.4
    fig, axes = new_figure(count, cols, figsize=(width, width / cols * 1.25 * count + 0.6))
    for i, row in enumerate(axes):
        label = int(first["label"][i])
        _show(row[0], first["clean"][i], f"image {i + 1}" + (f" (label {label})" if label >= 0 else ""))
        for ax, model in zip(row[1:], models):
            d = examples[model]
            changed = d["adv_pred"][i] != d["clean_pred"][i]
            _show(ax, d["adversarial"][i], wrap(f"{d['adv_name'][i]} p={d['adv_prob'][i]:.2g}", fig, share=1 / cols),
                  "#D55E00" if changed else "black")
    for ax, name in zip(axes[0], ["clean", *[short_name(m) for m in models]]):
        ax.set_title(f"{name}\n{ax.get_title()}", fontsize="x-small", color=ax.title.get_color())
    annotate(fig, f"adversarial examples: {first['attack']} {first['norm']} eps {float(first['eps']):g}{unit}, first "
                  f"{count} image(s); titles: top-1 and its probability (orange: changed by the attack)",
             frame[frame["model"].isin(models)] if frame is not None else None)
    return save_figure(fig, out_dir / "adversarial_examples")


def plot_adversarial(out_dir: str | Path, probe: str = "adversarial", *, sources: Sequence[Path] | None = None,
                     style: FigureStyle | None = None) -> list[Path]:
    """Draw every adversarial figure of a run folder (or several, drawn together): the curves and
    the heat map from the CSV, and from the saved example files one figure per model and the grid."""
    out_dir, folders, style, frame = open_runs(out_dir, sources, style, "adversarial.csv", probe, ("model", "weights", "attack", "norm", "eps", "steps",
                                                          "metric", "value", "ci_low", "ci_high"),
                      numeric=("eps", "steps"))
    with style.context():
        written = plot_curves(out_dir, frame, style)
        written += plot_heatmap(out_dir, frame, style)
        examples = {}
        for model in dict.fromkeys(frame["model"]):
            npz = examples_path(folder_of(frame, model, out_dir), model)
            if npz.is_file():
                written += plot_examples(npz, out_dir / f"adversarial_examples_{model}", style)
                examples[model] = load_examples(npz)
        if examples:
            written += plot_examples_grid(out_dir, examples, style, frame)
    return written
