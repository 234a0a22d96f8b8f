"""One seeding scheme for every random draw of every probe.

A draw is keyed by the run's ``seed``, the probe and a model-independent unit (a setting such as
(kind, level) or (attack, eps), the repeat and the image's index in the source), never by model
order, batch size or process rank. The key is hashed (sha256) to a 64-bit stream id; per-image
values come from a counter-based generator (splitmix64 of stream id, image index and draw
number), so image i's draws are the same whichever other images share its batch.

Code that draws from the global generators (a model's initialisation, a training loop's dropout)
runs inside `seeded`, which seeds them and gives the caller's states back afterwards.
"""
from __future__ import annotations

import contextlib
import hashlib
import random
from typing import Any, Iterator

import numpy as np
import torch

_MASK64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def stream_id(seed: int, *parts: Any) -> int:
    """64-bit id of the stream keyed by (seed, parts...), e.g. (0, 'invariance', 'translation', 8.0)."""
    text = "|".join(str(p) for p in (int(seed), *parts))
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def stream_seed(seed: int, *parts: Any) -> int:
    """A 32-bit seed for libraries that take one (torch.manual_seed, numpy Generator)."""
    return stream_id(seed, *parts) & 0xFFFFFFFF


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def per_image_bits(stream: int, indices: Any, draws: int = 1) -> np.ndarray:
    """Uniform 64-bit words (N, draws) uint64 for images ``indices`` (N,) of one stream."""
    idx = np.asarray(torch.as_tensor(indices).cpu().numpy() if isinstance(indices, torch.Tensor) else indices,
                     dtype=np.uint64).reshape(-1, 1)
    counter = np.arange(draws, dtype=np.uint64).reshape(1, -1)
    with np.errstate(over="ignore"):
        x = np.uint64(stream) + _GOLDEN * (idx * np.uint64(draws + 1) + counter + np.uint64(1))
        return _splitmix64(_splitmix64(x))


def per_image_uniform(stream: int, indices: Any, draws: int = 1) -> np.ndarray:
    """Uniform floats in [0, 1), (N, draws) float64, 53-bit resolution."""
    return (per_image_bits(stream, indices, draws) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def per_image_integers(stream: int, indices: Any, low: int, high: int, draws: int = 1) -> np.ndarray:
    """Integers uniform in [low, high] inclusive, (N, draws) int64."""
    span = int(high) - int(low) + 1
    if span <= 0:
        raise ValueError(f"empty range [{low}, {high}]")
    return (np.floor(per_image_uniform(stream, indices, draws) * span).astype(np.int64) + int(low))


def image_seeds(stream: int, indices: Any) -> list[int]:
    """One 63-bit seed per image (for a per-image torch.Generator)."""
    return [int(v) >> 1 for v in per_image_bits(stream, indices, 1)[:, 0]]


@contextlib.contextmanager
def seeded(seed: int, device: Any = None) -> Iterator[None]:
    """Inside: Python's `random`, numpy's global generator and torch's CPU generator (and, for a CUDA
    ``device`` (torch.device), that device's) seeded with ``seed``, as ``torch.manual_seed(seed)``
    and friends would; on exit the caller's generator states are restored (no global reseeding)."""
    cuda = []
    if device is not None and torch.device(device).type == "cuda":
        index = torch.device(device).index
        cuda = [torch.cuda.current_device() if index is None else index]
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=cuda):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.random.default_generator.manual_seed(seed % 2**63)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed % 2**63)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
