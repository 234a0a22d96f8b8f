"""The Python API: ``stm_probe.run(probe, models, data=None, out=None, **options) -> DataFrame``.

Every CLI option is a keyword argument (``input_size=64``, ``num_images=2``, ``kind=["scale"]``);
the result is the tidy rows of ``<probe>.csv``. Files (CSV, per-image values, figures, manifest)
are written only when ``out`` is given.
"""
from __future__ import annotations

import dataclasses
from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

from .errors import UsageError
from .options import RunOptions, coerce, did_you_mean


def run(probe: str, /, models: str | Sequence[str], data: str | Path | None = None, out: str | Path | None = None,
        **options: Any) -> Any:
    """Run one probe over ``models`` and return its tidy rows (pandas DataFrame).

    Example: ``stm_probe.run("invariance", models=["unified_tiny_conv"], kind=["scale"], input_size=64,
    num_images=2)``. Raises `stm_probe.errors.UsageError` (one line) on bad input.
    """
    models = _model_names(models)
    data, out = _path_text(data, "data"), _path_text(out, "out")
    call = {"api": "stm_probe.run", "probe_name": probe, "models": models, "data": None if data is None else str(data),
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


def execute(probe_name: str, values: dict[str, Any], call: dict[str, Any], write_files: bool = True) -> Any:
    """Split ``values`` into shared and probe settings, open the session and run the probe."""
    from .probes import get_probe

    cls = get_probe(probe_name)
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
    from .probes import run_probe  # torch and timm load from here on
    from .runtime.session import open_session

    session = open_session(probe_name, options, call, write_files=write_files)
    return run_probe(cls(config, session), session)


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
    if unified_only and options.input_size is not None and options.input_size % 32:
        raise UsageError(f"--input-size {options.input_size} is not a multiple of 32, which the unified models need: "
                         f"use {max(32, round(options.input_size / 32) * 32)}")
    for item in options.checkpoint:
        path = Path(item.split("=", 1)[1]) if "=" in item and not Path(item).exists() else Path(item)
        if path.is_dir():
            raise UsageError(f"checkpoint '{path}' is a directory: give the weights file inside it")
        if not path.is_file():
            raise UsageError(f"checkpoint '{path}' does not exist: check the path given to --checkpoint")
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
    if options.out is not None and Path(options.out).exists() and not Path(options.out).is_dir():
        raise UsageError(f"--out {options.out} is an existing file, not a folder: choose a folder path")
