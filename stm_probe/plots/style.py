"""How every figure looks: fixed model colours and markers, the default and paper styles, captions.

* Colour by STM (Okabe-Ito, colour-blind safe) and marker / dash by size, from the model's name,
  so a model keeps its look in every figure whatever the other models or their order. Other
  (timm) models get a colour and marker from a hash of their name out of a second fixed list
  (Paul Tol's muted set and the Okabe-Ito colours no STM uses).
* `FigureStyle`: ``default`` (screen) or ``paper`` (3.5 in single-column / 7 in double-column
  widths, 7 pt text); both use constrained layout and TrueType (Type 42) fonts in PDF/PS. Files:
  PNG; the paper style adds PDF; ``--formats`` chooses (`figure_formats` inside `FigureStyle.context`).
* `resolve_style`: the style, ERF colour map and file formats a run recorded in its ``manifest.json``
  (the call's ``--style`` / ``--cmap`` / ``--formats``), overridden by `stm-probe plot`'s.
* `annotate`: the title and a footnote naming the images, weights and input size of the rows drawn.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ..errors import UsageError
from ..models.stms import STM_RECORDS
from ..options import FIGURE_FORMATS

STYLES = ("default", "paper")
#: figure file formats; PNG alone unless asked (PDF costs a second drawing and ~0.3 s of imports)
FORMATS = FIGURE_FORMATS
DEFAULT_FORMATS = {"default": ("png",), "paper": ("png", "pdf")}
#: the formats of the style being drawn in (set by `FigureStyle.context`, read by `figures.save_figure`)
_DRAWING_FORMATS: ContextVar[tuple[str, ...] | None] = ContextVar("stm_probe_figure_formats", default=None)
#: sequential and colour-blind safe; RdYlGn (RepLKNet's ERF figures) via --cmap RdYlGn
DEFAULT_CMAP = "viridis"


class _StmColours(Mapping[str, str]):
    """STM family -> hex colour, read live from the STM records (the paper's five take Okabe & Ito's
    (2008) colours; a registered STM brings its own)."""

    def __getitem__(self, stm: str) -> str:
        return STM_RECORDS[stm].colour

    def __iter__(self) -> Iterator[str]:
        return iter(STM_RECORDS)

    def __len__(self) -> int:
        return len(STM_RECORDS)


STM_COLOURS: Mapping[str, str] = _StmColours()
#: (marker, dash pattern) per size: micro dotted triangles ... base dash-dot diamonds
SIZE_MARKS = {"micro": ("v", ":"), "tiny": ("o", "-"), "small": ("s", "--"), "base": ("D", "-.")}
#: colours of other models (picked by name hash): the unused Okabe-Ito colours and Paul Tol's muted scheme
OTHER_COLOURS = ("#56B4E9", "#000000", "#882255", "#999933", "#332288", "#44AA99", "#DDCC77", "#AA4499", "#117733",
                 "#88CCEE", "#CC6677", "#777777")
OTHER_MARKERS = ("^", "P", "X", "h", "<", ">", "*", "p")
PAPER_WIDTHS = (3.5, 7.0)  # inches: one column, two columns
#: the standard view of the scale sweep: crop ratio of the centre crop (short side = input size / 0.875)
STANDARD_CROP_RATIO = 0.875


@dataclass(frozen=True)
class ModelLook:
    """How one model is drawn: colour (hex), marker and dash pattern (matplotlib names)."""

    colour: str
    marker: str
    linestyle: str


def _name_hash(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")


def model_look(name: str) -> ModelLook:
    """The fixed look of a model name (a unified name or alias: STM colour, size marker; any other
    name: colour and marker from its sha256, solid line)."""
    from ..models.names import unified_spec

    spec = unified_spec(str(name))
    if spec is not None:
        marker, dash = SIZE_MARKS[spec.size]
        return ModelLook(STM_COLOURS[spec.stm], marker, dash)
    h = _name_hash(str(name))
    return ModelLook(OTHER_COLOURS[h % len(OTHER_COLOURS)], OTHER_MARKERS[(h // len(OTHER_COLOURS)) % len(OTHER_MARKERS)],
                     "-")


def short_name(name: str) -> str:
    """``unified_pvt_tiny`` -> ``pvt_tiny`` (for crowded legends and notes); other names unchanged."""
    return str(name).removeprefix("unified_")


# --- styles ------------------------------------------------------------------------------------------
def check_cmap(name: str) -> str:
    """``name`` if matplotlib knows the colour map; UsageError with a did-you-mean otherwise."""
    import matplotlib

    from ..options import did_you_mean

    if name not in matplotlib.colormaps:
        raise UsageError(f"--cmap {name!r} is not a matplotlib colour map{did_you_mean(name, list(matplotlib.colormaps))}"
                         f"; e.g. {DEFAULT_CMAP} (default) or RdYlGn (RepLKNet's red-yellow-green)")
    return name


def format_list(text: str) -> tuple[str, ...]:
    """'png,pdf' -> ('png', 'pdf'); an unknown format is refused naming the known ones."""
    from ..options import check_choice, name_list

    formats = tuple(f.lower() for f in name_list(text))
    check_choice("--formats", formats, FORMATS)
    return formats


def figure_formats() -> tuple[str, ...]:
    """The file formats of the style being drawn in (`FigureStyle.context`); PNG outside any."""
    return _DRAWING_FORMATS.get() or DEFAULT_FORMATS["default"]


@dataclass(frozen=True)
class FigureStyle:
    """Sizes and fonts of a figure family. ``paper``: widths of 3.5 in (one or two panels across) or
    7 in; text 7 pt. ``default``: about 3.2 in per panel, text 9 pt. ``cmap``: ERF heat maps.
    ``formats``: the files written per figure (empty: the style's own, PNG; paper: PNG and PDF)."""

    name: str = "default"
    cmap: str = DEFAULT_CMAP
    formats: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.name not in STYLES:
            raise UsageError(f"--style {self.name!r} is not a figure style: choose from {', '.join(STYLES)}")
        if self.formats:
            object.__setattr__(self, "formats", format_list(",".join(self.formats)))

    @property
    def paper(self) -> bool:
        return self.name == "paper"

    @property
    def file_formats(self) -> tuple[str, ...]:
        """The formats each figure is saved in: ``formats``, else the style's own."""
        return self.formats or DEFAULT_FORMATS[self.name]

    def rc(self) -> dict[str, Any]:
        """matplotlib rcParams of the style (fonts, line widths, layout, Type 42 fonts)."""
        base = 7.0 if self.paper else 9.0
        return {"pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none",
                "figure.constrained_layout.use": True, "font.size": base, "axes.titlesize": base + 1,
                "axes.labelsize": base, "xtick.labelsize": base - 1, "ytick.labelsize": base - 1,
                "legend.fontsize": base - 1, "figure.titlesize": base, "figure.labelsize": base - 1,
                "lines.linewidth": 1.0 if self.paper else 1.4, "lines.markersize": 3.5 if self.paper else 5.0,
                "axes.linewidth": 0.6 if self.paper else 0.8, "axes.spines.top": False, "axes.spines.right": False,
                "legend.frameon": False, "savefig.dpi": 300 if self.paper else 150, "image.cmap": self.cmap}

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        """Draw inside this: matplotlib rcParams and file formats of the style, restored afterwards."""
        import matplotlib

        token = _DRAWING_FORMATS.set(self.file_formats)
        try:
            with matplotlib.rc_context(self.rc()):
                yield
        finally:
            _DRAWING_FORMATS.reset(token)

    def width(self, columns: int) -> float:
        """Figure width (inches) for ``columns`` panels across (paper: 3.5 for one or two, else 7)."""
        if self.paper:
            return PAPER_WIDTHS[0] if columns <= 2 else PAPER_WIDTHS[1]
        return min(3.2 * columns + 1.6, 18.0)

    def subplots(self, nrows: int, ncols: int, aspect: float = 0.8, extra_height: float = 0.9, **kwargs: Any):
        """A figure (`stm_probe.plots.figures.new_figure`: no pyplot) at this style's width: each panel ``aspect``
        times as high as wide (plus ``extra_height`` inches for titles, footnote and legend). Returns
        (fig, axes (nrows, ncols))."""
        from .figures import new_figure

        width = kwargs.pop("width", None) or self.width(ncols)
        margin = 0.5 if self.paper else min(1.6, 0.3 * width)  # labels, colour bar or legend beside the panels
        height = nrows * aspect * (width - margin) / max(ncols, 1) + extra_height
        if self.paper:
            height = min(height, 9.0)
        return new_figure(nrows, ncols, figsize=(width, height), **kwargs)

    def legend(self, fig, handles: Sequence[Any], labels: Sequence[str]) -> None:
        """One figure legend outside the panels: right for screen, below (in columns) for paper."""
        if not handles:
            return
        if self.paper:
            fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 3 if fig.get_figwidth() < 5 else 5))
        else:
            fig.legend(handles, labels, loc="outside right center")


#: the figure options a run's manifest records and `stm-probe plot` reuses
RECORDED = ("style", "cmap", "formats")


def recorded_options(folder: str | Path) -> dict[str, Any]:
    """The ``style``, ``cmap`` and ``formats`` a run was called with, from its ``manifest.json`` (a
    recorded ``options`` entry, the API call's options, or ``--style`` / ``--cmap`` / ``--formats`` in
    the argv); {} when the folder has no readable manifest."""
    path = Path(folder) / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    found: dict[str, Any] = {}
    call = manifest.get("call") or {}
    argv = [str(a) for a in call.get("argv") or []]
    for i, word in enumerate(argv):
        for key in RECORDED:
            if word == f"--{key}" and i + 1 < len(argv):
                found[key] = argv[i + 1]
            elif word.startswith(f"--{key}="):
                found[key] = word.split("=", 1)[1]
    for options in (call.get("options"), manifest.get("options")):
        if isinstance(options, dict):
            found.update({k: options[k] for k in RECORDED if options.get(k) is not None})
    return found


def resolve_style(folder: str | Path | None, style: str | None = None, cmap: str | None = None,
                  formats: str | Sequence[str] | None = None) -> FigureStyle:
    """The figure style of a run folder: ``style`` / ``cmap`` / ``formats`` when given (the plot
    command's overrides; a given style brings its own formats), else what the run recorded, else the
    defaults. An unknown colour map or format is refused."""
    recorded = recorded_options(folder) if folder is not None else {}
    name = style or recorded.get("style") or "default"
    chosen = formats or (None if style else recorded.get("formats"))
    if chosen is not None and not isinstance(chosen, str):
        chosen = ",".join(map(str, chosen))
    return FigureStyle(str(name), check_cmap(str(cmap or recorded.get("cmap") or DEFAULT_CMAP)),
                       format_list(chosen) if chosen else ())


# --- captions and axes ---------------------------------------------------------------------------------
def describe_weights(values: Sequence[str]) -> str:
    """``random-init weights (untrained)``, ``trained weights (checkpoint)``, or the distinct values."""
    distinct = sorted({str(v) for v in values})
    if distinct == ["random-init"]:
        return "random-init weights (untrained)"
    if distinct and all(v.startswith("checkpoint") for v in distinct):
        return "trained weights (" + ", ".join(distinct) + ")"
    return "weights: " + "; ".join(distinct)


def run_caption(frame) -> str:
    """One line naming what the rows of ``frame`` rest on: images (n), weights, input size."""
    import pandas as pd

    parts = []
    if "n_images" in frame.columns:
        counts = pd.to_numeric(frame["n_images"], errors="coerce").dropna().astype(int)
        if len(counts):
            low, high = int(counts.min()), int(counts.max())
            parts.append(f"n = {low} image{'s' if high != 1 else ''}" if low == high else f"n = {low}-{high} images")
    if "weights" in frame.columns:
        parts.append(describe_weights(list(frame["weights"].dropna())))
    if "input_size" in frame.columns:
        sizes = sorted({int(s) for s in pd.to_numeric(frame["input_size"], errors="coerce").dropna()})
        if sizes:
            parts.append("input " + "/".join(str(s) for s in sizes) + " px")
    return " · ".join(parts)


def wrap(text: str, fig, fontsize: float | None = None, share: float = 1.0) -> str:
    """``text`` broken into lines that fit ``share`` of the figure's width (an average glyph is
    taken as 0.55 em wide), so long titles never run off a 3.5 inch paper figure."""
    import textwrap

    import matplotlib

    size = fontsize or matplotlib.rcParams["font.size"]
    chars = max(int(share * fig.get_figwidth() * 72 / (0.55 * size)), 12)
    return "\n".join(textwrap.wrap(text, chars)) if text else ""


def annotate(fig, title: str | None, frame=None) -> None:
    """The figure's title with, on the line below, what its rows rest on (images, weights, input
    size, from ``frame``), wrapped to the figure's width; constrained layout keeps it clear of
    the panels and of a legend below them."""
    import matplotlib
    from matplotlib.font_manager import FontProperties

    size = FontProperties(size=matplotlib.rcParams["figure.titlesize"]).get_size_in_points()
    lines = [wrap(title or "", fig, size), wrap(run_caption(frame) if frame is not None else "", fig, size)]
    text = "\n".join(line for line in lines if line)
    if text:
        fig.suptitle(text, fontsize=size)


def doubling(levels: Sequence[float]) -> bool:
    """True when the positive levels step by powers of two (e.g. eps 1, 2, 4, 8; shifts 4..64):
    at least three distinct levels spanning a factor of 4 or more, every ratio a power of two."""
    import numpy as np

    values = np.unique(np.asarray([float(v) for v in levels], dtype=float))
    if len(values) < 3 or values.min() <= 0 or values.max() / values.min() < 4:
        return False
    steps = np.log2(values[1:] / values[:-1])
    return bool(np.all(np.abs(steps - np.round(steps)) < 0.02))


def log2_axis(ax, levels: Sequence[float]) -> bool:
    """A log2 x axis ticked at ``levels`` when they double (see `doubling`); returns whether it did."""
    if not doubling(levels):
        return False
    ticks = sorted({float(v) for v in levels})
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
    ax.minorticks_off()
    return True


def mark_standard_view(ax, level: float = STANDARD_CROP_RATIO) -> None:
    """A dotted vertical line at the standard view on a scale axis, labelled at the top."""
    ax.axvline(level, color="0.35", linestyle=":", linewidth=0.8, zorder=0)
    ax.annotate("standard view", xy=(level, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -2),
                textcoords="offset points", ha="left", va="top", fontsize="x-small", color="0.35")
