"""The dataset and the batch loader: lazy decoding, unreadable files skipped and counted.

:class:`ImageDataset` decodes (or renders) one image; :func:`make_loader` builds the deterministic
:class:`ImageLoader`, which yields :class:`Batch` tuples and records the files it skipped.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterator, NamedTuple, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..errors import UsageError
from .labels import _printable
from .reading import _decode, _skip_reason
from .resolve import resolve_source
from .source import ImageSource, PathLike
from .transforms import eval_transform

_logger = logging.getLogger(__name__)


class SkippedFile(NamedTuple):
    """An image that could not be read: its path and a one-line reason."""

    path: str
    reason: str


class _Failed(NamedTuple):
    index: int
    path: str
    reason: str


class Batch(NamedTuple):
    """One batch of images.

    images:  ``float32`` ``(B, 3, S, S)`` in [0, 1], not normalised
    labels:  ``int64`` ``(B,)``, ``-1`` where unknown
    indices: ``int64`` ``(B,)``, position of each image in ``loader.source.paths``
    paths:   the B file paths
    """

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    paths: tuple[str, ...]



class ImageDataset(Dataset):
    """Decodes ``source.paths[i]`` lazily (renders it, for a synthetic source); returns
    ``(image, label, i, path)`` or a failure sentinel."""

    def __init__(self, source: ImageSource, transform: Callable[[Image.Image], torch.Tensor]):
        self.paths = list(source.paths)
        self.labels = list(source.labels)
        self.transform = transform
        self.synthetic = source.synthetic

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, path: str) -> torch.Tensor:
        if self.synthetic is not None:
            return self.transform(self.synthetic.image(self.synthetic.index_of(path)))
        return _decode(path, self.transform)

    def __getitem__(self, i: int):
        path = self.paths[i]
        try:
            x = self._read(path)
        except Exception as e:  # noqa: BLE001 - any unreadable file is skipped, never fatal
            return _Failed(i, path, _skip_reason(e))
        return x, self.labels[i], i, path


def _collate(items: Sequence) -> tuple[Batch | None, list[_Failed]]:
    """Stack decoded items; hand failures back separately (runs in the worker process)."""
    failed = [it for it in items if isinstance(it, _Failed)]
    ok = [it for it in items if not isinstance(it, _Failed)]
    if not ok:
        return None, failed
    images = torch.stack([it[0] for it in ok])
    labels = torch.tensor([it[1] for it in ok], dtype=torch.int64)
    indices = torch.tensor([it[2] for it in ok], dtype=torch.int64)
    return Batch(images, labels, indices, tuple(it[3] for it in ok)), failed


class ImageLoader:
    """Iterable of :class:`Batch`; counts the files it had to skip.

    Batches hold up to ``batch_size`` images: an unreadable file makes its batch smaller (a
    batch where every file failed is not yielded). ``skipped`` / ``num_loaded`` describe the
    most recent pass and are reset when a new pass starts.
    """

    def __init__(self, source: ImageSource, loader: DataLoader):
        self.source = source
        self.loader = loader
        self.skipped: list[SkippedFile] = []
        self.num_loaded = 0

    def __len__(self) -> int:
        """Number of batches in a pass (before any all-failed batch is dropped)."""
        return len(self.loader)

    @property
    def num_images(self) -> int:
        """Images the loader will try to read in a pass."""
        return len(self.source)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def __iter__(self) -> Iterator[Batch]:
        self.skipped = []
        self.num_loaded = 0
        for batch, failed in self.loader:
            for f in failed:
                _logger.debug("skipped unreadable image %s: %s", f.path, f.reason)
                self.skipped.append(SkippedFile(f.path, f.reason))
            if batch is not None:
                self.num_loaded += len(batch.paths)
                yield batch

    def skip_summary(self, max_paths: int = 3) -> str:
        """One line, e.g. ``skipped 2 of 16 images that could not be read: a.jpg (...), ...``.

        The count is of list entries (a file listed twice and unreadable counts twice); each
        path is shown once. This is the one report of skipped files: the loader only logs
        them at debug level.
        """
        if not self.skipped:
            return f"all {self.num_loaded} images read"
        reasons: dict[str, str] = {}
        times: dict[str, int] = {}
        for s in self.skipped:
            reasons.setdefault(s.path, s.reason)
            times[s.path] = times.get(s.path, 0) + 1
        shown = ", ".join(
            f"{_printable(p)} ({reasons[p]}{f', listed {times[p]} times' if times[p] > 1 else ''})"
            for p in list(reasons)[:max_paths]
        )
        rest = len(reasons) - max_paths
        more = f", and {rest} more file{'s' if rest > 1 else ''}" if rest > 0 else ""
        return f"skipped {self.num_skipped} of {self.num_images} images that could not be read: {shown}{more}"


def make_loader(
    source: ImageSource | PathLike | None = None,
    batch_size: int = 32,
    num_images: int | None = None,
    transform: Callable[[Image.Image], torch.Tensor] | None = None,
    num_workers: int = 0,
    *,
    spread_classes: bool = False,
    pin_memory: bool = False,
) -> ImageLoader:
    """A deterministic (unshuffled) loader over the first ``num_images`` images of ``source``.

    ``source`` is an :class:`ImageSource` or anything :func:`resolve_source` accepts (``None``
    = the embedded sample set). ``transform`` defaults to ``eval_transform(224)``. Yields
    :class:`Batch` tuples ``(images (B,3,S,S) float32 in [0,1], labels (B,) int64, indices
    (B,) int64, paths)``; read ``loader.skipped`` / ``loader.skip_summary()`` after the loop.
    """
    if not isinstance(source, ImageSource):
        source = resolve_source(source)
    if batch_size < 1:
        raise UsageError(f"batch size must be a positive integer, got {batch_size}")
    if num_workers < 0:
        raise UsageError(f"number of loader workers must be 0 or more, got {num_workers}")
    source = source.take(num_images, spread_classes=spread_classes)
    dataset = ImageDataset(source, transform if transform is not None else eval_transform())
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=pin_memory,
        drop_last=False,
        generator=torch.Generator(),  # its worker seeds come from here, not from the caller's global generator
    )
    return ImageLoader(source, loader)
