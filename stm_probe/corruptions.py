"""ImageNet-C corruptions made on the fly (the `corrupt-tta` package, a port of the 19 ImageNet-C
corruptions to current numpy / OpenCV / scikit-image).

ImageNet-C's protocol: the image is resized (short side 256) and centre cropped (224) first, then
corrupted, then stored as 8-bit pixels (``np.uint8``, truncating). Here the corruption is applied
to the loader's clean view (already resized and cropped, pixels in [0, 1]) rounded to 8 bits, and
the result is truncated to 8 bits again, as ImageNet-C stored it. The severity parameters are
those of the benchmark, in pixels of 224 x 224 images: at another input size the corruptions are
not ImageNet-C's.

Randomness: corrupt-tta draws from numpy's global RNG (and scikit-image's ``random_noise`` from a
fresh unseeded generator). Every image is corrupted under an RNG seeded from (seed, corruption,
severity, repeat, image index) (`stm_probe.runtime.seeds`), with the global state saved and
restored around it, so an image's corrupted copy is the same for every model, batch size and
batch composition. `Corruptor` makes them in worker processes and caches them for later models.

This module imports no torch at module level: worker processes start with numpy and corrupt-tta
only.
"""
from __future__ import annotations

import functools
import hashlib
import multiprocessing
import os
import shutil
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

import numpy as np

from .corruption_metrics import benchmark_corruptions, extra_corruptions

#: corruptions that draw random numbers (the others are deterministic functions of the image)
RANDOM_CORRUPTIONS = frozenset({"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur",
                                "motion_blur", "snow", "frost", "fog", "spatter", "elastic_transform"})
GROUPS = ("benchmark", "extra", "all")
#: corrupted images kept in memory between models up to this many bytes; beyond, they go to disk
MEMORY_CACHE_BYTES = 2 << 30


def all_corruptions() -> tuple[str, ...]:
    """The 15 benchmark corruptions then the 4 extra ones."""
    return benchmark_corruptions() + extra_corruptions()


def corruption_list(text: str) -> tuple[str, ...]:
    """'--corruptions' text -> names in the canonical order: names and the groups 'benchmark' (the 15),
    'extra' (the 4 held-out ones) and 'all'; unknown names are kept for the choices check."""
    from .options import name_list

    names = name_list(text)
    groups = {"benchmark": benchmark_corruptions(), "extra": extra_corruptions(), "all": all_corruptions()}
    chosen = {c for n in names for c in groups.get(n, (n,))}
    return tuple(c for c in all_corruptions() if c in chosen) + tuple(n for n in names if n not in groups
                                                                       and n not in all_corruptions())


def check_assets() -> None:
    """corrupt-tta's frost textures are readable (without them frost silently returns the clean image)."""
    from importlib import resources

    folder = resources.files("corrupt_tta") / "assets" / "frost"
    missing = [f"frost{i}.{'png' if i <= 3 else 'jpg'}" for i in range(1, 7)
               if not (folder / f"frost{i}.{'png' if i <= 3 else 'jpg'}").is_file()]
    if missing:
        raise RuntimeError(f"corrupt-tta's frost texture {missing[0]} is missing: reinstall corrupt-tta")


# --- one image --------------------------------------------------------------------------------------
def seed_words(seed: int, corruption: str, severity: int, repeat: int, indices: Any) -> np.ndarray:
    """(N, 4) uint32 seed words per image: a 128-bit key from the stream (seed, 'corruption',
    corruption, severity, repeat) and each image's index in the source."""
    from .runtime.seeds import per_image_bits, stream_id

    stream = stream_id(seed, "corruption", corruption, int(severity), int(repeat))
    bits = per_image_bits(stream, np.asarray(indices, dtype=np.int64), draws=2)
    return np.ascontiguousarray(bits).view(np.uint32).reshape(len(bits), 4)


@contextmanager
def _seeded(words: np.ndarray) -> Iterator[None]:
    """numpy's global RNG (and the generator corrupt-tta's impulse noise gets from scikit-image)
    seeded from ``words`` (4,) uint32; the previous global state is restored afterwards."""
    import corrupt_tta.corruptions as ctt

    state = np.random.get_state()
    original = ctt.random_noise
    np.random.seed(np.asarray(words, dtype=np.uint32))
    ctt.random_noise = functools.partial(original, rng=np.random.default_rng(np.asarray(words, dtype=np.uint64)))
    try:
        yield
    finally:
        ctt.random_noise = original
        np.random.set_state(state)


def corrupt_image(image: np.ndarray, corruption: str, severity: int, words: np.ndarray) -> np.ndarray:
    """One image (H, W, 3) uint8 -> its corrupted copy (H, W, 3) uint8 (truncated, as ImageNet-C stored it).

    ``words``: the image's (4,) uint32 seed (see `seed_words`); the same words give the same pixels.
    """
    import corrupt_tta

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    with _seeded(words):
        out = corrupt_tta.corrupt(image, severity=int(severity), corruption_name=corruption)
    out = np.asarray(out, dtype=np.float64)
    if out.shape != image.shape:
        raise RuntimeError(f"corrupt-tta's {corruption} returned shape {out.shape} for an image of {image.shape}")
    return np.clip(out, 0, 255).astype(np.uint8)


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


# --- cache ----------------------------------------------------------------------------------------------
class CorruptionCache:
    """Corrupted images (H, W, 3) uint8 by (key, image index): in memory up to ``budget`` bytes, then in
    one sparse ``.npy`` memmap per key under ``folder`` (made fresh; removed by `close`).

    A key names everything that defines the pixels (see `Corruptor.key`), so a different seed, size or
    image list never reads another run's images; only images written by this object are ever read.
    """

    def __init__(self, num_images: int, folder: Path | None, budget: int = MEMORY_CACHE_BYTES) -> None:
        self.num_images = num_images
        self.folder = Path(folder) if folder is not None else None
        self.budget = budget
        self.used = 0
        self.memory: dict[tuple, dict[int, np.ndarray]] = {}
        self.maps: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}  # key -> (memmap, filled mask)
        if self.folder is not None and self.folder.exists():
            shutil.rmtree(self.folder)  # a killed run's images: never trusted

    def get(self, key: tuple, index: int) -> np.ndarray | None:
        found = self.memory.get(key, {}).get(index)
        if found is None and key in self.maps:
            array, filled = self.maps[key]
            found = np.array(array[index]) if filled[index] else None
        return found

    def put(self, key: tuple, index: int, image: np.ndarray) -> None:
        if self.used + image.nbytes <= self.budget:
            self.memory.setdefault(key, {})[index] = image
            self.used += image.nbytes
            return
        if self.folder is None:
            return  # nowhere to spill: the image is remade when it is needed again
        if key not in self.maps:
            self.folder.mkdir(parents=True, exist_ok=True)
            name = hashlib.sha256(repr(key).encode("utf-8")).hexdigest()[:20]
            array = np.lib.format.open_memmap(self.folder / f"{name}.npy", mode="w+", dtype=np.uint8,
                                              shape=(self.num_images, *image.shape))
            self.maps[key] = (array, np.zeros(self.num_images, dtype=bool))
        array, filled = self.maps[key]
        array[index] = image
        filled[index] = True

    @property
    def on_disk(self) -> int:
        return int(sum(f.sum() for _, f in self.maps.values()))

    def close(self) -> None:
        self.memory.clear()
        self.maps.clear()
        self.used = 0
        if self.folder is not None and self.folder.exists():
            shutil.rmtree(self.folder, ignore_errors=True)


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
        import corrupt_tta

        self.seed = int(seed)
        self.workers = int(workers)
        self.digest = hashlib.sha256(f"{seed}|{input_size}|{images_id}|corrupt-tta {corrupt_tta.__version__}"
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
