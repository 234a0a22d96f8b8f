"""ImageNet-C's corruptions (Hendrycks & Dietterich, ICLR 2019), made on the fly as the authors'
generator ``make_imagenet_c.py`` makes them, and the machinery that makes them for the probe.

`corrupt` is the one entry point: an (H, W, 3) uint8 image, one of the 19 names (the 15 of the
benchmark and the 4 extra ones), a severity 1-5 and a seed -> the corrupted (H, W, 3) uint8 image.
Each corruption follows the authors' code: the same parameters per severity (in pixels of 224 px
images), the same algorithm, the same texture files, and the same random draws in the same order
from a numpy ``RandomState`` seeded with ``seed`` (the authors drew from numpy's global RNG; it is
never touched here). Two steps ran outside numpy there and are reimplemented: ImageMagick's motion
blur (motion_blur, snow) and skimage's salt-and-pepper noise of the time (impulse_noise). The
result is clipped to [0, 255] and truncated to 8 bits, as the authors stored it (before their JPEG
encoding of the released files). docs/corruption.md lists what still differs from the released files.

For the probe, every image is corrupted with seed words from (seed, corruption, severity, repeat,
image index) (`seed_words`), so an image's corrupted copy is the same for every model, batch size
and batch composition. `Corruptor` makes them in worker processes and caches them for later models.

The rooms: `names` (the 19 names, groups, which draw random numbers), the four families `noise`,
`blur`, `weather` (with the frost textures) and `digital`, `generator` (`corrupt`, `seed_words`),
`cache` (`CorruptionCache`) and `corruptor` (`Corruptor`, worker processes, tensor conversions).

This package imports no torch at module level (worker processes start with numpy and OpenCV only);
OpenCV, scipy and Pillow load on first use.
"""
from __future__ import annotations

from .cache import MEMORY_CACHE_BYTES, CorruptionCache
from .corruptor import CorruptedBatch, Corruptor, to_tensor, to_uint8, worker_count
from .generator import GENERATOR, MIN_SIDE, corrupt, corrupt_image, seed_words
from .names import GROUPS, RANDOM_CORRUPTIONS, all_corruptions, corruption_list
from .weather import FROST_TEXTURES, check_assets, frost_texture

__all__ = [
    "FROST_TEXTURES", "GENERATOR", "GROUPS", "MEMORY_CACHE_BYTES", "MIN_SIDE", "RANDOM_CORRUPTIONS",
    "CorruptedBatch", "CorruptionCache", "Corruptor", "all_corruptions", "check_assets", "corrupt",
    "corrupt_image", "corruption_list", "frost_texture", "seed_words", "to_tensor", "to_uint8", "worker_count",
]
