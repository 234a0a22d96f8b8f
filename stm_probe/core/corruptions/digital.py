"""ImageNet-C's digital corruptions (brightness, contrast, saturate, JPEG compression, pixelate and the
elastic transform), as make_imagenet_c.py defines them.

Each ``_name(x, severity, rng)`` takes an (H, W, 3) uint8 image and a numpy ``RandomState`` and returns
the corrupted image on the 0-255 scale (clipped and truncated by `corrupt`), with the benchmark's
parameters per severity and its random draws in its order (see `stm_probe.core.corruptions`).
"""
from __future__ import annotations

import functools

import numpy as np


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
