"""A probe run's files: the tidy rows (`tidy_rows`), ``per_image.csv`` (`per_image_frame`), ``<probe>.csv``,
artefacts, figures and ``manifest.json`` (`write_outputs`), and the summary printed at the end."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .units import Summary, UnitResult

if TYPE_CHECKING:
    from ..probes.base import Probe


def tidy_rows(probe: Probe, results: list[UnitResult]) -> list[dict[str, Any]]:
    """Tidy rows: repeat 0 gives value/CI/n; the repeats give repeat_mean/low/high."""
    from ..core.stats import t_interval

    opts = probe.session.options
    summaries: dict[tuple, dict[int, tuple]] = {}
    columns: dict[tuple, dict[str, str]] = {}
    for result, summarised in probe.summarise_results(results, opts.seed):
        for key, summary in summarised.items():
            group = (result.columns["model"], result.columns["weights"], result.unit.parts, key)
            summaries.setdefault(group, {})[result.unit.repeat] = summary
            columns[group] = result.columns
    rows = []
    constants = probe.constants()
    n_files = len(results[0].skipped_files) if results else 0
    for group, by_repeat in summaries.items():
        key = group[-1]
        value, low, high, n, skipped = Summary(*by_repeat[min(by_repeat)])  # a probe may return plain tuples
        if n == 0:
            continue  # the metric applies to no image (e.g. accuracy without labels): no row
        per_repeat = [by_repeat[r][0] for r in sorted(by_repeat)]
        mean, rep_low, rep_high = t_interval(np.asarray(per_repeat))
        rows.append({**columns[group], **dict(zip(probe.setting_columns, key[:-1])), "metric": key[-1],
                     "value": value, "ci_low": low, "ci_high": high, "n_images": n, "n_skipped": skipped + n_files,
                     "repeats": len(per_repeat), "repeat_mean": mean, "repeat_low": rep_low, "repeat_high": rep_high,
                     **constants, "seed": opts.seed, "input_size": opts.input_size,
                     **({"replicate": opts.replicate} if getattr(opts, "replicate", None) is not None else {})})
    return rows


def per_image_frame(probe: Probe, results: list[UnitResult]) -> Any:
    """Every per-image value: image, path, model, weights, <settings>, repeat, metric, value."""
    import pandas as pd

    paths = np.asarray(probe.session.source.paths, dtype=object)
    parts = []
    for result in results:
        for key, per_image in probe.per_image(result.values).items():
            settings = dict(zip(probe.setting_columns, key[:-1]))
            parts.append(pd.DataFrame({"image": result.indices, "path": paths[result.indices],
                                       "model": result.columns["model"], "weights": result.columns["weights"],
                                       **settings, "repeat": result.unit.repeat, "metric": key[-1],
                                       "value": np.asarray(per_image, dtype=np.float64)}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def write_outputs(probe: Probe, session: Any, store: Any, frame: Any, results: list[UnitResult], resumed: int,
                  seconds: float) -> None:
    """Data files, then the manifest with their sha256 (the figures check them), then the figures
    and the manifest again, last; then the run is marked complete."""
    from .results import file_checksums, write_frame

    out = store.path
    record = session.record
    write_frame(out / f"{probe.name}.csv", frame)
    per_image = per_image_frame(probe, results)
    if len(per_image):
        write_frame(out / "per_image.csv", per_image)
    outputs = [out / f"{probe.name}.csv"] + ([out / "per_image.csv"] if len(per_image) else [])
    outputs += probe.artefacts(out, results)
    skipped = results[0].skipped_files if results else []
    notes = session.notes + random_init_note(frame)
    record.update(num_images=int(len(np.unique(np.concatenate([r.indices for r in results])))) if results else 0,
                  num_skipped_files=len(skipped), skipped_files=skipped, units_resumed=resumed,
                  units_computed=len(results) - resumed, notes=notes, compute_seconds=round(seconds, 3),
                  checksums=file_checksums(out, outputs))
    record.write()
    if probe.plot:
        outputs += plot_run(probe.plot, out, probe.name)
    for path in outputs:
        record.add_output(path)
    record.write()
    store.complete()
    lines = [f"{probe.name}: {len(session.models)} model(s), {record.data['num_images']} image(s)"
             + (f", {len(skipped)} unreadable file(s) skipped" if skipped else "")
             + (f", {resumed} unit(s) resumed" if resumed else ""), *probe.headline(frame)]
    for note in notes:
        lines.append(f"note: {note}")
    if skipped:
        print(f"stm-probe: skipped {len(skipped)} file(s) that could not be read: {', '.join(skipped[:3])}"
              + (f", and {len(skipped) - 3} more" if len(skipped) > 3 else ""), file=sys.stderr)
    print("\n".join(lines))
    print(f"results in {out}")


def random_init_note(frame: Any) -> list[str]:
    unified = frame[(frame["weights"] == "random-init") & (frame["stm"] != "timm")]["model"].unique()
    if len(unified) > 1:
        return [f"{len(unified)} unified models ran at random init: layer scales start at 1e-6, so each is nearly "
                "its stem and downsampling layers and the STMs give near-identical numbers; pass --checkpoint to "
                "compare STMs"]
    return []


def plot_run(target: str, out_dir: Path, probe_name: str) -> list[Path]:
    """Call a plot function ``module:function(out_dir, probe_name)`` that reads the run folder's files."""
    module_name, func = target.split(":")
    return getattr(importlib.import_module(module_name), func)(Path(out_dir), probe_name)
