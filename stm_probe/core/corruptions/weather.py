"""ImageNet-C's weather corruptions (fog, frost, snow and spatter), as make_imagenet_c.py defines them,
and the benchmark's frost textures (shipped by corrupt-tta, checked by sha256).

Each ``_name(x, severity, rng)`` takes an (H, W, 3) uint8 image and a numpy ``RandomState`` and returns
the corrupted image as floats on the 0-255 scale (clipped and truncated by `corrupt`), with the
benchmark's parameters per severity and its random draws in its order (see `stm_probe.core.corruptions`).
"""
from __future__ import annotations

import functools
import hashlib
from typing import Any

import numpy as np

from .blur import _clipped_zoom, _gaussian, _magick_motion_blur


#: the benchmark's frost textures 1-5 (make_imagenet_c.py draws from these five of its six), as the
#: corrupt-tta package ships them: file name and sha256 (the files of the imagecorruptions package)
FROST_TEXTURES = (
    ("frost1.png", "ff9f907860bd7a835d459e32f9d588062b7f61ee267343cc7222b56753a14755"),
    ("frost2.png", "fe211a89b336999c207a852ce05818d4545d0b57c5beadd824b4cc9d9a9b6137"),
    ("frost3.png", "2d0d50b4a9bb213f38b024ef7768731bb83cc08d2f26b5766bbc167cdfa0e504"),
    ("frost4.jpg", "3f8b91ca1a9fa7167b09e773da53f5ae60d0a1fd88f02a783f6e328a72887f6e"),
    ("frost5.jpg", "5fc6a19df4a429ba68abdcc8f8a4278d4c9f81c9ccafd2c92ab0c8cf8992ebd2"),
)


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
