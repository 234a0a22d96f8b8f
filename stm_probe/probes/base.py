"""`Probe`, the one abstraction every analysis implements, and `run_probe`, THE loop.

A probe declares

* ``Config``: its settings, a frozen dataclass of `stm_probe.options.option` fields (CLI options,
  API keywords, manifest entry and cache key all come from it);
* ``setting_columns``: the CSV columns that name a setting (e.g. ``kind, level``);
* ``units()``: the passes over the images one model needs (one per setting group and repeat);
* ``measure(model, unit, batch)``: per-image values of one batch, ``{(*setting values, metric):
  array (B, ...)}``;
* optionally ``transform``/``batches`` (the images it needs), ``summarise`` (per-image values ->
  value and interval; default: `stats.summarise_values` by ``statistics[metric]``; or
  ``summarise_results`` over every unit at once, for numbers that pair models),
  ``artefacts`` (array files), ``plot`` (module:function drawing from the run folder) and
  ``headline`` (summary lines).

`run_probe` owns everything else: models (one in memory at a time), batches and progress bars,
seeding, gathering per-image values, per-unit persistence and resume, empty-data checks, tidy
rows, ``<probe>.csv``, ``per_image.csv``, figures, ``manifest.json`` and the summary.

Tidy CSV columns: ``model, stm, size, weights, <setting columns>, metric, value, ci_low, ci_high,
n_images, n_skipped, repeats, repeat_mean, repeat_low, repeat_high, <probe constants>, seed,
input_size``. ``value``/``ci_*``/``n_images`` describe repeat 0 (so a run with ``--repeats 1``
gives the same numbers); ``repeat_*`` the mean and Student-t 95% interval over the repeats.
"""
from __future__ import annotations

import hashlib
import importlib
import itertools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Sequence

import numpy as np

from ..errors import UsageError
from ..label_spaces import chance_note
from ..options import settings_dict

ID_COLUMNS = ("model", "stm", "size", "weights")
VALUE_COLUMNS = ("metric", "value", "ci_low", "ci_high", "n_images", "n_skipped", "repeats", "repeat_mean",
                 "repeat_low", "repeat_high")
RUN_COLUMNS = ("seed", "input_size")
#: decoded images are kept in memory between units when they take less than this (bytes)
CACHE_BYTES = 2 << 30

Key = tuple  # (*setting values, metric)


@dataclass(frozen=True)
class Unit:
    """One pass over the images for one model: a setting group of the probe, and the repeat."""

    label: str  # for progress bars, e.g. "translation" or "pgd Linf eps=4"
    parts: tuple = ()  # what defines it (hashable, JSON-able), part of the cache key
    repeat: int = 0


@dataclass
class UnitResult:
    """Per-image values of one model x unit, gathered over batches."""

    columns: dict[str, str]  # model, stm, size, weights
    unit: Unit
    indices: np.ndarray  # (N,) image positions in the session's source
    values: dict[Key, np.ndarray]  # (N, ...) per key
    skipped_files: list[str] = field(default_factory=list)

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {"indices": self.indices, **{f"v{i}": v for i, v in enumerate(self.values.values())}}
        meta = {"columns": self.columns, "label": self.unit.label, "parts": list(self.unit.parts),
                "repeat": self.unit.repeat, "keys": [list(k) for k in self.values],
                "skipped_files": self.skipped_files}
        return arrays, meta

    @classmethod
    def from_arrays(cls, unit: Unit, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> "UnitResult":
        keys = [tuple(k) for k in meta["keys"]]
        values = {k: arrays[f"v{i}"] for i, k in enumerate(keys)}
        return cls(meta["columns"], unit, arrays["indices"], values, list(meta.get("skipped_files", [])))


class Probe:
    """Base class of every probe (see module docstring). Instances hold one run's config and session."""

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    Config: ClassVar[type] = object
    setting_columns: ClassVar[tuple[str, ...]] = ()
    statistics: ClassVar[dict[str, str]] = {}  # metric -> "rate" | "mean" | "max"
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

    def check(self) -> None:
        """Validate settings against the session (raise UsageError); runs before any folder is made."""

    def check_model(self, model: Any) -> None:
        """Validate one loaded model (e.g. it exposes stages); raise UsageError."""

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

    def batches(self, batches: Iterable[Any]) -> Iterator[Any]:
        """Group or move the loader's batches; each must have ``indices`` (B,). Default: as loaded."""
        return iter(batches)

    def unit_batches(self, unit: Unit, batches: Iterable[Any]) -> Iterator[Any]:
        """The batches one unit measures (e.g. corrupted copies of the loader's clean batches);
        default: `batches` of the loader's batches, the same for every unit."""
        return self.batches(batches)

    def unit_chunks(self, unit: Unit, chunks: Iterable[tuple[int, list]]) -> Iterator[tuple[int, Any]]:
        """(chunk number, batch) of one unit over this process's chunks of loader batches. Default:
        `unit_batches` chunk by chunk, so a probe's regrouping never crosses a chunk (whatever the
        number of processes, a batch holds the same images)."""
        for number, loader_batches in chunks:
            for batch in self.unit_batches(unit, loader_batches):
                yield number, batch

    def units(self) -> list[Unit]:
        return [Unit(self.name)]

    def measure(self, model: Any, unit: Unit, batch: Any) -> dict[Key, np.ndarray]:
        raise NotImplementedError

    def skip_reason_for(self, unit: Unit) -> str:
        """Why a unit measured no image (the one line a run ends with)."""
        return self.skip_reason

    def unit_columns(self, model: Any, unit: Unit) -> dict[str, str]:
        """The identifying columns of one model x unit (default: the model's own)."""
        return model.columns()

    def summarise(self, values: dict[Key, np.ndarray], seed: int) -> dict[Key, tuple]:
        """Per-image values -> {key: (value, ci_low, ci_high, n_images, n_skipped)}."""
        from ..core.stats import summarise_values

        n_boot = self.session.options.bootstrap
        out = {}
        for key, per_image in values.items():
            if str(key[-1]).startswith("_"):
                continue  # artefact data (e.g. saved examples), not a metric
            statistic = self.statistics.get(key[-1], "mean")
            value, low, high, n = summarise_values(per_image, statistic, n_boot, seed=_key_seed(seed, key))
            out[key] = (value, low, high, n, 0)
        return out

    def summarise_results(self, results: list[UnitResult], seed: int) -> list[tuple[UnitResult, dict[Key, tuple]]]:
        """Each unit's summaries; default: `summarise` of each unit's values alone. A probe whose numbers
        pair units (e.g. CKA between models) overrides this."""
        return [(result, self.summarise(result.values, seed)) for result in results]

    def per_image(self, values: dict[Key, np.ndarray]) -> dict[Key, np.ndarray]:
        """Per-image scalars (N,) for per_image.csv; default: the 1-D metric values as they are."""
        return {k: v for k, v in values.items() if v.ndim == 1 and not str(k[-1]).startswith("_")}

    def constants(self) -> dict[str, Any]:
        """Settings that change numbers, repeated on every CSV row (beside seed and input_size)."""
        return {}

    def artefacts(self, out_dir: Path, results: list[UnitResult]) -> list[Path]:
        return []

    def headline(self, frame: Any) -> list[str]:
        return []

    # --- derived -------------------------------------------------------------------------------
    @property
    def columns(self) -> tuple[str, ...]:
        return (*ID_COLUMNS, *self.setting_columns, *VALUE_COLUMNS, *self.constants(), *RUN_COLUMNS)

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


# --- the loop ------------------------------------------------------------------------------------
@dataclass
class _Shard:
    """One process's values of one unit: per measured batch (chunk number, image positions (B,),
    {key: (B, ...)}), in the order measured, and the files it could not read as (position, 'path
    (reason)')."""

    parts: list[tuple[int, np.ndarray, dict[Key, np.ndarray]]]
    skipped: list[tuple[int, str]]


class _ShardBatches:
    """This process's share of the images as loader batches, decoded once and replayed for later
    units while they fit in memory.

    The source positions are cut into chunks of ``--batch-size`` consecutive images (rounded up to
    whole loader batches); process r of N takes chunks r, r + N, r + 2N, ... (all of them in one
    process). A probe's batches are made within a chunk, so every batch holds the same images
    whatever N is, and values that depend on the batch (random draws, batched float arithmetic)
    are the same as in one process. `chunks` yields (chunk number, the chunk's loader batches).
    """

    def __init__(self, loader: Any, chunk_images: int, rank: int, world_size: int, pin_memory: bool) -> None:
        from torch.utils.data import DataLoader

        base = loader.loader
        per_batch = int(base.batch_size)
        count = len(base.dataset)
        self.chunk = per_batch * -(-chunk_images // per_batch)
        plan: list[list[int]] = []
        self.owners: list[int] = []  # chunk number of each planned loader batch
        for number in range(rank, -(-count // self.chunk), world_size):
            start, stop = number * self.chunk, min((number + 1) * self.chunk, count)
            for first in range(start, stop, per_batch):
                plan.append(list(range(first, min(first + per_batch, stop))))
                self.owners.append(number)
        self.num_images = sum(len(p) for p in plan)
        self.loader = DataLoader(base.dataset, batch_sampler=plan, num_workers=base.num_workers,
                                 collate_fn=base.collate_fn, pin_memory=pin_memory,
                                 generator=base.generator) if plan else None
        self.cache: list[tuple[int, Any]] | None = None
        self.skipped: list[tuple[int, str]] = []

    def _batches(self) -> Iterator[tuple[int, Any]]:
        if self.cache is not None:
            yield from self.cache
            return
        kept: list[tuple[int, Any]] = []
        size, fits, skipped = 0, True, []
        for owner, (batch, failed) in zip(self.owners, self.loader or ()):
            skipped += [(int(f.index), f"{f.path} ({f.reason})") for f in failed]
            if batch is None:
                continue  # every file of the batch failed
            if fits:
                size += batch.images.numel() * batch.images.element_size()
                fits = size <= CACHE_BYTES
                kept = kept + [(owner, batch)] if fits else []
            yield owner, batch
        self.skipped = skipped
        if fits:
            self.cache = kept

    def chunks(self) -> Iterator[tuple[int, Iterator[Any]]]:
        for number, group in itertools.groupby(self._batches(), key=lambda item: item[0]):
            yield number, (batch for _, batch in group)


def _images_hash(source: Any) -> str:
    digest = hashlib.sha256()
    for path, label in zip(source.paths, source.labels):
        digest.update(f"{path}\t{label}\n".encode("utf-8"))
    return digest.hexdigest()[:16]


def _precision_key(session: Any) -> dict[str, Any]:
    from ..runtime.precision import Precision

    return (getattr(session, "precision", None) or Precision()).key()


def unit_parts(probe: Probe, model: str, unit: Unit, checkpoint_sha: str) -> dict[str, Any]:
    """Everything that changes a unit's numbers (its cache key)."""
    from .. import __version__

    opts = probe.session.options
    return {"tool": __version__, "probe": probe.name, "config": settings_dict(probe.config), "model": model,
            "checkpoint": checkpoint_sha, "checkpoint_key": opts.checkpoint_key, "non_strict": opts.non_strict,
            "images": _images_hash(probe.session.source), "input_size": opts.input_size, "seed": opts.seed,
            "unit": list(unit.parts), "repeat": unit.repeat, "precision": _precision_key(probe.session)}


def _measure_shard(probe: Probe, model: Any, unit: Unit, batches: _ShardBatches) -> _Shard:
    """This process's per-image values of one unit, chunk by chunk."""
    parts = []
    with probe.session.progress(batches.num_images, f"{probe.name} {model.name} {unit.label}") as bar:
        for number, batch in probe.unit_chunks(unit, batches.chunks()):
            values = probe.measure(model, unit, batch)
            idx = np.asarray(batch.indices.cpu() if hasattr(batch.indices, "cpu") else batch.indices, dtype=np.int64)
            parts.append((number, idx, {key: np.asarray(value) for key, value in values.items()}))
            bar.update(len(idx))
    return _Shard(parts, batches.skipped)


def _assemble(probe: Probe, columns: dict[str, str], unit: Unit, shards: Sequence[_Shard]) -> UnitResult:
    """One unit's result from every process's shard, in chunk order: the arrays one process would have
    gathered, in the same order (so sums, bootstrap draws and files are the same too)."""
    session = probe.session
    parts = sorted((part for shard in shards for part in shard.parts), key=lambda part: part[0])  # stable
    skipped = [text for _, text in sorted((s for shard in shards for s in shard.skipped), key=lambda s: s[0])]
    if not parts:
        reason = ""
        if skipped:
            more = f", and {len(skipped) - 3} more" if len(skipped) > 3 else ""
            reason = (f": skipped {len(skipped)} of {len(session.source)} images that could not be read: "
                      f"{', '.join(skipped[:3])}{more}")
        raise UsageError(f"no image could be read from {session.source.location}{reason}; check --data")
    gathered: dict[Key, list[np.ndarray]] = {}
    for _, _, values in parts:
        for key, value in values.items():
            gathered.setdefault(key, []).append(value)
    values = {key: np.concatenate(arrays) for key, arrays in gathered.items()}
    indices = np.concatenate([idx for _, idx, _ in parts])
    result = UnitResult(columns, unit, indices, values, skipped)
    if not values or all(not np.isfinite(v.astype(np.float64)).any() for v in values.values()):
        raise UsageError(f"{probe.name} could not measure any image for {columns['model']} ({unit.label}): "
                         f"{probe.skip_reason_for(unit)}")
    return result


def _rows(probe: Probe, results: list[UnitResult]) -> list[dict[str, Any]]:
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
        value, low, high, n, skipped = by_repeat[min(by_repeat)]
        if n == 0:
            continue  # the metric applies to no image (e.g. accuracy without labels): no row
        per_repeat = [by_repeat[r][0] for r in sorted(by_repeat)]
        mean, rep_low, rep_high = t_interval(np.asarray(per_repeat))
        rows.append({**columns[group], **dict(zip(probe.setting_columns, key[:-1])), "metric": key[-1],
                     "value": value, "ci_low": low, "ci_high": high, "n_images": n, "n_skipped": skipped + n_files,
                     "repeats": len(per_repeat), "repeat_mean": mean, "repeat_low": rep_low, "repeat_high": rep_high,
                     **constants, "seed": opts.seed, "input_size": opts.input_size})
    return rows


def _per_image_frame(probe: Probe, results: list[UnitResult]) -> Any:
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


def run_probe(probe: Probe, session: Any) -> Any:
    """Run ``probe`` over every model of ``session``; returns the tidy rows (pandas DataFrame).

    With an output folder: per-unit results are saved as they complete (``--resume`` skips
    them), then ``<probe>.csv``, ``per_image.csv``, artefacts, figures and ``manifest.json``
    (last) are written and the summary printed.

    Under torchrun every process measures its share of the images (`_ShardBatches`) with every
    model; rank 0 gathers each unit's values in chunk order, saves the unit, and alone creates,
    locks and writes the run folder, so the files equal one process's. A failure on any rank stops
    every rank with one line naming it (`stm_probe.runtime.distributed.collective`); the units
    saved so far stay resumable. Every rank returns the rows.
    """
    import pandas as pd

    from ..data import make_loader
    from ..runtime import distributed
    from ..runtime.progress import step_done
    from ..runtime.store import RunFolder, unit_key

    variants = getattr(session.source, "variants", None)
    if variants and not probe.reads_corrupted_variants:
        raise UsageError(f"--data {session.source.location} is an ImageNet-C tree ({len(variants)} corrupted variants "
                         f"of one image set): {probe.name} would measure one variant as if it were the data; run "
                         "`stm-probe corruption` on it, or pass one variant's folder or the clean images")
    probe.check()
    opts = session.options
    main = getattr(session, "rank", 0) == 0
    store = RunFolder(session.out_dir, probe.name, opts.resume, auto_named=opts.out is None) \
        if session.out_dir is not None and main else None
    started = time.perf_counter()
    session.record.update(probe={"name": probe.name, "settings": settings_dict(probe.config),
                                 "class": f"{type(probe).__module__}.{type(probe).__name__}"},
                          seeding="every draw from stream (seed, probe, setting, repeat) x image index "
                                  "(stm_probe.core.seeds); random-init weights: torch seeded with seed before each model")
    try:
        distributed.collective(lambda: _open_store(store, probe, session), name_rank=False)
        if session.out_dir is not None:  # rank 0's folder on every rank (default names carry a timestamp)
            session.out_dir = distributed.share(session.out_dir)
        loader = make_loader(session.source, batch_size=probe.loader_batch_size(), transform=probe.transform(),
                             num_workers=opts.workers, pin_memory=session.device.type == "cuda")
        session.record.update(data={"source": session.source.describe(), "kind": session.source.kind,
                                    "location": str(session.source.location), "labelled": session.source.has_labels,
                                    "transform": repr(loader.loader.dataset.transform)})
        batches = _ShardBatches(loader, max(opts.batch_size, probe.loader_batch_size()), getattr(session, "rank", 0),
                                getattr(session, "world_size", 1), pin_memory=session.device.type == "cuda")
        results: list[UnitResult] = []
        resumed = 0
        for name in session.models:
            sha = _checkpoint_sha(session, name)
            units = probe.repeated(probe.units())
            keys = {u: unit_key(unit_parts(probe, name, u, sha)) for u in units}
            done = set(distributed.share([k for k in keys.values() if store is not None and store.has_unit(k)]))
            todo = []
            for unit in units:
                if keys[unit] not in done:
                    todo.append(unit)
                    continue
                if store is not None:
                    results.append(UnitResult.from_arrays(unit, *store.load_unit(keys[unit])))
                resumed += 1
            if not todo:
                step_done(computed=False)
                continue
            loaded: dict[str, Any] = {}
            distributed.collective(lambda: loaded.update(model=_prepare_model(probe, session, name)))
            model = loaded.pop("model")
            for unit in todo:
                result = distributed.collective(
                    lambda: _guard_memory(session, _measure_shard, probe, model, unit, batches),
                    lambda shards: _save_unit(store, keys[unit], _assemble(probe, probe.unit_columns(model, unit),
                                                                           unit, shards)))
                if main:
                    results.append(result)
            del model
            step_done()  # compare's overall progress line (stm_probe.runtime.progress), if one is shown

        def finish(_: Any) -> Any:
            frame = pd.DataFrame(_rows(probe, results), columns=list(probe.columns))
            if store is not None:
                _write_outputs(probe, session, store, frame, results, resumed, time.perf_counter() - started)
            return frame

        frame = distributed.share(distributed.collective(lambda: None, finish, name_rank=False))
    except BaseException as exc:
        if store is not None:
            store.close(failed_before_saving=isinstance(exc, UsageError))
        raise
    if store is not None:
        store.close()
    return frame


def _open_store(store: Any, probe: Probe, session: Any) -> None:
    """Create and lock the run folder (rank 0 only; ``store`` is None elsewhere and without files)."""
    if store is not None:
        store.open(_run_identity(probe, session))
        session.out_dir = session.record.out_dir = store.path


def _prepare_model(probe: Probe, session: Any, name: str) -> Any:
    """Load one model and check it against the labels and the probe."""
    model = session.load_model(name)
    if model.num_classes:
        _check_label_space(probe, session, model)
        session.source.check_labels(model.num_classes, name)
    trained = model.record.get("trained")
    note = chance_note(name, trained) if trained else None
    if note and note not in session.notes:
        session.notes.append(note)
    probe.check_model(model)
    return model


def _check_label_space(probe: Probe, session: Any, model: Any) -> None:
    """THE label-space check: the data's labels must name the classes of the model's outputs
    (`stm_probe.label_spaces.check_spaces`); ``--labels-as-index`` lets a mismatch through, said in
    the notes, the manifest and the ``weights`` column."""
    from ..label_spaces import check_spaces, data_space

    if not probe.uses_labels:
        return
    opts = session.options
    note = check_spaces(model.name, probe.model_label_space(model), data_space(session.source),
                        f"--data {session.source.location}", labels_as_index=opts.labels_as_index)
    if note:
        model.weights = f"{model.weights} [labels as index]"
        model.record["labels_as_index"] = True
        if note not in session.notes:
            session.notes.append(note)


def _save_unit(store: Any, key: str, result: UnitResult) -> UnitResult:
    if store is not None:
        store.save_unit(key, *result.to_arrays())
    return result


def _guard_memory(session: Any, work: Any, *args: Any) -> Any:
    """Run ``work(*args)``; running out of memory becomes one line naming the options to lower."""
    import torch

    try:
        return work(*args)
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as exc:
        text = str(exc)
        if not isinstance(exc, (torch.OutOfMemoryError, MemoryError)) and "allocate" not in text:
            raise
        opts = session.options
        raise UsageError(f"out of memory on {session.device} at --batch-size {opts.batch_size} and --input-size "
                         f"{opts.input_size}: lower --batch-size (or --input-size); completed units are kept for "
                         "--resume") from None


def _run_identity(probe: Probe, session: Any) -> dict[str, Any]:
    """What defines a run's numbers; ``--resume`` must match it (batch size, device, workers may differ)."""
    opts = session.options
    return {"settings": settings_dict(probe.config), "models": session.models, "checkpoints": session.checkpoints,
            "checkpoint_sha256": {name: _checkpoint_sha(session, name) for name in session.models},
            "checkpoint_key": opts.checkpoint_key, "non_strict": opts.non_strict, "images": _images_hash(session.source),
            "input_size": opts.input_size, "seed": opts.seed, "repeats": opts.repeats, "bootstrap": opts.bootstrap,
            "precision": _precision_key(session)}


def _checkpoint_sha(session: Any, name: str) -> str:
    path = session.checkpoints.get(name)
    if path is None:
        return "random-init"
    from ..checkpoint import file_sha256

    return file_sha256(path)


def _write_outputs(probe: Probe, session: Any, store: Any, frame: Any, results: list[UnitResult], resumed: int,
                   seconds: float) -> None:
    """Data files, then the manifest with their sha256 (the figures check them), then the figures
    and the manifest again, last; then the run is marked complete."""
    from ..runtime.results import file_checksums, write_frame

    out = store.path
    record = session.record
    write_frame(out / f"{probe.name}.csv", frame)
    per_image = _per_image_frame(probe, results)
    if len(per_image):
        write_frame(out / "per_image.csv", per_image)
    outputs = [out / f"{probe.name}.csv"] + ([out / "per_image.csv"] if len(per_image) else [])
    outputs += probe.artefacts(out, results)
    skipped = results[0].skipped_files if results else []
    notes = session.notes + _random_init_note(frame)
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


def _random_init_note(frame: Any) -> list[str]:
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
