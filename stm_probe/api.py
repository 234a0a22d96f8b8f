"""The Python API: ``stm_probe.run(probe, models, data=None, out=None, **options) -> DataFrame``,
``stm_probe.load_run(folder) -> DataFrame`` and ``stm_probe.list_models(...)``.

Every CLI option is a keyword argument (``input_size=64``, ``num_images=2``, ``kind=["scale"]``,
``pretrained=True``); the result is the tidy rows of ``<probe>.csv``, with the run's notes, manifest
and folder in ``frame.attrs``. Files (CSV, per-image values, figures, manifest) are written only when
``out`` is given; `load_run` reads such a folder back into the same DataFrame.
"""
from __future__ import annotations

import dataclasses
from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

from .errors import UsageError
from .options import (RunOptions, check_checkpoint_file, check_out_folder, check_unified_input_size, coerce,
                      did_you_mean)


def run(probe: str | type, /, models: str | Sequence[str], data: str | Path | None = None,
        out: str | Path | None = None, **options: Any) -> Any:
    """Run one probe over ``models`` and return its tidy rows (pandas DataFrame).

    ``probe`` is a registered probe's name (``"erf"``, see ``stm_probe.PROBES``) or a `stm_probe.probes.Probe`
    subclass of your own (written in a notebook, say), run by the same loop.

    ``frame.attrs`` holds ``notes`` (list of str: what the run's summary says, e.g. that unified models
    ran at random init), ``manifest`` (dict: the contents of manifest.json) and ``folder`` (the run
    folder as a Path, None without ``out``). Raises `stm_probe.errors.UsageError` (one line) on bad input.

    Examples::

        frame = stm_probe.run("invariance", models=["unified_tiny_conv"], kind=["scale"], input_size=64,
                              num_images=2)
        frame = stm_probe.run("erf", models="unified_tiny_attn", pretrained=True, out="runs/erf-tiny")
        frame.attrs["notes"], frame.attrs["folder"]
    """
    models = _model_names(models)
    data, out = _path_text(data, "data"), _path_text(out, "out")
    name = probe if isinstance(probe, str) else getattr(probe, "name", None)
    call = {"api": "stm_probe.run", "probe_name": name, "models": models, "data": None if data is None else str(data),
            "out": None if out is None else str(out),
            "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()}}
    run_values = {"model": tuple(models), "data": None if data is None else str(data),
                  "out": None if out is None else str(out)}
    return execute(probe, {**run_values, **options}, call, write_files=out is not None)


def _model_names(models: Any) -> list[str]:
    """``models`` as a list of names: one name or a sequence of names (UsageError for anything else)."""
    if isinstance(models, str):
        return [models]
    if isinstance(models, (list, tuple)) and models and all(isinstance(m, str) for m in models):
        return list(models)
    raise UsageError(f"models={models!r}: give a model name or a list of names, e.g. models=['unified_tiny_attn']")


def _path_text(value: Any, name: str) -> str | None:
    """A path keyword (str, os.PathLike or bytes) as text; None stays None (UsageError for anything else)."""
    import os

    if value is None:
        return None
    if isinstance(value, (str, bytes, os.PathLike)):
        return os.fsdecode(value)
    raise UsageError(f"{name}={value!r}: give a path (str or pathlib.Path)")


def execute(probe_name: str | type, values: dict[str, Any], call: dict[str, Any], write_files: bool = True) -> Any:
    """Run the probe (a registered probe's name, or a `Probe` subclass) with ``values`` (`prepare`); the
    DataFrame carries the run's notes, manifest and folder in ``attrs``, and the caller's TF32 / denormal
    flags come back afterwards."""
    from .runtime.loop import run_probe
    from .runtime.outputs import random_init_note
    from .runtime.precision import numeric_flags

    probe, session = prepare(probe_name, values, call, write_files)
    with numeric_flags(session.precision):
        frame = run_probe(probe, session)
    notes = session.record.data.get("notes")
    frame.attrs.update(notes=list(session.notes + random_init_note(frame) if notes is None else notes),
                       manifest=session.record.data, folder=session.out_dir)
    return frame


def prepare(probe_name: str | type, values: dict[str, Any], call: dict[str, Any],
            write_files: bool = True) -> tuple[Any, Any]:
    """Split ``values`` into shared and probe settings, check them and open the session: (probe, session),
    ready for `run_probe`. ``probe_name`` is a registered probe's name or a `Probe` subclass. `compare`
    resolves a run's identity through here too."""
    from .probes import Probe, get_probe

    if isinstance(probe_name, str):
        cls = get_probe(probe_name)
    elif isinstance(probe_name, type) and issubclass(probe_name, Probe) and probe_name.name:
        cls, probe_name = probe_name, probe_name.name
    else:
        raise UsageError(f"{probe_name!r} is no probe: give a probe's name (see stm_probe.PROBES) or a subclass of "
                         "stm_probe.probes.Probe with a name")
    shared = {f.name for f in fields(RunOptions)}
    own = {f.name for f in fields(cls.Config)}
    unknown = [k for k in values if k not in shared | own]
    if unknown:
        raise UsageError(f"{probe_name}: unknown option {unknown[0]!r}{did_you_mean(unknown[0], sorted(shared | own))}")
    options = coerce(RunOptions, {k: v for k, v in values.items() if k in shared and v is not None or k == "model"})
    config = coerce(cls.Config, {k: v for k, v in values.items() if k in own})
    if options.data is None and cls.default_data(config) is not None:
        options = dataclasses.replace(options, data=cls.default_data(config))
    light_checks(options)
    from .runtime.session import open_session

    session = open_session(probe_name, options, call, write_files=write_files)
    session.source = cls.adapt_source(config, session.source)  # the probe returns it; the runtime sets it
    return cls(config, session), session


def load_run(folder: str | Path) -> Any:
    """The tidy rows of a finished run folder (``<probe>.csv``) as `run` returns them, with ``notes``,
    ``manifest`` and ``folder`` in ``frame.attrs``, read from the folder's files (no torch).

    UsageError (one line) when the folder is no finished run: missing, still running or interrupted
    (rerun with ``--resume``), a compare folder (load one of its analysis subfolders), or a damaged CSV.

    Example::

        frame = stm_probe.load_run("runs/erf-tiny")
        frame[frame.metric == "area_ratio"].pivot_table(index="model", columns="stage", values="value")
    """
    import json

    from .probes import metric_ranges
    from .runtime.results import read_results

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder: give the --out folder of a finished run")
    manifest_path = folder / "manifest.json"
    marker = folder / "run.json"
    try:
        status = json.loads(marker.read_text(encoding="utf-8")).get("status") if marker.is_file() else None
        manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else None
    except (OSError, ValueError, AttributeError):
        raise UsageError(f"{folder}: run.json or manifest.json is damaged (not JSON): rerun the probe") from None
    if manifest is None or status == "incomplete":
        if (folder / "report.md").is_file() or any(p.is_dir() and (p / "manifest.json").is_file()
                                                   for p in folder.iterdir()):
            raise UsageError(f"{folder} is a compare folder: load one of its analysis subfolders, e.g. {folder}/erf")
        raise UsageError(f"{folder} holds no finished run (no manifest.json, or run.json says incomplete): finish it "
                         "with the same command and --resume")
    probe = manifest.get("analysis")
    frame = read_results(folder / f"{probe}.csv", ranges=metric_ranges(probe))
    frame.attrs.update(notes=list(manifest.get("notes", [])), manifest=manifest, folder=folder)
    return frame


def list_models(pattern: str | Sequence[str] | None = None) -> list[str]:
    """Canonical names of the unified models matching ``pattern`` (names, aliases or globs; all 20 for None).

    Example: ``stm_probe.list_models("unified_*_micro")`` -> ``['unified_halo_micro', ..., 'unified_dcn_v3_micro']``.
    Any timm architecture name works in `run` and `create_model` too.
    """
    from .models.names import select_unified

    patterns = [pattern] if isinstance(pattern, str) else (list(pattern) if pattern is not None else None)
    return [spec.name for spec in select_unified(patterns)]


def light_checks(options: RunOptions) -> None:
    """The checks that need neither torch nor timm, so the usual mistakes are reported at once
    (misspelt unified model, input size, missing checkpoint, data or output paths). The full
    checks follow in `open_session`."""
    from .models.names import is_glob, match_unified, normalise, unified_suggestions

    if options.cmap is not None:
        from .plots.style import check_cmap

        check_cmap(options.cmap)  # a misspelt colour map is refused now, not after the run's compute

    unified_only = True
    for pattern in options.model:
        if match_unified(pattern):
            continue
        unified_only = False
        if normalise(pattern).startswith("unified_") and not is_glob(pattern):
            close = [text for _, text in unified_suggestions(pattern)[:3]]
            hint = f"did you mean {', '.join(close)}?" if close else "run `stm-probe models` for the list"
            raise UsageError(f"unknown model '{pattern}': {hint}")
    if unified_only:
        check_unified_input_size(options.input_size)
    for item in options.checkpoint:
        check_checkpoint_file(item.split("=", 1)[1] if "=" in item and not Path(item).exists() else item)
    if options.checkpoint_dir is not None and not Path(options.checkpoint_dir).expanduser().is_dir():
        what = "is a file, not a folder" if Path(options.checkpoint_dir).expanduser().exists() else "does not exist"
        raise UsageError(f"--checkpoint-dir {options.checkpoint_dir} {what}: pass the folder holding the "
                         "checkpoint files")
    if options.data is not None and ":" not in options.data and options.data.partition("?")[0] != "synthetic" and \
            not Path(options.data).expanduser().exists():
        raise UsageError(f"--data {options.data}: no such file or directory; pass an image folder, an ImageFolder "
                         "tree or a text file list")
    shift, _, shift_path = (options.data or "").partition(":")  # the prefixes of stm_probe.data.shift
    if shift.lower() in ("imagenet-v2", "imagenet-sketch", "imagenet-r", "imagenet-a") and \
            not Path(shift_path).expanduser().is_dir():
        raise UsageError(f"--data {options.data}: no such folder; pass the {shift} folder after '{shift}:'")
    if options.labels is not None and not Path(options.labels).expanduser().is_file():
        what = "is a folder, not a file" if Path(options.labels).expanduser().is_dir() else "no such file"
        raise UsageError(f"--labels {options.labels}: {what}; pass ILSVRC2012_validation_ground_truth.txt, "
                         "LOC_val_solution.csv or a filename,label CSV")
    check_out_folder(options.out)
