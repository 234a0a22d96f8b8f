"""The files of a compare folder, read and checked without torch.

Layout of ``stm-probe compare --out DIR``::

    DIR/compare.json          what was compared: analyses, their probes and settings, models, the call
    DIR/<analysis>/           one probe run folder per analysis (run.json, manifest.json, CSVs, figures)
    DIR/report.md, report.html, summary_heatmap.png/.pdf

`load_run` refuses (one line) a run folder that is unfinished, damaged (a data file whose
sha256 differs from its manifest) or not the probe it should be.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import UsageError
from ..report import read_results, read_table, verify_file

COMPARE_FILE = "compare.json"
#: files compare itself writes into DIR (anything else there that is not an analysis folder is refused)
REPORT_FILES = ("report.md", "report.html", "summary_heatmap.png", "summary_heatmap.pdf")


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``; UsageError naming the file when it is missing or damaged."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path} not found: {what}") from None
    except (OSError, ValueError, UnicodeDecodeError):
        raise UsageError(f"{path} is not readable JSON: the folder is damaged; rerun `stm-probe compare`") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} does not hold a JSON object: the folder is damaged; rerun `stm-probe compare`")
    return data


@dataclass
class AnalysisRun:
    """One analysis of a compare folder: its probe run folder and validated files."""

    name: str  # the analysis (and folder) name, e.g. "invariance" or "cue-conflict"
    probe: str  # the probe that ran it, e.g. "bias"
    path: Path
    frame: pd.DataFrame  # <probe>.csv, checked by read_results
    manifest: dict[str, Any]
    marker: dict[str, Any]  # run.json: what defines the run's numbers
    _per_image: pd.DataFrame | None = field(default=None, repr=False)
    _per_image_read: bool = field(default=False, repr=False)

    @property
    def per_image(self) -> pd.DataFrame | None:
        """per_image.csv (checked against the manifest), or None when the probe wrote none."""
        if not self._per_image_read:
            path = self.path / "per_image.csv"
            if path.is_file():
                verify_file(path)
                frame = read_table(path, ("image", "model", "repeat", "metric", "value"), f"`stm-probe {self.probe}`")
                frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
                self._per_image = frame
            self._per_image_read = True
        return self._per_image

    def figures(self) -> list[Path]:
        """The run's own PNG figures (all models), in the order it wrote them; with a grid of every
        model (ERF), that grid instead of the per-model figures."""
        pngs = [self.path / p for p in self.manifest.get("outputs", []) if str(p).endswith(".png")]
        pngs = [p for p in pngs if p.is_file()]
        grids = [p for p in pngs if p.stem.endswith("_grid")]
        return grids or pngs


def load_run(path: Path, name: str, probe: str) -> AnalysisRun:
    """Read and check one analysis folder (see module docstring)."""
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"{path} not found: the {name} analysis was not run; rerun `stm-probe compare` with it")
    marker = read_json(path / "run.json", f"{path} holds no stm-probe run; rerun `stm-probe compare`")
    if marker.get("probe") != probe:
        raise UsageError(f"{path} holds a '{marker.get('probe')}' run, not '{probe}': the compare folder is mixed up; "
                         "remove that folder and rerun `stm-probe compare`")
    if marker.get("status") != "complete" or not (path / "manifest.json").is_file():
        raise UsageError(f"the {name} run in {path} is unfinished (run.json says {marker.get('status')!r}): rerun "
                         "`stm-probe compare` with the same options to finish it")
    manifest = read_json(path / "manifest.json", "rerun `stm-probe compare`")
    frame = read_results(path / f"{probe}.csv", ("model", "weights", "metric", "value", "ci_low", "ci_high"))
    return AnalysisRun(name, probe, path, frame, manifest, marker)


def discover(out_dir: Path) -> list[AnalysisRun]:
    """Every probe run folder directly inside ``out_dir`` (a folder of runs made without compare), by name."""
    folders = sorted(p for p in out_dir.iterdir() if (p / "run.json").is_file())
    if not folders:
        raise UsageError(f"{out_dir} holds neither {COMPARE_FILE} nor probe run folders: give the --out of `stm-probe "
                         "compare` (or a folder whose sub-folders are probe runs)")
    runs = []
    for folder in folders:
        probe = read_json(folder / "run.json", "rerun the probe").get("probe")
        runs.append(load_run(folder, folder.name, str(probe)))
    return runs


def load_compare(out_dir: Path) -> tuple[dict[str, Any], list[AnalysisRun]]:
    """compare.json and every analysis it lists, checked (without compare.json: the run folders inside)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise UsageError(f"{out_dir} is not a folder: give the --out folder of `stm-probe compare`")
    if not (out_dir / COMPARE_FILE).is_file():
        return {}, discover(out_dir)
    record = read_json(out_dir / COMPARE_FILE, "rerun `stm-probe compare`")
    analyses = record.get("analyses")
    if not isinstance(analyses, list) or not analyses:
        raise UsageError(f"{out_dir / COMPARE_FILE} lists no analyses: the folder is damaged; rerun `stm-probe "
                         "compare`")
    runs = [load_run(out_dir / a["folder"], a["name"], a["probe"]) for a in analyses]
    return record, runs
