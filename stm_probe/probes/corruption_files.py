"""The corruption probe's ImageNet-C tree mode: `StoredImages` reads a variant's (or the clean) files for
the images of each batch, and `match_clean_images` finds the clean file of every ImageNet-C image under
``--clean-data``."""
from __future__ import annotations

import weakref
from dataclasses import replace
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..errors import UsageError


class StoredImages:
    """The files of an ImageNet-C tree (``source``) and of its clean images, read for the images of each
    batch by ``workers`` threads (none: in this thread)."""

    def __init__(self, source: Any, workers: int) -> None:
        self.source = source
        self.workers = workers
        self._datasets: dict[tuple, Any] = {}
        self._paths: dict[tuple, tuple[str, ...]] = {}
        self._reader_pool: Any = None

    def read(self, batches: Iterable[Any], paths: tuple[str, ...], transform: Callable[[], Any],
             clean: bool = False) -> Iterator[Any]:
        """The images ``paths[i]`` for the indices of each of ``batches``, through ``transform()`` (made
        once per file list), decoded by the worker threads (the loop asks for one chunk of batches at a
        time, so a persistent pool serves every call); a missing or unreadable file stops the run (one
        line)."""
        from ..data import ImageDataset, _collate

        key = (paths[0] if paths else "", len(paths), clean)
        if key not in self._datasets:
            self._datasets[key] = ImageDataset(replace(self.source, paths=paths), transform())
        dataset = self._datasets[key]
        for batch in batches:
            indices = [int(i) for i in int_array(batch.indices)]
            items = list(self._readers().map(dataset.__getitem__, indices)) if self.workers \
                else [dataset[i] for i in indices]
            loaded, failed = _collate(items)
            if failed:
                what = "--clean-data" if clean else "every ImageNet-C corruption/severity folder"
                raise UsageError(f"{failed[0].path}: {failed[0].reason}; {what} must hold the same readable images "
                                 f"as {self.source.paths[failed[0].index]}")
            yield loaded

    def _readers(self) -> Any:
        if self._reader_pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._reader_pool = ThreadPoolExecutor(self.workers, thread_name_prefix="imagenet-c")
            weakref.finalize(self, self._reader_pool.shutdown, wait=False)
        return self._reader_pool

    def variant_files(self, corruption: str, severity: int) -> tuple[str, ...]:
        """The files of one corruption/severity folder, in the order of the source's images."""
        key = (corruption, int(severity))
        if key not in self._paths:
            self._paths[key] = tuple(self.source.variant_paths(corruption, severity))
        return self._paths[key]

    def close(self) -> None:
        """Stop the reading threads (the run is over)."""
        if self._reader_pool is not None:
            self._reader_pool.shutdown(wait=True)
            self._reader_pool = None


def int_array(values: Any) -> np.ndarray:
    """Indices or labels (a tensor, array or list) as an int64 array."""
    return np.asarray(values.cpu() if hasattr(values, "cpu") else values, dtype=np.int64)



def match_clean_images(source: Any, clean_data: str) -> tuple[str, ...]:
    """The clean file of every ImageNet-C image: the same ``<wnid>/<image>`` path under ``--clean-data``,
    else the one file of that name there (a flat validation folder); UsageError naming the first missing."""
    import os

    from ..data import resolve_source

    clean = resolve_source(clean_data)
    root = os.path.abspath(clean.root)
    by_rel = {os.path.relpath(p, root).replace(os.sep, "/"): i for i, p in enumerate(clean.paths)}
    by_name: dict[str, list[int]] = {}
    for i, p in enumerate(clean.paths):
        by_name.setdefault(os.path.basename(p), []).append(i)
    matched, missing = [], []
    for position, rel in enumerate(source.relative_paths()):
        rel = rel.replace(os.sep, "/")
        found = by_rel.get(rel)
        if found is None and len(by_name.get(os.path.basename(rel), [])) == 1:
            found = by_name[os.path.basename(rel)][0]
        if found is None:
            missing.append(rel)
            continue
        label = clean.labels[found]
        own = source.labels[position]
        if label >= 0 and label != own:
            raise UsageError(f"--clean-data {clean_data}: {clean.paths[found]} is labelled {label} but its ImageNet-C "
                             f"copies lie in class {own}'s folder: point --clean-data at the matching validation set")
        matched.append(clean.paths[found])
    if missing:
        raise UsageError(f"--clean-data {clean_data} lacks {len(missing)} of the {len(source)} images (first: "
                         f"{missing[0]}): point it at the ImageNet validation images the ImageNet-C files were made from")
    return tuple(matched)
