"""report.md and a self-contained report.html of a compare folder, drawn from its files alone.

The report is one list of blocks (headings, paragraphs, lists, tables, figures) rendered twice:
as Markdown (figures linked by relative path) and as HTML with every figure embedded as a
base64 ``data:`` URI and the style inline, so the page opens offline and links to nothing.
With ``link_figures`` the HTML links each figure by relative path instead, as the Markdown does
(a small page to commit beside its figures). No torch: `stm-probe report DIR` re-renders from
the CSVs, manifests and PNGs.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..files import write_text
from .folders import AnalysisRun
from .headline import HeadlineSpec
from .pairwise import min_bootstrap_p


# --- blocks ----------------------------------------------------------------------------------------
@dataclass
class Block:
    kind: str  # h1 h2 h3 p list table figure details
    content: Any
    extra: Any = None  # table: header row; figure: caption; details: summary line


def _fmt(value: float, unit: str) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    if unit == "%":
        return f"{value:.1f}"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def _cell_text(row: pd.Series | None, spec: HeadlineSpec) -> str:
    if row is None:
        return "n/a"
    text = _fmt(row["value"], spec.unit)
    if np.isfinite(row["ci_low"]) and np.isfinite(row["ci_high"]):
        text += f" [{_fmt(row['ci_low'], spec.unit)}, {_fmt(row['ci_high'], spec.unit)}]"
    if np.isfinite(row["rank"]):
        text += f" (#{int(row['rank'])})"
    return text


def _better_text(spec: HeadlineSpec) -> str:
    return {"higher": "higher is better", "lower": "lower is better"}.get(spec.better, "no better direction; "
                                                                                        "rank 1 = largest")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _p(value: float) -> str:
    if not np.isfinite(value):
        return ""
    return f"{value:.2g}" if value >= 1e-3 else f"{value:.1e}"


# --- the report's content --------------------------------------------------------------------------
def build_blocks(record: dict[str, Any], runs: Sequence[AnalysisRun], specs: Sequence[HeadlineSpec],
                 table: pd.DataFrame, pairs: pd.DataFrame, models: Sequence[str], alpha: float,
                 heatmap: Path | None, n_boot: int) -> list[Block]:
    first = runs[0]
    weights = _weights(runs, models)
    n_images = sorted({int(r.manifest.get("num_images", 0)) for r in runs})
    sources = {r.name: r.manifest.get("data", {}).get("source", "?") for r in runs}
    data_text = next(iter(sources.values())) if len(set(sources.values())) == 1 else "; ".join(
        f"{name}: {source}" for name, source in sources.items())
    version = record.get("version") or first.manifest.get("version", "")
    listed = ", ".join(f"{m} ({weights.get(m, '?')})" for m in models)
    blocks = [Block("h1", f"Comparison of {len(models)} model(s): {', '.join(dict.fromkeys(r.name for r in runs))}"),
              Block("p", f"Written by stm-probe {version} from the run folders in this directory "
                         f"({datetime.now().astimezone().isoformat(timespec='seconds')}). Models: "
                         f"{listed}. Data: {data_text}; {'/'.join(map(str, n_images))} image(s) per analysis; input "
                         f"size {first.manifest.get('input_size')} px; seed {first.manifest.get('seed')}.")]
    blocks.append(Block("p", data_note(list(dict.fromkeys(sources.values())))))
    replicates = sorted({r.replicate for r in runs if r.replicate is not None})
    if replicates:
        blocks.append(Block("p", f"Replicates: every model ran with {len(replicates)} checkpoints (e.g. training "
                                 "seeds; see Provenance). A headline value is the mean over a model's replicates; its "
                                 "interval and the pairwise tests resample the replicates, then the images (a "
                                 "hierarchical bootstrap), so they include the variance between seeds as well as "
                                 "between images; a column without per-image values gets the union of its replicates' "
                                 "intervals (conservative)."))
    notes = list(dict.fromkeys(n for r in runs for n in r.manifest.get("notes", [])))
    if notes:
        blocks += [Block("h2", "Read this first"), Block("list", notes)]
    blocks += _reading_guide(specs, alpha)
    blocks += _headline(specs, table, models, weights)
    if heatmap is not None:
        blocks += [Block("h2", "Summary heat map"),
                   Block("figure", heatmap, "Models x headline metrics. Each column is scaled over the models so the "
                                            "brightest cell is the best model (for columns without a better "
                                            "direction: the largest value); cells show the raw values. Pale, "
                                            "hatched cells: no pairwise test (Holm-corrected) separates the model "
                                            "from its column's best, so their colour is no evidence of a difference; "
                                            "a grey "
                                            "column is saturated (not ranked or tested).")]
    blocks += _pairwise(specs, pairs, alpha, n_boot, _saturated(specs, table))
    blocks += _similarity(runs)
    blocks += _analyses(runs, record)
    blocks += _provenance(runs, record, models)
    return blocks


def _weights(runs: Sequence[AnalysisRun], models: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for run in runs:
        for entry in run.manifest.get("models", []):
            out.setdefault(entry.get("name"), entry.get("weights", "?"))
    return out


def _reading_guide(specs: Sequence[HeadlineSpec], alpha: float) -> list[Block]:
    items = [f"**{s.label}** ({s.analysis}; {_better_text(s)}): {s.describe}." for s in specs]
    return [Block("h2", "How to read this report"),
            Block("p", "Each headline cell is `value [95% interval] (#rank)`. Rates are in percent with a Wilson "
                       "interval; means over images have a seeded bootstrap interval; a column averaged over levels "
                       "is the mean of the per-level values in the analysis's CSV, with a bootstrap interval over "
                       "images of each image's mean. The rank orders the models within a column (1 = best, ties "
                       "share a rank); a difference in rank is not evidence of a real difference: the pairwise "
                       f"tests below are (Holm-corrected at alpha = {alpha:g})."),
            Block("p", "The columns:"), Block("list", items)]


def _headline(specs: Sequence[HeadlineSpec], table: pd.DataFrame, models: Sequence[str],
              weights: dict[str, str]) -> list[Block]:
    header = ["model", "weights", *[s.label for s in specs]]
    rows = []
    for model in models:
        cells = [model, weights.get(model, "?")]
        for spec in specs:
            hit = table[(table["key"] == spec.key) & (table["model"] == model)]
            cells.append(_cell_text(hit.iloc[0] if len(hit) else None, spec))
        rows.append(cells)
    blocks = [Block("h2", "Headline table"),
              Block("p", "One row per model; numbers are taken from each analysis's CSV (see its folder)."),
              Block("table", rows, header)]
    saturated = _saturated(specs, table)
    if saturated:
        blocks.append(Block("p", "Saturated, so neither ranked nor tested (the column cannot separate these models): "
                                 + "; ".join(f"{label} ({why})" for label, why in saturated.items()) + "."))
    return blocks


def _saturated(specs: Sequence[HeadlineSpec], table: pd.DataFrame) -> dict[str, str]:
    """{column label: why} of the saturated columns ("every model identical", "every model at its bound")."""
    out = {}
    for spec in specs:
        why = table.loc[table["key"] == spec.key, "saturated"] if "saturated" in table.columns else pd.Series([], dtype=str)
        if len(why) and why.iloc[0]:
            out[spec.label] = f"every model {why.iloc[0]}" if why.iloc[0] == "at its bound" else f"{why.iloc[0]} for every model"
    return out


def _pairwise(specs: Sequence[HeadlineSpec], pairs: pd.DataFrame, alpha: float, n_boot: int,
              saturated: dict[str, str] | None = None) -> list[Block]:
    blocks = [Block("h2", "Pairwise tests"),
              Block("p", "Every pair of models is compared on the same images for each column with per-image values: "
                         "McNemar's exact test for per-image 0/1 outcomes (correct, robust, flipped; only images "
                         "where the two models disagree count), otherwise a paired bootstrap of the per-image "
                         "difference A - B (its mean, 95% percentile interval and the p-value of that interval "
                         f"excluding 0). All {_count(len(pairs), 'test')} form one family, Holm-corrected at alpha = "
                         f"{alpha:g}: a statement below is made only where the corrected p-value is under alpha.")]
    notes = [s.test_note for s in specs if s.test_note and (pairs["key"] == s.key).any()]
    if notes:
        blocks.append(Block("p", "Note: " + "; ".join(notes) + "."))
    saturated = saturated or {}
    untested = [s.label for s in specs if s.label not in saturated and (s.test is None or not (pairs["key"] == s.key).any())]
    if untested:
        blocks.append(Block("p", "Not tested (no per-image values to pair): " + "; ".join(untested) + "."))
    if saturated:
        blocks.append(Block("p", "Not tested (saturated): " + "; ".join(saturated) + "."))
    if not len(pairs):
        return blocks + [Block("p", "No pairwise test could be run.")]
    claims = [f"{r.claim} (difference {r.difference:+.3g}, {r.test}, n = {r.n}, Holm p = {_p(r.p_holm)})"
              for r in pairs[pairs["significant"]].itertuples()]
    if claims:
        blocks += [Block("h3", "Differences that hold"), Block("list", claims)]
    else:
        n = int(pairs["n"].max())
        blocks.append(Block("p", f"**No difference between any two models holds** after the Holm correction at alpha "
                                 f"= {alpha:g} ({_count(len(pairs), 'test')} on at most {_count(n, 'image')}). "
                                 "Differences in the headline table and ranks may be chance."))
    boot = pairs["test"].str.startswith("paired bootstrap")
    if boot.any() and min_bootstrap_p(n_boot) * len(pairs) >= alpha:
        blocks.append(Block("p", f"Note: {n_boot} bootstrap replicates cannot give p below "
                                 f"{min_bootstrap_p(n_boot):.1g}, too coarse for "
                                 f"{_count(len(pairs), 'Holm-corrected test')}; "
                                 "rerun `stm-probe report` with a larger --pairwise-bootstrap."))
    header = ["column", "A", "B", "test", "n", "A - B [95% interval]", "only A / only B", "p", "mid-p", "Holm p",
              "holds"]
    rows = []
    for r in pairs.itertuples():
        diff = f"{r.difference:+.3g}" + (f" [{r.ci_low:+.3g}, {r.ci_high:+.3g}]" if np.isfinite(r.ci_low) else "")
        counts = f"{int(r.only_a)} / {int(r.only_b)}" if np.isfinite(r.only_a) else ""
        rows.append([r.label, r.a, r.b, r.test, str(r.n), diff, counts, _p(r.p), _p(r.p_mid), _p(r.p_holm),
                     "yes" if r.significant else "no"])
    return blocks + [Block("details", [Block("table", rows, header)],
                           f"All {_count(len(pairs), 'test')} (differences in the column's units; McNemar: percentage "
                           "points; "
                           "only A / only B: images where only A's / only B's outcome is 1)")]


def _similarity(runs: Sequence[AnalysisRun]) -> list[Block]:
    """CKA between every two models, stage by stage, from the `cka` analyses (compare/similarity.py)."""
    from .similarity import cross_model_tables, similarity_runs

    blocks = []
    for run in similarity_runs(runs):
        tables = cross_model_tables(run.frame)
        if tables:
            blocks.append(Block("p", f"From the {run.name} analysis: centred kernel alignment (CKA, 0-1; 1 = the same "
                                     "representation up to rotation and scale) between the stage outputs of every "
                                     "two models on the same images, with a bootstrap 95% interval over images. It "
                                     "describes pairs of models and is not ranked."))
            for title, header, rows in tables:
                blocks += [Block("h3", title), Block("table", rows, header)]
    return [Block("h2", "Representation similarity"), *blocks] if blocks else []


def _settings_text(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={'default' if v is None else v}" for k, v in settings.items()) or "defaults"


def _analyses(runs: Sequence[AnalysisRun], record: dict[str, Any]) -> list[Block]:
    status = {a.get("folder", a["name"]): a for a in record.get("analyses", [])}
    blocks = [Block("h2", "Analyses")]
    for run in runs:
        info = status.get(run.path.name, {})
        manifest = run.manifest
        which = "" if run.replicate is None else f", replicate {run.replicate}"
        blocks.append(Block("h3", f"{run.name} (probe `{run.probe}`{which})"))
        blocks.append(Block("list", [
            f"folder: `{run.path.name}/` (CSV `{run.probe}.csv`, per-image values, manifest.json)",
            f"settings: {_settings_text(manifest.get('probe', {}).get('settings', {}))}",
            f"images: {manifest.get('num_images')} ({manifest.get('data', {}).get('source', '?')}); input size "
            f"{manifest.get('input_size')} px; seed {manifest.get('seed')}; bootstrap "
            f"{run.marker.get('bootstrap')}; repeats {run.marker.get('repeats')}",
            f"this compare {info.get('status', 'read')} it; when the run was written it computed "
            f"{manifest.get('units_computed')} unit(s) and took {manifest.get('units_resumed')} from an earlier "
            f"attempt, in {manifest.get('compute_seconds')} s",
            *[f"note: {n}" for n in manifest.get("notes", [])]]))
        for figure in run.figures():
            blocks.append(Block("figure", figure, figure_caption(run, figure)))
    return blocks


def data_note(sources: Sequence[str]) -> str:
    """Where the images came from and whether they are independent draws, for the report's first lines."""
    parts = []
    for source in sources:
        text = str(source)
        if text.startswith("synthetic"):
            parts.append(f"{text}: procedural images, each drawn from its own seed, so independent draws from the "
                         "synthetic set (train and validation splits use separate random streams)")
        elif text.startswith("embedded sample") or "data/images" in text:
            parts.append(f"{text}: the embedded sample photographs, a convenience sample rather than a random draw "
                         "of ImageNet; the numbers describe these images only")
        else:
            parts.append(f"{text}: images as given; they are as independent as that set's images are")
    return ("Images: " + "; ".join(parts) + ". Every model sees the same images, so differences between models "
            "are paired by image.")


def figure_caption(run: AnalysisRun, figure: Path) -> str:
    """What a run's figure shows (its probe's ``figure_captions``), the images and weights it rests on, and
    its file: e.g. "erf: each model's effective receptive field per stage ... n = 16 images · trained weights
    · input 64 px (erf_grid.png)"."""
    from ..plots.style import run_caption
    from ..probes import PROBES, get_probe

    captions = get_probe(run.probe).figure_captions if run.probe in PROBES else {}
    key = max((k for k in captions if figure.stem.startswith(k)), key=len, default=None)
    what = captions[key] if key is not None else f"the {run.probe} figure"
    facts = run_caption(run.frame)
    return f"{run.name}: {what}" + (f". {facts}" if facts else "") + f" ({figure.name})"


def _provenance(runs: Sequence[AnalysisRun], record: dict[str, Any], models: Sequence[str]) -> list[Block]:
    entries: dict[tuple[str, Any], dict[str, Any]] = {}
    for run in runs:
        for entry in run.manifest.get("models", []):
            entries.setdefault((entry.get("name"), run.replicate), entry)
    replicates = sorted({r.replicate for r in runs}, key=lambda r: -1 if r is None else r)
    rows = [[m if r is None else f"{m} (replicate {r})", str(entries.get((m, r), {}).get("stm", "")),
             str(entries.get((m, r), {}).get("weights", "?")),
             str(entries.get((m, r), {}).get("checkpoint", "none (random init)")),
             str(entries.get((m, r), {}).get("sha256", "")), str(entries.get((m, r), {}).get("checkpoint_key", "") or "")]
            for m in models for r in replicates]
    packages: dict[str, set] = {}
    for run in runs:
        for name, version in run.manifest.get("packages", {}).items():
            packages.setdefault(name, set()).add(str(version))
    first = runs[0].manifest
    call = record.get("call", {})
    call_text = " ".join(call["argv"]) if isinstance(call, dict) and "argv" in call else str(call)
    return [Block("h2", "Provenance"),
            Block("h3", "Checkpoints"), Block("table", rows, ["model", "STM", "weights", "file", "sha256", "key"]),
            Block("h3", "Data"),
            Block("list", [f"source: {first.get('data', {}).get('source', '?')}",
                           f"image list: {first.get('image_list') or 'none'}; images: {len(first.get('images', []))}",
                           f"skipped files: {first.get('num_skipped_files', 0)}"]),
            Block("h3", "Software and machine"),
            Block("list", [f"stm-probe {record.get('version', first.get('version'))}",
                           *[f"{n} {', '.join(sorted(v))}" for n, v in packages.items()],
                           f"device: {', '.join(sorted({str(r.manifest.get('device')) for r in runs}))}",
                           f"command: `{call_text}`"])]


# --- rendering -------------------------------------------------------------------------------------
def _md(text: str) -> str:
    """Text for report.md: HTML in it (a model, folder or file name) is escaped, as in report.html."""
    return html.escape(str(text), quote=False)


def _md_cell(text: str) -> str:
    return _md(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block], base: Path) -> str:
    out = []
    for block in blocks:
        if block.kind in ("h1", "h2", "h3"):
            out.append("#" * int(block.kind[1]) + " " + _md(block.content))
        elif block.kind == "p":
            out.append(_md(block.content))
        elif block.kind == "list":
            out.append("\n".join(f"- {_md(item)}" for item in block.content))
        elif block.kind == "table":
            out.append("| " + " | ".join(map(_md_cell, block.extra)) + " |")
            out[-1] += "\n|" + "---|" * len(block.extra)
            out[-1] += "".join("\n| " + " | ".join(map(_md_cell, row)) + " |" for row in block.content)
        elif block.kind == "figure":
            out.append(f"![{_md(block.extra)}]({Path(block.content).relative_to(base).as_posix()})\n\n"
                       f"*{_md(block.extra)}*")
        elif block.kind == "details":
            out.append(f"{_md(block.extra)}:\n\n" + to_markdown(block.content, base))
    return "\n\n".join(out) + "\n"


_STYLE = """body{font-family:sans-serif;max-width:1200px;margin:1.5em auto;padding:0 1em;line-height:1.4;color:#222}
table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}th,td{border:1px solid #ccc;padding:3px 6px;
text-align:left;vertical-align:top}th{background:#f0f0f0}figure{margin:1em 0}img{max-width:100%;height:auto}
figcaption{font-size:0.85em;color:#555}code{background:#f4f4f4;padding:0 3px}details{margin:0.5em 0}"""


def _inline(text: str) -> str:
    """Escape text; `code` and **bold** as in the Markdown."""
    import re

    text = html.escape(str(text))
    text = re.sub(r"`([^`]*)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]*)\*\*", r"<strong>\1</strong>", text)


def _figure_source(path: Path, base: Path | None) -> str:
    """The img src of a figure: a base64 data URI, or the path relative to ``base`` when given."""
    if base is not None:
        return html.escape(Path(path).relative_to(base).as_posix())
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _html_blocks(blocks: Sequence[Block], base: Path | None = None) -> list[str]:
    out = []
    for block in blocks:
        if block.kind in ("h1", "h2", "h3"):
            out.append(f"<{block.kind}>{_inline(block.content)}</{block.kind}>")
        elif block.kind == "p":
            out.append(f"<p>{_inline(block.content)}</p>")
        elif block.kind == "list":
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block.content) + "</ul>")
        elif block.kind == "table":
            head = "".join(f"<th>{_inline(h)}</th>" for h in block.extra)
            body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in block.content)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif block.kind == "figure":
            caption = _inline(block.extra)
            out.append(f'<figure><img alt="{caption}" src="{_figure_source(block.content, base)}">'
                       f"<figcaption>{caption}</figcaption></figure>")
        elif block.kind == "details":
            inner = "".join(_html_blocks(block.content, base))
            out.append(f"<details><summary>{_inline(block.extra)}</summary>{inner}</details>")
    return out


def to_html(blocks: Sequence[Block], base: Path | None = None) -> str:
    """The report page: figures embedded, or linked relative to ``base`` when it is given."""
    title = next((b.content for b in blocks if b.kind == "h1"), "stm-probe comparison")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>\n"
            + "\n".join(_html_blocks(blocks, base)) + "\n</body></html>\n")


def write_report(out_dir: Path, blocks: Sequence[Block], link_figures: bool = False) -> list[Path]:
    """report.md and report.html in ``out_dir`` (atomically); ``link_figures``: the HTML links, not embeds."""
    out_dir = Path(out_dir)
    write_text(out_dir / "report.md", to_markdown(blocks, out_dir))
    write_text(out_dir / "report.html", to_html(blocks, out_dir if link_figures else None))
    return [out_dir / "report.md", out_dir / "report.html"]
