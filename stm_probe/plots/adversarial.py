"""Adversarial figures: robust accuracy (or flip rate) vs eps, and clean / perturbation /
adversarial examples; drawn only from ``adversarial.csv`` and ``adversarial_examples/*.npz``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UsageError
from ..report import lines_with_ci, model_palette, read_results, save_figure, use_headless_backend, verify_file


def examples_path(out_dir: Path, model: str) -> Path:
    """Where the example tensors of a model are saved."""
    return Path(out_dir) / "adversarial_examples" / f"{model}.npz"


def _with_clean_point(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Curve of one model x attack with the eps = 0 point prepended: clean accuracy for
    robust_acc (with its CI), 0 for flip_rate."""
    curve = rows[rows["metric"] == metric].sort_values("eps")
    clean = rows[rows["metric"] == "clean_acc"]
    if metric == "robust_acc" and len(clean):
        start = clean.iloc[[0]].assign(eps=0.0)
    else:
        start = curve.iloc[[0]].assign(eps=0.0, value=0.0, ci_low=0.0, ci_high=0.0)
    return pd.concat([start, curve], ignore_index=True)


def plot_curves(out_dir: Path, frame: pd.DataFrame) -> list[Path]:
    """``adversarial.png/.pdf``: one panel per attack (and norm), one line per model with its
    95% CI band (Wilson); robust accuracy when the run had labels, else flip rate."""
    import matplotlib.pyplot as plt

    metric = "robust_acc" if (frame["metric"] == "robust_acc").any() else "flip_rate"
    panels = list(frame.groupby(["attack", "norm"], sort=False))
    models = list(dict.fromkeys(frame["model"]))
    colours = model_palette(models)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.6), squeeze=False, sharey=True)
    for ax, ((attack, norm), rows) in zip(axes[0], panels):
        curves = pd.concat([_with_clean_point(r, metric) for _, r in rows.groupby("model", sort=False)])
        lines_with_ci(ax, curves, "eps", colours, legend=ax is axes[0][0])
        steps = rows["steps"].dropna()
        count = int(steps.iloc[0]) if len(steps) else None
        ax.set_title(f"{attack} ({norm}" + (f", {count} step{'s' if count > 1 else ''})" if count else ")"), fontsize=9)
        ax.set_xlabel("eps (1/255)" if norm == "Linf" else "eps (L2)")
        ax.set_ylim(-3, 103)
    axes[0][0].set_ylabel("robust accuracy (%)" if metric == "robust_acc" else "flip rate of top-1 (%)")
    if axes[0][0].get_legend() is not None:
        axes[0][0].legend(fontsize=7, title=None)
    return save_figure(fig, out_dir / "adversarial")


def _show(ax, image: np.ndarray, title: str, colour: str = "black") -> None:
    ax.imshow(np.clip(image.transpose(1, 2, 0), 0, 1), interpolation="nearest")
    ax.set_title(title, fontsize=7, color=colour)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_examples(npz: Path, stem: Path) -> list[Path]:
    """K rows of clean / amplified perturbation / adversarial image with top-1 predictions."""
    import matplotlib.pyplot as plt

    verify_file(npz)
    try:
        with np.load(npz, allow_pickle=False) as data:
            d = {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError) as exc:
        raise UsageError(f"{npz} is not a readable example file ({type(exc).__name__}): rerun the probe") from None
    missing = [k for k in ("clean", "adversarial", "label", "clean_pred", "adv_pred", "clean_prob", "adv_prob",
                           "clean_name", "adv_name", "attack", "norm", "eps") if k not in d]
    if missing:
        raise UsageError(f"{npz} lacks {', '.join(missing)}: the file is damaged; rerun the probe")
    k = d["clean"].shape[0]
    unit = "/255" if str(d["norm"]) == "Linf" else ""
    fig, axes = plt.subplots(k, 3, figsize=(7.2, 2.5 * k), squeeze=False)
    for i, row in enumerate(axes):
        delta = d["adversarial"][i] - d["clean"][i]
        peak = float(np.abs(delta).max())
        amp = 0.5 / peak if peak > 0 else 1.0
        label = f" (label {d['label'][i]})" if d["label"][i] >= 0 else ""
        _show(row[0], d["clean"][i], f"clean: {d['clean_name'][i]} p={d['clean_prob'][i]:.2g}{label}")
        _show(row[1], 0.5 + amp * delta, f"perturbation x{amp:.0f}, max {peak * (255 if unit else 1):.3g}{unit}")
        changed = d["adv_pred"][i] != d["clean_pred"][i]
        _show(row[2], d["adversarial"][i], f"adversarial: {d['adv_name'][i]} p={d['adv_prob'][i]:.2g}",
              "red" if changed else "black")
    fig.suptitle(f"{stem.name.replace('adversarial_examples_', '')}: {d['attack']} {d['norm']} "
                 f"eps {float(d['eps']):g}{unit}", fontsize=9)
    return save_figure(fig, stem)


def plot_adversarial(out_dir: str | Path, probe: str = "adversarial") -> list[Path]:
    """Draw every adversarial figure of a run folder: ``adversarial.png/.pdf`` from the CSV and
    ``adversarial_examples_<model>.png/.pdf`` from each saved example file."""
    use_headless_backend()
    out_dir = Path(out_dir)
    frame = read_results(out_dir / "adversarial.csv", ("model", "attack", "norm", "eps", "steps", "metric", "value",
                                                       "ci_low", "ci_high"), numeric=("eps", "steps"))
    written = plot_curves(out_dir, frame)
    for npz in sorted((out_dir / "adversarial_examples").glob("*.npz")):
        written += plot_examples(npz, out_dir / f"adversarial_examples_{npz.stem}")
    return written
