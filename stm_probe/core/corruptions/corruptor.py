"""`Corruptor`: the corrupted copies of a loader's clean batches, made in worker processes ahead of the
model and cached for later models; the worker entry point and the tensor <-> 8-bit image conversions."""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from collections import deque
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

import numpy as np

from .cache import MEMORY_CACHE_BYTES, CorruptionCache
from .generator import GENERATOR, corrupt_image, seed_words


def _task(image: np.ndarray, corruption: str, severity: int, words: np.ndarray) -> tuple[np.ndarray, float]:
    """Worker entry point: the corrupted image and the seconds it took."""
    start = time.perf_counter()
    out = corrupt_image(image, corruption, severity, words)
    return out, time.perf_counter() - start


def _init_worker() -> None:
    """One thread per worker process (the pool supplies the parallelism)."""
    import cv2

    cv2.setNumThreads(1)


# --- pixels: tensors <-> 8-bit images -----------------------------------------------------------------
def to_uint8(images: Any) -> np.ndarray:
    """(B, 3, H, W) float tensor in [0, 1] -> (B, H, W, 3) uint8 (rounded: 8-bit sources come back exact)."""
    array = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    return np.clip(np.rint(array.transpose(0, 2, 3, 1) * 255.0), 0, 255).astype(np.uint8)


def to_tensor(images: np.ndarray) -> Any:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 tensor in [0, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float().div_(255.0)


# --- batches -----------------------------------------------------------------------------------------
class CorruptedBatch(NamedTuple):
    """A loader batch with its images corrupted; ``clean`` keeps the clean images (B, 3, H, W)."""

    images: Any
    labels: Any
    indices: Any
    paths: tuple[str, ...]
    clean: Any


class Corruptor:
    """Corrupted copies of the loader's clean batches, seeded per image, made in ``workers`` spawned
    processes (0: in this process) ahead of the model, and cached for later models when ``cache``.

    ``images_id`` identifies the image list (e.g. its hash); with ``seed`` and ``input_size`` it keys the
    cache. ``seconds`` sums the time spent corrupting (in whichever process did it).
    """

    def __init__(self, seed: int, input_size: int, images_id: str, num_images: int, workers: int = 0,
                 cache: bool = True, cache_folder: Path | None = None, budget: int = MEMORY_CACHE_BYTES) -> None:
        self.seed = int(seed)
        self.workers = int(workers)
        self.digest = hashlib.sha256(f"{seed}|{input_size}|{images_id}|{GENERATOR}"
                                     .encode("utf-8")).hexdigest()[:16]
        self.cache = CorruptionCache(num_images, cache_folder, budget) if cache else None
        self.pool: Any = None
        self.seconds = 0.0
        self.made = 0  # images corrupted (cache misses)

    def key(self, corruption: str, severity: int, repeat: int) -> tuple:
        return (self.digest, corruption, int(severity), int(repeat))

    def _executor(self) -> Any:
        if self.pool is None:
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_init_worker)
        return self.pool

    def _start(self, images: Any, indices: Any, corruption: str, severity: int, repeat: int) -> list[Any]:
        """Per image: the cached result, a future (workers) or the arguments to run in-process."""
        key = self.key(corruption, severity, repeat)
        index_list = [int(i) for i in np.asarray(indices.cpu() if hasattr(indices, "cpu") else indices)]
        pixels = to_uint8(images)
        words = seed_words(self.seed, corruption, severity, repeat, index_list)
        jobs: list[Any] = []
        for k, index in enumerate(index_list):
            cached = self.cache.get(key, index) if self.cache is not None else None
            if cached is not None:
                jobs.append(cached)
            elif self.workers > 0:
                jobs.append(self._executor().submit(_task, pixels[k], corruption, int(severity), words[k]))
            else:
                jobs.append((pixels[k], corruption, int(severity), words[k]))
        return jobs

    def _finish(self, jobs: list[Any], indices: Any, corruption: str, severity: int, repeat: int) -> np.ndarray:
        key = self.key(corruption, severity, repeat)
        out = []
        for job, index in zip(jobs, np.asarray(indices.cpu() if hasattr(indices, "cpu") else indices)):
            if isinstance(job, np.ndarray):
                out.append(job)
                continue
            image, seconds = job.result() if hasattr(job, "result") else _task(*job)
            self.seconds += seconds
            self.made += 1
            if self.cache is not None:
                self.cache.put(key, int(index), image)
            out.append(image)
        return np.stack(out)

    def corrupt(self, images: Any, indices: Any, corruption: str, severity: int, repeat: int = 0) -> Any:
        """(B, 3, H, W) float tensor in [0, 1] of images ``indices`` -> their corrupted copies (same shape)."""
        jobs = self._start(images, indices, corruption, severity, repeat)
        return to_tensor(self._finish(jobs, indices, corruption, severity, repeat))

    def batches(self, batches: Iterable[Any], corruption: str, severity: int, repeat: int = 0) -> Iterator[CorruptedBatch]:
        """The corrupted copies of ``batches`` (in order), with up to ``workers`` + 1 batches in flight."""
        ahead = self.workers + 1 if self.workers > 0 else 0
        pending: deque = deque()
        for batch in batches:
            pending.append((batch, self._start(batch.images, batch.indices, corruption, severity, repeat)))
            while len(pending) > ahead:
                yield self._collect(*pending.popleft(), corruption, severity, repeat)
        while pending:
            yield self._collect(*pending.popleft(), corruption, severity, repeat)

    def _collect(self, batch: Any, jobs: list[Any], corruption: str, severity: int, repeat: int) -> CorruptedBatch:
        images = to_tensor(self._finish(jobs, batch.indices, corruption, severity, repeat))
        return CorruptedBatch(images, batch.labels, batch.indices, tuple(batch.paths), batch.images)

    def close(self) -> None:
        """Stop the worker processes and drop the cache (its folder included)."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        if self.cache is not None:
            self.cache.close()


def worker_count(requested: int) -> int:
    """Worker processes for corrupting: ``--workers``, at most the CPUs available."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:
        available = os.cpu_count() or 1
    return max(0, min(int(requested), available))
