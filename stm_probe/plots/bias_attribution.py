"""Attribution figure of `stm-probe bias`: one grid, images x models, drawn only from
``attribution/<model>.npz`` and the attribution rows of ``bias.csv``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UsageError
from .figures import new_figure, save_figure
from ..runtime.results import verify_file
from ..probes.bias.files import attribution_path
from . import folder_of
from .style import FigureStyle, annotate, short_name

EXAMPLE_FIELDS = ("image", "map", "label", "prediction", "index")
#: each map is shown on [0, its DISPLAY_PERCENTILE-th percentile], so a few hot pixels do not hide the rest
DISPLAY_PERCENTILE = 99.5


def load_examples(path: Path) -> dict[str, np.ndarray]:
    """The arrays of one ``attribution/<model>.npz`` (never unpickled); UsageError naming the file."""
    if not path.is_file():
        raise UsageError(f"{path} not found: the run folder is incomplete; rerun the probe (or --resume it)")
    try:
        verify_file(path)
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError) as exc:
        raise UsageError(f"{path} is not a readable attribution file ({type(exc).__name__}): rerun the probe") from None
    missing = [k for k in EXAMPLE_FIELDS if k not in arrays]
    if missing or arrays["map"].ndim != 3 or not np.isfinite(arrays["map"]).all():
        reason = f"lacks {', '.join(missing)}" if missing else "holds a damaged map"
        raise UsageError(f"{path} {reason}: the file is damaged; rerun the probe")
    return arrays


def _caption(rows: pd.DataFrame, model: str) -> str:
    own = rows[rows["model"] == model].set_index("metric")["value"]
    parts = [short_name(model)]
    if "concentration" in own:
        parts.append(f"top-10% share {own['concentration']:.2f}")
    if "com_distance_px" in own:
        parts.append(f"centre offset {own['com_distance_px']:.1f} px")
    return "\n".join(parts)


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.spines[:].set_visible(False)


def plot_attribution(out_dir: Path, rows: pd.DataFrame, style: FigureStyle | None = None) -> list[Path]:
    """``bias_attribution.png/.pdf``: rows = the saved images, columns = the image and one map per
    model (|attribution| summed over channels, each map on its own scale from 0 to its 99.5th
    percentile), titled with the model's concentration and mean-map centre offset."""
    style = style or FigureStyle()
    out_dir = Path(out_dir)
    models = list(dict.fromkeys(rows["model"]))
    examples = {m: load_examples(attribution_path(folder_of(rows, m, out_dir), m)) for m in models}
    count = min(len(e["map"]) for e in examples.values())
    if count == 0:
        return []
    method = str(rows["variant"].dropna().iloc[0]) if rows["variant"].notna().any() else "attribution"
    first = examples[models[0]]
    cols = len(models) + 1
    width = style.width(cols) if style.paper else 1.9 * cols
    fig, axes = new_figure(count, cols, figsize=(width, width / cols * 1.1 * count + 0.9))
    for i, row in enumerate(axes):
        label = int(first["label"][i])
        row[0].imshow(first["image"][i].transpose(1, 2, 0), interpolation="nearest")
        row[0].set_ylabel(f"image {int(first['index'][i])}" + (f"\nlabel {label}" if label >= 0 else ""), fontsize="small")
        _bare(row[0])
        for ax, model in zip(row[1:], models):
            heat = examples[model]["map"][i]
            top = float(np.percentile(heat, DISPLAY_PERCENTILE)) or float(heat.max()) or 1.0
            ax.imshow(heat, cmap="inferno", vmin=0.0, vmax=top, interpolation="nearest")
            ax.set_xlabel(f"pred {int(examples[model]['prediction'][i])}", fontsize="x-small", labelpad=1)
            _bare(ax)
    axes[0][0].set_title("image", fontsize="small")
    for ax, model in zip(axes[0][1:], models):
        ax.set_title(_caption(rows, model), fontsize="x-small")
    annotate(fig, f"attribution maps ({method}): |attribution| summed over channels", rows)
    return save_figure(fig, out_dir / "bias_attribution")
