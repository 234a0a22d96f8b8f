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
    models = [models] if isinstance(models, str) else list(models)
    call = {"api": "stm_probe.run", "probe_name": probe, "models": models, "data": None if data is None else str(data),
            "out": None if out is None else str(out),
            "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()}}
    run_values = {"model": tuple(models), "data": None if data is None else str(data),
                  "out": None if out is None else str(out)}
    return execute(probe, {**run_values, **options}, call, write_files=out is not None)


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
    from .probes import run_probe  # torch and timm load from here on
    from .runtime.session import open_session

    session = open_session(probe_name, options, call, write_files=write_files)
    return run_probe(cls(config, session), session)
