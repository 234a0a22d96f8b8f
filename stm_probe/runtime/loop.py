"""`run_probe`, THE loop: runs a probe (`stm_probe.probes.base.Probe`, used by what it does) over every
model of a session.

It owns everything a probe does not: models (one in memory at a time), batches and progress bars
(`stm_probe.runtime.shards`), seeding, gathering per-image values, per-unit persistence and resume
(`stm_probe.runtime.identity`, `stm_probe.runtime.store`), empty-data checks, tidy rows,
``<probe>.csv``, ``per_image.csv``, figures, ``manifest.json`` and the summary
(`stm_probe.runtime.outputs`). The CSV columns are in `stm_probe.runtime.units`.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..label_spaces import chance_note
from ..options import settings_dict
from .identity import checkpoint_sha256, run_identity, unit_parts
from .outputs import tidy_rows, write_outputs
from .shards import ShardBatches, assemble, measure_shard
from .units import UnitResult

if TYPE_CHECKING:
    from ..probes.base import Probe


def run_probe(probe: Probe, session: Any) -> Any:
    """Run ``probe`` over every model of ``session``; returns the tidy rows (pandas DataFrame).

    With an output folder: per-unit results are saved as they complete (``--resume`` skips
    them), then ``<probe>.csv``, ``per_image.csv``, artefacts, figures and ``manifest.json``
    (last) are written and the summary printed.

    Under torchrun every process measures its share of the images (`ShardBatches`) with every
    model; rank 0 gathers each unit's values in chunk order, saves the unit, and alone creates,
    locks and writes the run folder, so the files equal one process's. A failure on any rank stops
    every rank with one line naming it (`stm_probe.runtime.distributed.collective`); the units
    saved so far stay resumable. Every rank returns the rows.
    """
    import pandas as pd

    from ..data import make_loader
    from . import distributed
    from .store import RunFolder

    variants = getattr(session.source, "variants", None)
    if variants and not probe.reads_corrupted_variants:
        raise UsageError(f"--data {session.source.location} is an ImageNet-C tree ({len(variants)} corrupted variants "
                         f"of one image set): {probe.name} would measure one variant as if it were the data; run "
                         "`stm-probe corruption` on it, or pass one variant's folder or the clean images")
    _add_notes(session, probe.check())
    opts = session.options
    main = getattr(session, "rank", 0) == 0
    store = RunFolder(session.out_dir, probe.name, opts.resume, auto_named=opts.out is None) \
        if session.out_dir is not None and main else None
    started = time.perf_counter()
    session.record.update(probe={"name": probe.name, "settings": settings_dict(probe.config),
                                 "class": f"{type(probe).__module__}.{type(probe).__name__}"},
                          seeding="every draw from stream (seed, probe, setting, repeat) x image index "
                                  "(stm_probe.core.seeds); random-init weights: torch seeded with seed before each model",
                          **probe.manifest())
    try:
        distributed.collective(lambda: _open_store(store, probe, session), name_rank=False)
        if session.out_dir is not None:  # rank 0's folder on every rank (default names carry a timestamp)
            session.out_dir = distributed.share(session.out_dir)
        loader = make_loader(session.source, batch_size=probe.loader_batch_size(), transform=probe.transform(),
                             num_workers=opts.workers, pin_memory=session.device.type == "cuda")
        session.record.update(data={"source": session.source.describe(), "kind": session.source.kind,
                                    "location": str(session.source.location), "labelled": session.source.has_labels,
                                    "transform": repr(loader.loader.dataset.transform)})
        batches = ShardBatches(loader, max(opts.batch_size, probe.loader_batch_size()), getattr(session, "rank", 0),
                               getattr(session, "world_size", 1), pin_memory=session.device.type == "cuda")
        results: list[UnitResult] = []
        resumed = 0
        for name in session.models:
            resumed += _run_model(probe, session, store, batches, name, results)

        def finish(_: Any) -> Any:
            frame = pd.DataFrame(tidy_rows(probe, results), columns=list(probe.columns))
            if store is not None:
                write_outputs(probe, session, store, frame, results, resumed, time.perf_counter() - started)
            return frame

        frame = distributed.share(distributed.collective(lambda: None, finish, name_rank=False))
    except BaseException as exc:
        if store is not None:
            store.close(failed_before_saving=isinstance(exc, UsageError))
        raise
    if store is not None:
        store.close()
    return frame


def _run_model(probe: Probe, session: Any, store: Any, batches: ShardBatches, name: str,
               results: list[UnitResult]) -> int:
    """Every unit of model ``name``: those ``store`` holds are loaded, the others measured (the model is
    loaded once, and freed on return) and saved; rank 0 appends them to ``results``. Returns how many
    units were resumed."""
    from . import distributed
    from .progress import step_done
    from .store import unit_key

    main = getattr(session, "rank", 0) == 0
    sha = checkpoint_sha256(session, name)
    units = probe.repeated(probe.units())
    keys = {u: unit_key(unit_parts(probe, name, u, sha)) for u in units}
    done = set(distributed.share([k for k in keys.values() if store is not None and store.has_unit(k)]))
    todo = []
    resumed = 0
    for unit in units:
        if keys[unit] not in done:
            todo.append(unit)
            continue
        if store is not None:
            results.append(UnitResult.from_arrays(unit, *store.load_unit(keys[unit])))
        resumed += 1
    if not todo:
        step_done(computed=False)
        return resumed
    loaded: dict[str, Any] = {}
    distributed.collective(lambda: loaded.update(model=_prepare_model(probe, session, name)))
    model = loaded.pop("model")
    for unit in todo:
        result = distributed.collective(
            lambda: _guard_memory(session, measure_shard, probe, model, unit, batches),
            lambda shards: _save_unit(store, keys[unit], assemble(probe, probe.unit_columns(model, unit),
                                                                  unit, shards)))
        if main:
            results.append(result)
    step_done()  # compare's overall progress line (stm_probe.runtime.progress), if one is shown
    return resumed


def _open_store(store: Any, probe: Probe, session: Any) -> None:
    """Create and lock the run folder (rank 0 only; ``store`` is None elsewhere and without files)."""
    if store is not None:
        store.open(run_identity(probe, session))
        session.out_dir = session.record.out_dir = store.path


def _prepare_model(probe: Probe, session: Any, name: str) -> Any:
    """Load one model and check it against the labels and the probe."""
    model = session.load_model(name)
    if model.num_classes:
        _check_label_space(probe, session, model)
        session.source.check_labels(model.num_classes, name)
    trained = model.record.get("trained")
    _add_notes(session, [chance_note(name, trained)] if trained else [])
    _add_notes(session, probe.check_model(model))
    return model


def _add_notes(session: Any, notes: list[str] | None) -> None:
    """The run's notes (what a probe's checks return), each once."""
    for note in notes or ():
        if note and note not in session.notes:
            session.notes.append(note)


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
        _add_notes(session, [note])


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
