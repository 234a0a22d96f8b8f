"""The files of a compare folder, read and checked without torch.

Layout of ``stm-probe compare --out DIR``::

    DIR/compare.json          what was compared: analyses, their probes and settings, models, the call
    DIR/<analysis>/           one probe run folder per analysis (run.json, manifest.json, CSVs, figures)
    DIR/<analysis>-r<k>/      instead, one per analysis and replicate k (`stm_probe.compare.replicates`)
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
from ..probes import metric_ranges
from ..runtime.results import read_results, read_table, verify_file

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
    replicate: int | None = None  # which replicate (checkpoint set) it ran, when compare ran several

    @property
    def per_image(self) -> pd.DataFrame | None:
        """per_image.csv (checked against the manifest), or None when the probe wrote none."""
        if not self._per_image_read:
            path = self.path / "per_image.csv"
            if not path.exists() and "per_image.csv" in (self.manifest.get("checksums") or {}):
                raise UsageError(f"{path} is missing, though the run's manifest.json lists it: the folder is damaged; "
                                 "remove it and rerun `stm-probe compare`")
            if path.exists():
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
    if marker.get("status") == "complete" and not (path / "manifest.json").is_file():
        raise UsageError(f"{path / 'manifest.json'} is missing, though run.json says the {name} run is complete: the "
                         "folder is damaged; remove it and rerun `stm-probe compare`")
    if marker.get("status") != "complete" or not (path / "manifest.json").is_file():
        raise UsageError(f"the {name} run in {path} is unfinished (run.json says {marker.get('status')!r}): rerun "
                         "`stm-probe compare` with the same options to finish it")
    manifest = read_json(path / "manifest.json", "rerun `stm-probe compare`")
    frame = read_results(path / f"{probe}.csv", ("model", "weights", "metric", "value", "ci_low", "ci_high"),
                         ranges=metric_ranges(probe))
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
    entries = [_analysis_entry(a, out_dir) for a in analyses]  # every folder checked before any is read
    runs = []
    for entry, (folder, name, probe) in zip(analyses, entries):
        run = load_run(folder, name, probe)
        check_identity(run, entry, out_dir)
        if isinstance(entry.get("replicate"), int):
            run.replicate = entry["replicate"]
        runs.append(run)
    return record, runs


def _analysis_entry(entry: Any, out_dir: Path) -> tuple[Path, str, str]:
    """(folder, name, probe) of one compare.json analysis; its folder must be a folder directly inside
    ``out_dir`` (a name, not a path; no link leading out), refused before anything in it is read."""
    where = out_dir / COMPARE_FILE
    if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) and entry.get(k)
                                              for k in ("name", "probe", "folder")):
        raise UsageError(f"{where}: an analysis entry lacks its name, probe or folder: the folder is damaged; rerun "
                         "`stm-probe compare`")
    folder = entry["folder"]
    inside = out_dir / folder
    if folder in (".", "..") or "/" in folder or "\\" in folder or Path(folder).is_absolute() or \
            inside.resolve().parent != out_dir.resolve():
        raise UsageError(f"{where}: the {entry['name']} analysis points to '{folder}', outside {out_dir}: a compare "
                         "folder reports only the run folders inside it; rerun `stm-probe compare`")
    return inside, entry["name"], entry["probe"]


def check_identity(run: AnalysisRun, entry: dict[str, Any], out_dir: Path) -> None:
    """The run folder must still hold the run compare.json records: its run.json against the identity
    compare recorded (settings, models, checkpoints and their sha256, images, input size, seed, ...),
    as compare checks a folder before reusing it; for a compare.json without identities, the models
    and the settings it lists."""
    from .runner import _differences

    identity = entry.get("identity")
    if isinstance(identity, dict):
        changed = _differences(run.marker, identity)
    else:
        settings = run.marker.get("settings") or {}
        changed = [f"settings ({k})" for k, v in (entry.get("settings") or {}).items()
                   if k in settings and str(settings[k]) != str(v) and
                   json.dumps(settings[k], default=str) != json.dumps(v, default=str)]
        if entry.get("models") is not None and list(entry["models"]) != list(run.marker.get("models") or []):
            changed.append("models")
    if changed:
        raise UsageError(f"{run.path} no longer holds the {run.name} run {out_dir / COMPARE_FILE} records (other "
                         f"{'; '.join(changed)}): rerun `stm-probe compare` to rebuild the report from runs that "
                         "belong")
