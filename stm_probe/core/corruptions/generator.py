"""`corrupt`: one image, one corruption, one severity, one seed -> the corrupted image, as the authors'
generator makes it; and the per-image seed words that make an image's corrupted copy the same for every
model, batch size and batch composition (`seed_words`, `corrupt_image`)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .blur import _defocus_blur, _gaussian_blur, _glass_blur, _motion_blur, _zoom_blur
from .digital import _brightness, _contrast, _elastic_transform, _jpeg_compression, _pixelate, _saturate
from .names import all_corruptions
from .noise import _gaussian_noise, _impulse_noise, _shot_noise, _speckle_noise
from .weather import _fog, _frost, _snow, _spatter


#: changes whenever a corruption's pixels change (keys the cache; named in corruption.csv)
GENERATOR = "stm_probe.corrupt 2 (make_imagenet_c.py)"
#: smallest image side `corrupt` accepts (px)
MIN_SIDE = 16


_DEFINITIONS = {
    "gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise, "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur, "glass_blur": _glass_blur, "motion_blur": _motion_blur, "zoom_blur": _zoom_blur,
    "snow": _snow, "frost": _frost, "fog": _fog, "brightness": _brightness, "contrast": _contrast,
    "elastic_transform": _elastic_transform, "pixelate": _pixelate, "jpeg_compression": _jpeg_compression,
    "speckle_noise": _speckle_noise, "gaussian_blur": _gaussian_blur, "spatter": _spatter, "saturate": _saturate,
}


def _usage(message: str) -> None:
    from ...errors import UsageError

    raise UsageError(f"corrupt: {message}")


def _check(image: Any, corruption: Any, severity: Any, seed: Any) -> None:
    """One-line UsageError for any argument `corrupt` cannot stand behind."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        _usage(f"image must be an (H, W, 3) uint8 numpy array, got {got}: convert with np.asarray(img, np.uint8)")
    if min(image.shape[:2]) < MIN_SIDE:
        _usage(f"image is {image.shape[0]} x {image.shape[1]} px: give at least {MIN_SIDE} px a side "
               "(the benchmark's images are 224 x 224)")
    if not isinstance(corruption, str) or corruption not in _DEFINITIONS:
        _usage(f"unknown corruption {corruption!r}: choose one of {', '.join(all_corruptions())}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
        _usage(f"severity must be an integer 1-5, got {severity!r}")
    words = np.asarray(seed)
    if words.dtype.kind not in "iu" or words.ndim > 1 or words.size == 0 or (words < 0).any() \
            or (words >= 2 ** 32).any():
        _usage(f"seed must be an integer 0 to 2**32 - 1 (or a 1-D array of such), got {seed!r}")


def corrupt(image: np.ndarray, corruption: str, severity: int, seed: int | Sequence[int] = 0) -> np.ndarray:
    """ImageNet-C's ``corruption`` at ``severity`` of one image, as the authors' generator makes it.

    image: (H, W, 3) uint8 RGB, H and W >= 16 (the benchmark corrupts the 224 x 224 centre crop of
    the image resized to a 256 px short side; the parameters are in pixels of that view).
    corruption: one of the 15 benchmark names (gaussian_noise ... jpeg_compression) or the 4 extra
    ones (speckle_noise, gaussian_blur, spatter, saturate). severity: 1-5.
    seed: seeds the numpy ``RandomState`` the draws come from (an int, or a 1-D array of uint32
    words); the same arguments give the same pixels, and numpy's global RNG is left untouched.
    Returns the corrupted (H, W, 3) uint8 image (clipped to [0, 255], truncated, as stored by the
    authors). UsageError (one line) for any other argument.
    """
    _check(image, corruption, severity, seed)
    rng = np.random.RandomState(np.asarray(seed, dtype=np.int64).astype(np.uint32) if np.ndim(seed) else int(seed))
    out = _DEFINITIONS[corruption](np.ascontiguousarray(image), int(severity), rng)
    if out.dtype == np.uint8 and out.shape == image.shape:
        return out
    if out.shape != image.shape or not np.isfinite(out).all():
        raise RuntimeError(f"{corruption} {severity} made a {out.shape} image with non-finite pixels or of the "
                           f"wrong shape from a {image.shape} one: please report this")
    return np.clip(out, 0, 255).astype(np.uint8)


def seed_words(seed: int, corruption: str, severity: int, repeat: int, indices: Any) -> np.ndarray:
    """(N, 4) uint32 seed words per image: a 128-bit key from the stream (seed, 'corruption',
    corruption, severity, repeat) and each image's index in the source."""
    from ..seeds import per_image_bits, stream_id

    stream = stream_id(seed, "corruption", corruption, int(severity), int(repeat))
    bits = per_image_bits(stream, np.asarray(indices, dtype=np.int64), draws=2)
    return np.ascontiguousarray(bits).view(np.uint32).reshape(len(bits), 4)


def corrupt_image(image: np.ndarray, corruption: str, severity: int, words: np.ndarray) -> np.ndarray:
    """One image (H, W, 3) uint8 -> its corrupted copy (`corrupt` seeded with the image's (4,) uint32
    ``words``, see `seed_words`)."""
    return corrupt(image, corruption, int(severity), seed=np.asarray(words, dtype=np.uint32))
