"""This process's share of a run's images and the values it measures on them: `ShardBatches`
(loader batches by chunk, decoded once and replayed), `measure_shard` (one unit's per-image values
on this process) and `assemble` (every process's shard -> the `UnitResult` one process would have
gathered)."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from ..errors import UsageError
from .units import Key, Unit, UnitResult

if TYPE_CHECKING:
    from ..probes.base import Probe

#: decoded images are kept in memory between units when they take less than this (bytes)
CACHE_BYTES = 2 << 30


@dataclass
class Shard:
    """One process's values of one unit: per measured batch (chunk number, image positions (B,),
    {key: (B, ...)}), in the order measured, and the files it could not read as (position, 'path
    (reason)')."""

    parts: list[tuple[int, np.ndarray, dict[Key, np.ndarray]]]
    skipped: list[tuple[int, str]]


class ShardBatches:
    """This process's share of the images as loader batches, decoded once and replayed for later
    units while they fit in memory.

    The source positions are cut into chunks of ``--batch-size`` consecutive images (rounded up to
    whole loader batches); process r of N takes chunks r, r + N, r + 2N, ... (all of them in one
    process). A probe's batches are made within a chunk, so every batch holds the same images
    whatever N is, and values that depend on the batch (random draws, batched float arithmetic)
    are the same as in one process. `stream` gives one unit's batches; `chunk_of` the chunk of a
    measured batch.
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

    def stream(self) -> "LoaderStream":
        """This process's loader batches for one unit (see `LoaderStream`)."""
        return LoaderStream(self._batches())

    def chunk_of(self, indices: np.ndarray, probe: str) -> int:
        """The chunk number of a measured batch's image positions ``indices`` (B,); a batch holding images
        of two chunks is a probe's bug (its numbers would depend on the number of processes)."""
        if len(indices) == 0:
            return -1
        first, last = int(indices.min()) // self.chunk, int(indices.max()) // self.chunk
        if first != last:
            raise RuntimeError(f"{probe}.unit_batches made a batch of images from two chunks ({first} and {last}): "
                               "regroup within `batches.chunks()`")
        return first


class LoaderStream:
    """The loader batches one unit reads, in order, over every chunk of this process: iterate it for
    the batches one by one, or `chunks()` for them grouped by chunk (a probe that regroups images
    regroups within a chunk, so that a batch holds the same images whatever the number of processes)."""

    def __init__(self, batches: Iterator[tuple[int, Any]]) -> None:
        self._groups = itertools.groupby(batches, key=lambda item: item[0])

    def chunks(self) -> Iterator[Iterator[Any]]:
        for _, group in self._groups:
            yield (batch for _, batch in group)

    def __iter__(self) -> Iterator[Any]:
        for group in self.chunks():
            yield from group



def measure_shard(probe: Probe, model: Any, unit: Unit, batches: ShardBatches) -> Shard:
    """This process's per-image values of one unit, chunk by chunk."""
    parts = []
    with probe.session.progress(batches.num_images, f"{probe.name} {model.name} {unit.label}") as bar:
        for batch in probe.unit_batches(unit, batches.stream()):
            values = probe.measure(model, unit, batch)
            idx = np.asarray(batch.indices.cpu() if hasattr(batch.indices, "cpu") else batch.indices, dtype=np.int64)
            parts.append((batches.chunk_of(idx, probe.name), idx, {key: np.asarray(value) for key, value in values.items()}))
            bar.update(len(idx))
    return Shard(parts, batches.skipped)


def assemble(probe: Probe, columns: dict[str, str], unit: Unit, shards: Sequence[Shard]) -> UnitResult:
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
