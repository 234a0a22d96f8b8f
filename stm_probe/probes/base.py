"""`Probe`, the one abstraction every analysis implements; `stm_probe.runtime.loop.run_probe` runs it.

A probe declares

* ``Config``: its settings, a frozen dataclass of `stm_probe.options.option` fields (CLI options,
  API keywords, manifest entry and cache key all come from it);
* ``setting_columns``: the CSV columns that name a setting (e.g. ``kind, level``);
* ``units()``: the passes over the images one model needs (one per setting group and repeat);
* ``measure(model, unit, batch)``: per-image values of one batch (`Values`), ``{(*setting values,
  metric): array (B, ...)}`` (``key(...)`` names the fields; an `Extra` metric carries artefact
  data, never summarised);
* optionally ``transform``/``unit_batches`` (the images it needs), ``summarise`` (per-image values ->
  value and interval; default: `stats.summarise_values` by ``statistics[metric]``; or
  ``summarise_results`` over every unit at once, for numbers that pair models),
  ``artefacts`` (array files), ``plot`` (module:function drawing from the run folder) and
  ``headline`` (summary lines).

`run_probe` (`stm_probe.runtime.loop`) owns everything else: models (one in memory at a time),
batches and progress bars, seeding, gathering per-image values, per-unit persistence and resume,
empty-data checks, tidy rows, ``<probe>.csv``, ``per_image.csv``, figures, ``manifest.json`` and the
summary. `Unit`, `UnitResult`, `Key` and the CSV columns live in `stm_probe.runtime.units` (the
loop's layer) and are re-exported here for probes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np

from ..errors import UsageError
from ..runtime.units import (ID_COLUMNS, RUN_COLUMNS, VALUE_COLUMNS, Extra, Key, Summary, Unit, UnitResult, Values,
                             is_extra, key_type)

__all__ = ["ID_COLUMNS", "RUN_COLUMNS", "VALUE_COLUMNS", "Extra", "Key", "Probe", "Summary", "Unit", "UnitResult",
           "Values", "clean_forward", "is_extra", "require_finite"]


class Probe:
    """Base class of every probe (see module docstring). Instances hold one run's config and session."""

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    Config: ClassVar[type] = object
    setting_columns: ClassVar[tuple[str, ...]] = ()
    statistics: ClassVar[dict[str, str]] = {}  # metric -> "rate" | "mean" | "max"
    #: figure file stem (or its start) -> what the figure shows, for the captions of compare's report
    figure_captions: ClassVar[dict[str, str]] = {}
    #: metric -> (low, high): a value outside marks a damaged file when plots, compare or load_run read it
    metric_ranges: ClassVar[dict[str, tuple[float, float]]] = {}
    randomised: ClassVar[bool] = True  # draws at random (so --repeats means something)
    reads_corrupted_variants: ClassVar[bool] = False  # measures every variant of an ImageNet-C tree
    uses_labels: ClassVar[bool] = True  # scores the model's outputs against the data's labels
    plot: ClassVar[str | None] = "stm_probe.plots.generic:plot_generic"
    skip_reason: ClassVar[str] = "no value could be measured"

    def __init__(self, config: Any, session: Any) -> None:
        self.config = config
        self.session = session

    # --- what a probe may override -------------------------------------------------------------
    @classmethod
    def default_data(cls, config: Any) -> str | None:
        """The data this probe uses when --data is not given (None: the embedded sample images)."""
        return None

    @classmethod
    def adapt_source(cls, config: Any, source: Any) -> Any:
        """The image source this probe measures, made from the session's (returned, not set: the runtime
        puts it in the session before the probe is built). Default: unchanged."""
        return source

    def check(self) -> list[str]:
        """Validate settings against the session (raise UsageError); runs before any folder is made and
        before `units` (what it derives from the settings, e.g. the attack specs, may be kept on the probe
        for `units`). Returns notes for the run (lines printed after it and kept in its manifest); the
        session is not changed."""
        return []

    def check_model(self, model: Any) -> list[str]:
        """Validate one loaded model (e.g. it exposes stages; raise UsageError); returns notes as `check`."""
        return []

    def manifest(self) -> dict[str, Any]:
        """Entries this probe adds to ``manifest.json`` beside its settings (e.g. units, versions); after `check`."""
        return {}

    def model_label_space(self, model: Any) -> Any:
        """The label space the probe scores ``model``'s outputs in (default: the loaded model's own;
        a probe that trains its own head on the data returns the data's)."""
        return model.label_space

    def transform(self) -> Any:
        """PIL image -> (3, H, W) tensor in [0, 1]; default: the standard eval view."""
        from ..data import eval_transform

        return eval_transform(self.session.options.input_size, "center")

    def loader_batch_size(self) -> int:
        return self.session.options.batch_size

    def unit_batches(self, unit: Unit, batches: Any) -> Iterator[Any]:
        """The batches one unit measures, made from the loader's (`stm_probe.runtime.shards.LoaderStream`:
        iterate it, or regroup images within ``batches.chunks()``); each must have ``indices`` (B,).
        Default: as loaded."""
        return iter(batches)

    def units(self) -> list[Unit]:
        return [Unit(self.name)]

    def measure(self, model: Any, unit: Unit, batch: Any) -> dict[Key, np.ndarray]:
        """Per-image values of one batch (a `Values` or a plain dict): ``{key: array (B, ...)}``, the key
        ``(*setting values, metric)`` (see `key`), an `Extra` metric for artefact data."""
        raise NotImplementedError

    def skip_reason_for(self, unit: Unit) -> str:
        """Why a unit measured no image (the one line a run ends with)."""
        return self.skip_reason

    def unit_columns(self, model: Any, unit: Unit) -> dict[str, str]:
        """The identifying columns of one model x unit (default: the model's own)."""
        return model.columns()

    def summarise(self, values: dict[Key, np.ndarray], seed: int) -> dict[Key, Summary]:
        """Per-image values -> {key: Summary(value, ci_low, ci_high, n_images, n_skipped)}."""
        from ..core.stats import summarise_values

        n_boot = self.session.options.bootstrap
        out = {}
        for key, per_image in values.items():
            if is_extra(key):
                continue  # artefact data (e.g. saved examples), not a metric
            statistic = self.statistics.get(key[-1], "mean")
            value, low, high, n = summarise_values(per_image, statistic, n_boot, seed=_key_seed(seed, key))
            out[key] = Summary(value, low, high, n, 0)
        return out

    def summarise_results(self, results: list[UnitResult], seed: int) -> list[tuple[UnitResult, dict[Key, tuple]]]:
        """Each unit's summaries; default: `summarise` of each unit's values alone. A probe whose numbers
        pair units (e.g. CKA between models) overrides this."""
        return [(result, self.summarise(result.values, seed)) for result in results]

    def per_image(self, values: dict[Key, np.ndarray]) -> dict[Key, np.ndarray]:
        """Per-image scalars (N,) for per_image.csv; default: the 1-D metric values as they are."""
        return {k: v for k, v in values.items() if v.ndim == 1 and not is_extra(k)}

    def constants(self) -> dict[str, Any]:
        """Settings that change numbers, repeated on every CSV row (beside seed and input_size)."""
        return {}

    def artefacts(self, out_dir: Path, results: list[UnitResult]) -> list[Path]:
        return []

    def headline(self, frame: Any) -> list[str]:
        """Lines printed after a run (the key numbers of ``frame``, the tidy table)."""
        return []

    @staticmethod
    def compare_columns(name: str, frame: Any) -> list[Any]:
        """`stm-probe compare`'s headline columns (`stm_probe.probes.columns.HeadlineSpec`) from this probe's
        tidy CSV ``frame``; ``name`` is the analysis's name in the comparison. None by default."""
        return []

    # --- derived -------------------------------------------------------------------------------
    @classmethod
    def key(cls, *values: Any, **named: Any) -> Key:
        """A key of this probe, named by its setting columns and ``metric`` (equal to the plain tuple)."""
        return key_type(cls.setting_columns)(*values, **named)

    @property
    def columns(self) -> tuple[str, ...]:
        replicate = ("replicate",) if getattr(self.session.options, "replicate", None) is not None else ()
        return (*ID_COLUMNS, *self.setting_columns, *VALUE_COLUMNS, *self.constants(), *RUN_COLUMNS, *replicate)

    def repeated(self, units: list[Unit]) -> list[Unit]:
        """``units`` for every repeat (repeat-major within a setting)."""
        count = self.session.options.repeats if self.randomised else 1
        return [Unit(u.label if r == 0 else f"{u.label} (repeat {r})", u.parts, r) for u in units
                for r in range(count)]


def _key_seed(seed: int, key: Key) -> int:
    from ..core.seeds import stream_seed

    return stream_seed(seed, "bootstrap", *key)


def require_finite(tensor: Any, model: str, what: str = "logits") -> None:
    """One line (UsageError) when a model produced NaN or Inf: its numbers cannot be trusted."""
    import torch

    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise UsageError(f"{model} produced {bad} non-finite {what} (NaN/Inf): its weights or inputs are broken; "
                         "check the checkpoint (nothing is reported for a model that cannot be trusted)")


def clean_forward(model: Any, batch: Any, device: Any) -> tuple[Any, Any, Any]:
    """The batch's images (B, 3, H, W) and labels (B,) on ``device`` and the model's logits (B, C) on the
    clean images (no gradients), checked finite."""
    import torch

    images, labels = batch.images.to(device), batch.labels.to(device)
    with torch.no_grad():
        logits = model.net(images)
    require_finite(logits, model.name)
    return images, labels, logits
