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

This module imports no torch at module level (worker processes start with numpy and OpenCV only);
OpenCV, scipy and Pillow load on first use.
"""
from __future__ import annotations

import functools
import hashlib
import multiprocessing
import os
import shutil
import time
from collections import deque
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

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
    from ..options import name_list

    names = name_list(text)
    groups = {"benchmark": benchmark_corruptions(), "extra": extra_corruptions(), "all": all_corruptions()}
    chosen = {c for n in names for c in groups.get(n, (n,))}
    return tuple(c for c in all_corruptions() if c in chosen) + tuple(n for n in names if n not in groups
                                                                       and n not in all_corruptions())


#: the benchmark's frost textures 1-5 (make_imagenet_c.py draws from these five of its six), as the
#: corrupt-tta package ships them: file name and sha256 (the files of the imagecorruptions package)
FROST_TEXTURES = (
    ("frost1.png", "ff9f907860bd7a835d459e32f9d588062b7f61ee267343cc7222b56753a14755"),
    ("frost2.png", "fe211a89b336999c207a852ce05818d4545d0b57c5beadd824b4cc9d9a9b6137"),
    ("frost3.png", "2d0d50b4a9bb213f38b024ef7768731bb83cc08d2f26b5766bbc167cdfa0e504"),
    ("frost4.jpg", "3f8b91ca1a9fa7167b09e773da53f5ae60d0a1fd88f02a783f6e328a72887f6e"),
    ("frost5.jpg", "5fc6a19df4a429ba68abdcc8f8a4278d4c9f81c9ccafd2c92ab0c8cf8992ebd2"),
)
#: changes whenever a corruption's pixels change (keys the cache; named in corruption.csv)
GENERATOR = "stm_probe.corrupt 2 (make_imagenet_c.py)"
#: smallest image side `corrupt` accepts (px)
MIN_SIDE = 16


def _frost_path(index: int) -> Any:
    from importlib import resources

    return resources.files("corrupt_tta") / "assets" / "frost" / FROST_TEXTURES[index][0]


def check_assets() -> None:
    """The five frost textures are present and are the benchmark's files (RuntimeError naming the
    first that is not: without them frost would not be the benchmark's)."""
    for index in range(len(FROST_TEXTURES)):
        _frost_bytes(index)


def _frost_bytes(index: int) -> bytes:
    name, digest = FROST_TEXTURES[index]
    path = _frost_path(index)
    if not path.is_file():
        raise RuntimeError(f"the frost texture {name} (corrupt-tta's assets) is missing: reinstall corrupt-tta")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != digest:
        raise RuntimeError(f"the frost texture {path} is not the benchmark's file (sha256 differs): reinstall "
                           "corrupt-tta 0.1.7")
    return data


@functools.lru_cache(maxsize=len(FROST_TEXTURES))
def frost_texture(index: int) -> np.ndarray:
    """Frost texture ``index`` (0-4) as (h, w, 3) uint8 RGB, decoded by OpenCV as the authors decoded it
    (the alpha channel of the PNG files dropped); read-only."""
    import cv2

    data = np.frombuffer(_frost_bytes(index), dtype=np.uint8)
    texture = np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])
    texture.setflags(write=False)
    return texture


# --- the 19 corruptions, as make_imagenet_c.py defines them -------------------------------------------
# Each ``_name(x, severity, rng)`` takes an (H, W, 3) uint8 image and a numpy ``RandomState`` and returns
# the corrupted image as floats on the 0-255 scale (clipped and truncated by `corrupt`). The parameters
# per severity are the benchmark's (pixels of 224 px images), and the random numbers are drawn in the
# order the authors' code draws them, so a RandomState seeded like their global RNG makes the same draws.
def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """skimage's ``gaussian`` of an (H, W[, C]) float image: per channel, edges repeated ('nearest'),
    the kernel cut at 4 sigma (OpenCV's separable filter with the same sampled, normalised kernel)."""
    import cv2

    size = 2 * int(4.0 * sigma + 0.5) + 1
    return cv2.GaussianBlur(x, (size, size), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)


def _gaussian_noise(x: np.ndarray, s: int, rng: np.random.RandomState) -> np.ndarray:
    scale = (0.08, 0.12, 0.18, 0.26, 0.38)[s - 1]
    x = x / 255.0
    return np.clip(x + rng.normal(size=x.shape, scale=scale), 0, 1) * 255


def _shot_noise(x: np.ndarray, s: int, rng: np.random.RandomState) -> np.ndarray:
    photons = (60, 25, 12, 5, 3)[s - 1]
    return np.clip(rng.poisson(x / 255.0 * photons) / photons, 0, 1) * 255


def _impulse_noise(x: np.ndarray, s: int, rng: np.random.RandomState) -> np.ndarray:
    """Salt and pepper on each value independently (skimage's 's&p' noise of the authors' time:
    a share ``amount`` of the values flipped, half of them to 1, half to 0)."""
    amount = (0.03, 0.06, 0.09, 0.17, 0.27)[s - 1]
    x = x / 255.0
    flipped = rng.random_sample(x.shape) < amount
    salted = rng.random_sample(x.shape) < 0.5
    return np.where(flipped, np.where(salted, 1.0, 0.0), x) * 255


def _speckle_noise(x: np.ndarray, s: int, rng: np.random.RandomState) -> np.ndarray:
    scale = (0.15, 0.2, 0.35, 0.45, 0.6)[s - 1]
    x = x / 255.0
    return np.clip(x + x * rng.normal(size=x.shape, scale=scale), 0, 1) * 255


def _gaussian_blur(x: np.ndarray, s: int, rng: np.random.RandomState) -> np.ndarray:
    return np.clip(_gaussian(x / 255.0, (1, 2, 3, 4, 6)[s - 1]), 0, 1) * 255


def _glass_pass(pixels: np.ndarray, delta: int, rng: np.random.RandomState) -> np.ndarray:
    """One pass of the benchmark's pixel loop on (H, W, 3) uint8 ``pixels``, vectorised.

    The loop visits rows ``H - delta`` down to ``delta + 1`` and in each the columns ``W - delta`` down
    to ``delta + 1``; the pixel visited gets the value that (h + dy, w + dx) holds at that moment,
    (dx, dy) drawn from [-delta, delta). (The authors' tuple swap of numpy views copies one way.)
    A source visited earlier in the pass already holds its new value, so each pixel follows its chain
    of such sources to the first one that was not (pointer doubling) and takes that one's value.
    """
    h, w = pixels.shape[:2]
    rows, cols = np.arange(h - delta, delta, -1), np.arange(w - delta, delta, -1)
    if not len(rows) or not len(cols):
        return pixels
    dx, dy = rng.randint(-delta, delta, size=(len(rows) * len(cols), 2)).T
    row, col = np.repeat(rows, len(cols)), np.tile(cols, len(rows))
    target, source = row * w + col, (row + dy) * w + (col + dx)
    inside = (row + dy > delta) & (row + dy <= h - delta) & (col + dx > delta) & (col + dx <= w - delta)
    earlier = inside & ((dy > 0) | ((dy == 0) & (dx > 0)))  # visited before (h, w) in this pass
    parent = np.arange(h * w)
    parent[target[earlier]] = source[earlier]
    origin = np.arange(h * w)
    origin[target[~earlier]] = source[~earlier]
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            break
        parent = grand
    return pixels.reshape(h * w, -1)[origin[parent]].reshape(pixels.shape)


def _glass_blur(x: np.ndarray, s: int, rng: np.random.RandomState) -> np.ndarray:
    sigma, delta, passes = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))[s - 1]
    pixels = (_gaussian(x / 255.0, sigma) * 255).astype(np.uint8)
    for _ in range(passes):
        pixels = _glass_pass(pixels, delta, rng)
    return np.clip(_gaussian(pixels / 255.0, sigma), 0, 1) * 255


@functools.lru_cache(maxsize=32)
def _disk(radius: int, alias_blur: float) -> np.ndarray:
    """The benchmark's defocus kernel: a disk of ``radius`` px (on a grid of at least 17 x 17),
    normalised, then Gaussian-smoothed (3 x 3 up to radius 8, else 5 x 5)."""
    import cv2

    half = max(radius, 8)
    grid = np.arange(-half, half + 1)
    disk = (grid[None, :] ** 2 + grid[:, None] ** 2 <= radius ** 2).astype(np.float32)
    size = (3, 3) if radius <= 8 else (5, 5)
    return cv2.GaussianBlur(disk / disk.sum(), ksize=size, sigmaX=alias_blur)


def _defocus_blur(x: np.ndarray, s: int, rng: np.random.RandomState) -> np.ndarray:
    import cv2

    radius, alias_blur = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))[s - 1]
    return np.clip(cv2.filter2D(x / 255.0, -1, _disk(radius, alias_blur)), 0, 1) * 255


def _motion_kernel(radius: float, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's motion blur (``MotionBlurImage``) as a 2-D correlation kernel: 2 ceil(radius) + 1
    taps of a one-sided Gaussian of ``sigma`` px, tap i at offset (ceil(i cos a - 1/2), ceil(i sin a - 1/2))
    (x, y) from the output pixel; returns a square float32 kernel whose centre is offset (0, 0)."""
    width = int(2 * np.ceil(radius) + 1)
    taps = np.arange(width, dtype=np.float64)
    weights = np.exp(-taps ** 2 / (2 * sigma ** 2))
    weights /= weights.sum()
    a = np.deg2rad(angle)
    point_x, point_y = width * np.sin(a), width * np.cos(a)
    length = np.hypot(point_x, point_y)
    off_x = np.ceil(taps * point_y / length - 0.5).astype(int)
    off_y = np.ceil(taps * point_x / length - 0.5).astype(int)
    half = int(max(np.abs(off_x).max(), np.abs(off_y).max()))
    kernel = np.zeros((2 * half + 1, 2 * half + 1))
    np.add.at(kernel, (half + off_y, half + off_x), weights)
    return kernel.astype(np.float32)


def _magick_motion_blur(pixels: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's motion blur of (H, W[, 3]) uint8 ``pixels`` (edge pixels repeated beyond the
    border), rounded to 8 bits as the authors read it back from ImageMagick's PNG."""
    import cv2

    kernel = _motion_kernel(radius, sigma, angle)
    return np.rint(cv2.filter2D(pixels.astype(np.float32), -1, kernel, borderType=cv2.BORDER_REPLICATE))


def _motion_blur(x: np.ndarray, s: int, rng: np.random.RandomState) -> np.ndarray:
    radius, sigma = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))[s - 1]
    return _magick_motion_blur(x, radius, sigma, rng.uniform(-45, 45))


def _clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """The centre 1/factor of (H, W[, C]) ``x`` zoomed by ``factor`` (linear, corner-aligned: scipy's
    ``zoom``, channel by channel) and trimmed to (H, W) about the centre."""
    from scipy.ndimage import zoom

    h, w = x.shape[:2]
    ch, cw = int(np.ceil(h / factor)), int(np.ceil(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[top:top + ch, left:left + cw]
    if crop.ndim == 2:
        out = zoom(crop, (factor, factor), order=1)
    else:
        out = np.stack([zoom(crop[..., c], (factor, factor), order=1) for c in range(crop.shape[2])], axis=2)
    trim_top, trim_left = (out.shape[0] - h) // 2, (out.shape[1] - w) // 2
    return out[trim_top:trim_top + h, trim_left:trim_left + w]


def _zoom_blur(x: np.ndarray, s: int, rng: np.random.RandomState) -> np.ndarray:
    factors = (np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
               np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03))[s - 1]
    x = (x / 255.0).astype(np.float32)
    total = np.zeros_like(x)
    for factor in factors:
        total += _clipped_zoom(x, factor)
    return np.clip((x + total) / (len(factors) + 1), 0, 1) * 255


def _plasma_fractal(size: int, decay: float, rng: np.random.RandomState) -> np.ndarray:
    """(size, size) diamond-square height map in [0, 1] (``size`` a power of two, the map wraps
    around): each step fills the centres of the squares, then the two sets of edge midpoints, each
    with a quarter of its four neighbours' sum plus uniform noise in +-amp^2 (amp starts at 100 and
    is divided by ``decay`` after every step)."""
    grid = np.empty((size, size))
    grid[0, 0] = 0.0
    step, amp = size, 100.0
    while step >= 2:
        half = step // 2

        def noisy(total: np.ndarray) -> np.ndarray:
            return total / 4 + amp * rng.uniform(-amp, amp, total.shape)

        corners = grid[0:size:step, 0:size:step]
        total = corners + np.roll(corners, -1, axis=0)
        total += np.roll(total, -1, axis=1)
        grid[half:size:step, half:size:step] = noisy(total)
        centres = grid[half:size:step, half:size:step]
        grid[0:size:step, half:size:step] = noisy((centres + np.roll(centres, 1, axis=0))
                                                  + (corners + np.roll(corners, -1, axis=1)))
        grid[half:size:step, 0:size:step] = noisy((centres + np.roll(centres, 1, axis=1))
                                                  + (corners + np.roll(corners, -1, axis=0)))
        step, amp = half, amp / decay
    grid -= grid.min()
    return grid / grid.max()


def _fog(x: np.ndarray, s: int, rng: np.random.RandomState) -> np.ndarray:
    strength, decay = ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4))[s - 1]
    h, w = x.shape[:2]
    size = max(256, 1 << (max(h, w) - 1).bit_length())  # the benchmark's 256 x 256 map at 224 px
    x = x / 255.0
    top = x.max()
    x = x + strength * _plasma_fractal(size, decay, rng)[:h, :w, None]
    return np.clip(x * top / (top + strength), 0, 1) * 255


def _frost(x: np.ndarray, s: int, rng: np.random.RandomState) -> np.ndarray:
    """A random crop of one of the benchmark's first five frost textures, unscaled (it draws from
    five of its six files). Images larger than a texture (over 314 px) get it enlarged (bicubic)."""
    import cv2

    image_weight, frost_weight = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))[s - 1]
    texture = frost_texture(rng.randint(5))
    h, w = x.shape[:2]
    if texture.shape[0] <= h or texture.shape[1] <= w:
        scale = max((h + 1) / texture.shape[0], (w + 1) / texture.shape[1])
        size = (int(np.ceil(texture.shape[1] * scale)), int(np.ceil(texture.shape[0] * scale)))
        texture = cv2.resize(texture, size, interpolation=cv2.INTER_CUBIC)
    top, left = rng.randint(0, texture.shape[0] - h), rng.randint(0, texture.shape[1] - w)
    return np.clip(image_weight * x + frost_weight * texture[top:top + h, left:left + w], 0, 255)


def _snow(x: np.ndarray, s: int, rng: np.random.RandomState) -> np.ndarray:
    import cv2

    mean, std, zoom, threshold, radius, sigma, keep = (
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55))[s - 1]
    x = x.astype(np.float32) / 255.0
    flakes = rng.normal(size=x.shape[:2], loc=mean, scale=std)
    flakes = _clipped_zoom(flakes, zoom)
    flakes[flakes < threshold] = 0
    flakes = (np.clip(flakes, 0, 1) * 255).astype(np.uint8)  # the 8-bit layer handed to ImageMagick
    flakes = _magick_motion_blur(flakes, radius, sigma, rng.uniform(-135, -45))[..., None] / 255.0
    grey = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None]
    x = keep * x + (1 - keep) * np.maximum(x, grey * 1.5 + 0.5)
    return np.clip(x + flakes + np.rot90(flakes, k=2), 0, 1) * 255


def _spatter(x: np.ndarray, s: int, rng: np.random.RandomState) -> np.ndarray:
    """The benchmark's spatter: thresholded smoothed noise drawn as pale-turquoise water drops
    (severities 1-3, shaded by an embossed distance map) or as opaque mud-brown blobs (4-5)."""
    import cv2

    mean, std, sigma, threshold, strength, mud = (
        (0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
        (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1))[s - 1]
    x = x.astype(np.float32) / 255.0
    liquid = _gaussian(rng.normal(size=x.shape[:2], loc=mean, scale=std), sigma)
    liquid[liquid < threshold] = 0
    if not mud:
        liquid = np.clip(liquid * 255, 0, 255).astype(np.uint8)
        dist = cv2.distanceTransform(255 - cv2.Canny(liquid, 50, 150), cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
        emboss = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float32)
        dist = cv2.blur(cv2.filter2D(dist, cv2.CV_8U, emboss), (3, 3)).astype(np.float32)
        drops = liquid * dist
        peak = drops.max()
        drops = drops / peak * strength if peak > 0 else drops
        water = np.array([175, 238, 238], dtype=np.float32) / 255.0
        return np.clip(x + drops[..., None] * water, 0, 1) * 255
    blobs = _gaussian((liquid > threshold).astype(np.float32), strength)
    blobs[blobs < 0.8] = 0
    mud_colour = np.array([63, 42, 20], dtype=np.float32) / 255.0
    return np.clip(x * (1 - blobs[..., None]) + mud_colour * blobs[..., None], 0, 1) * 255


def _contrast(x: np.ndarray, s: int, rng: np.random.RandomState) -> np.ndarray:
    """Each channel pulled towards its mean by ``factor`` (0-1 scale), through a 256-level table per
    channel (already truncated to 8 bits, as `corrupt` would)."""
    import cv2

    factor = (0.4, 0.3, 0.2, 0.1, 0.05)[s - 1]
    mean = x.reshape(-1, 3).mean(axis=0) / 255.0
    levels = np.arange(256)[:, None] / 255.0
    table = (np.clip((levels - mean) * factor + mean, 0, 1) * 255).astype(np.uint8)  # (256, 3)
    return cv2.LUT(x, table.reshape(256, 1, 3))


def _hsv_change(x: np.ndarray, channel: int, scale: float, shift: float) -> np.ndarray:
    """HSV channel ``channel`` (1 saturation, 2 value; 0-1 scale) -> clip(c scale + shift, 0, 1), the
    others kept, by OpenCV's conversions (float32; the benchmark used skimage's, of the same
    definition: grey pixels have hue 0, red, in both)."""
    import cv2

    hsv = cv2.cvtColor(x.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
    hsv[..., channel] = np.clip(hsv[..., channel] * scale + shift, 0, 1)
    return np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), 0, 1) * 255


def _brightness(x: np.ndarray, s: int, rng: np.random.RandomState) -> np.ndarray:
    return _hsv_change(x, 2, 1.0, (0.1, 0.2, 0.3, 0.4, 0.5)[s - 1])


def _saturate(x: np.ndarray, s: int, rng: np.random.RandomState) -> np.ndarray:
    return _hsv_change(x, 1, *((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))[s - 1])


def _jpeg_compression(x: np.ndarray, s: int, rng: np.random.RandomState) -> np.ndarray:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.fromarray(x).save(buffer, "JPEG", quality=(25, 18, 15, 10, 7)[s - 1])
    return np.asarray(Image.open(buffer).convert("RGB"))


def _pixelate(x: np.ndarray, s: int, rng: np.random.RandomState) -> np.ndarray:
    from PIL import Image

    factor = (0.6, 0.5, 0.4, 0.3, 0.25)[s - 1]
    h, w = x.shape[:2]
    small = Image.fromarray(x).resize((int(w * factor), int(h * factor)), Image.BOX)
    return np.asarray(small.resize((w, h), Image.BOX))


@functools.lru_cache(maxsize=32)
def _reflect_smoothing(n: int, sigma: float, truncate: float) -> np.ndarray:
    """(n, n) matrix A: A @ u is scipy's ``gaussian_filter1d(u, sigma, mode='reflect', truncate=...)``
    (the kernel may be wider than the signal: the signal is mirrored as often as needed)."""
    radius = int(truncate * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    folded = (np.arange(n)[:, None] + offsets[None, :]) % (2 * n)
    columns = np.where(folded < n, folded, 2 * n - 1 - folded)
    rows = np.repeat(np.arange(n), len(offsets))
    return np.bincount(rows * n + columns.ravel(), np.tile(weights, n), minlength=n * n).reshape(n, n)


def _smooth_field(noise: np.ndarray, sigma: float) -> np.ndarray:
    """skimage's ``gaussian(noise, sigma, mode='reflect', truncate=3)`` of an (H, W) field."""
    h, w = noise.shape
    return _reflect_smoothing(h, float(sigma), 3.0) @ noise @ _reflect_smoothing(w, float(sigma), 3.0).T


def _elastic_transform(x: np.ndarray, s: int, rng: np.random.RandomState) -> np.ndarray:
    """A random affine warp (three points moved by up to ``shift`` px), then a smooth random
    displacement field (uniform noise smoothed by ``sigma``, times ``alpha``). The constants are the
    benchmark's, written there as multiples of 244 (the authors' note: "should have been 224")."""
    import cv2
    from scipy.ndimage import map_coordinates

    alpha, sigma, shift = ((244 * 2, 244 * 0.7, 244 * 0.1), (244 * 2, 244 * 0.08, 244 * 0.2),
                           (244 * 0.05, 244 * 0.01, 244 * 0.02), (244 * 0.07, 244 * 0.01, 244 * 0.02),
                           (244 * 0.12, 244 * 0.01, 244 * 0.02))[s - 1]
    image = x.astype(np.float32) / 255.0
    h, w = image.shape[:2]
    centre = np.float32((h, w)) // 2
    third = min(h, w) // 3
    before = np.float32([centre + third, [centre[0] + third, centre[1] - third], centre - third])
    after = before + rng.uniform(-shift, shift, size=before.shape).astype(np.float32)
    image = cv2.warpAffine(image, cv2.getAffineTransform(before, after), (w, h), borderMode=cv2.BORDER_REFLECT_101)
    dx = (_smooth_field(rng.uniform(-1, 1, size=(h, w)), sigma) * alpha).astype(np.float32)
    dy = (_smooth_field(rng.uniform(-1, 1, size=(h, w)), sigma) * alpha).astype(np.float32)
    grid_y, grid_x = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    coords = np.stack([grid_y + dy, grid_x + dx])
    out = np.stack([map_coordinates(image[..., c], coords, order=1, mode="reflect") for c in range(3)], axis=2)
    return np.clip(out, 0, 1) * 255


_DEFINITIONS = {
    "gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise, "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur, "glass_blur": _glass_blur, "motion_blur": _motion_blur, "zoom_blur": _zoom_blur,
    "snow": _snow, "frost": _frost, "fog": _fog, "brightness": _brightness, "contrast": _contrast,
    "elastic_transform": _elastic_transform, "pixelate": _pixelate, "jpeg_compression": _jpeg_compression,
    "speckle_noise": _speckle_noise, "gaussian_blur": _gaussian_blur, "spatter": _spatter, "saturate": _saturate,
}


def _usage(message: str) -> None:
    from ..errors import UsageError

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


# --- one image --------------------------------------------------------------------------------------
def seed_words(seed: int, corruption: str, severity: int, repeat: int, indices: Any) -> np.ndarray:
    """(N, 4) uint32 seed words per image: a 128-bit key from the stream (seed, 'corruption',
    corruption, severity, repeat) and each image's index in the source."""
    from .seeds import per_image_bits, stream_id

    stream = stream_id(seed, "corruption", corruption, int(severity), int(repeat))
    bits = per_image_bits(stream, np.asarray(indices, dtype=np.int64), draws=2)
    return np.ascontiguousarray(bits).view(np.uint32).reshape(len(bits), 4)


def corrupt_image(image: np.ndarray, corruption: str, severity: int, words: np.ndarray) -> np.ndarray:
    """One image (H, W, 3) uint8 -> its corrupted copy (`corrupt` seeded with the image's (4,) uint32
    ``words``, see `seed_words`)."""
    return corrupt(image, corruption, int(severity), seed=np.asarray(words, dtype=np.uint32))


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
