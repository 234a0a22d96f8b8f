"""ImageNet-C's blur corruptions (defocus, glass, motion, zoom and gaussian blur), as make_imagenet_c.py
defines them, with the filters other corruptions share: skimage's Gaussian (`_gaussian`), ImageMagick's
motion blur (`_magick_motion_blur`) and scipy's clipped zoom (`_clipped_zoom`).

Each ``_name(x, severity, rng)`` takes an (H, W, 3) uint8 image and a numpy ``RandomState`` and returns
the corrupted image as floats on the 0-255 scale (clipped and truncated by `corrupt`), with the
benchmark's parameters per severity and its random draws in its order (see `stm_probe.core.corruptions`).
"""
from __future__ import annotations

import functools

import numpy as np


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """skimage's ``gaussian`` of an (H, W[, C]) float image: per channel, edges repeated ('nearest'),
    the kernel cut at 4 sigma (OpenCV's separable filter with the same sampled, normalised kernel)."""
    import cv2

    size = 2 * int(4.0 * sigma + 0.5) + 1
    return cv2.GaussianBlur(x, (size, size), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)


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
