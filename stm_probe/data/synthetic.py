"""Procedural shapes-and-textures images, made on the fly from ``(seed, split, index)``.

``K`` classes (2..16, default 8). Class ``k`` is a shape (:data:`SHAPES`: disc, square, triangle,
star, cross, ring, crescent, hexagon, ...) and a texture (:data:`TEXTURES`: stripes, dots, checks,
zigzag, waves, hatch, band noise, rings, each at its own spatial frequency). Every image draws
its own position, scale, rotation, colours and texture orientation / phase. Splits:

* ``train`` / ``val``: shape ``k`` filled with texture ``k`` on a plain background; both cues
  give the class. The two splits draw from different random streams (never the same image).
* ``shape-only``: shape ``k`` in one plain colour on a plain background (no texture).
* ``texture-only``: texture ``k`` over the whole image (no shape).
* ``cue-conflict``: shape ``i`` filled with texture ``j != i``; the label is the shape class
  ``i``, :meth:`SyntheticSpec.texture_label` gives ``j`` (so does the file name).

Labels cycle through the classes (``label = index % K``), so the first ``n`` images of every
split are balanced to within one image. In ``cue-conflict`` the texture class runs through the
``K - 1`` other classes (``j = (i + 1 + (index // K) % (K - 1)) % K``).

Geometry, in pixels of an image rendered at ``size`` (the side the model sees, default 64):
shapes have a bounding radius of 0.26..0.40 ``size`` and lie inside the central
``size x size`` square; the image itself is rendered at ``int(size / 0.875)`` (73 for 64) so
that the standard evaluation transform (short side to ``int(size / 0.875)``, centre crop
``size``) keeps every shape whole without resampling, and the invariance views have real
content around it. Textures have a fixed period in pixels at every ``size`` (0.075 to 0.30
cycles per pixel, :data:`TEXTURES`): a larger ``size`` gives larger shapes, not finer textures.
Each texture's strongest Fourier component lies at its frequency (radially).

Determinism: each image has its own generator ``PCG64(SeedSequence([seed, split code,
index]))``; a fixed-length vector of uniform draws sets every parameter (no global RNG, no
draw that depends on another), and the rendering is plain float64 numpy, quantised to
``uint8`` at the end. The same ``(seed, split, index, size)`` gives the same pixels on every
machine (tested by hashing images).

``--data`` accepts ``synthetic`` (the ``val`` split) or ``synthetic:<split>`` with optional
query options ``?classes=K&size=S&seed=N&n=N``, e.g. ``synthetic:train?classes=4&n=20000``
(``n``: images in the split, default 10,000, at most 1,000,000). The source's image paths are
pseudo paths ``<spec>/<class folder>/<index>.png`` (``<spec>/<shape>/<shape><index>-<texture
class><index>.png`` in ``cue-conflict``), the relative paths :func:`export_imagefolder` writes.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, NamedTuple
from urllib.parse import parse_qsl

import numpy as np
from PIL import Image

from ..errors import UsageError

__all__ = [
    "DEFAULT_CLASSES",
    "DEFAULT_NUM_IMAGES",
    "DEFAULT_SIZE",
    "SHAPES",
    "SPLITS",
    "TEXTURES",
    "ImageParams",
    "SyntheticSpec",
    "TextureClass",
    "export_imagefolder",
    "is_synthetic",
    "parse_spec",
    "render_side",
    "synthetic_source",
]

SPLITS: tuple[str, ...] = ("train", "val", "shape-only", "texture-only", "cue-conflict")
_SPLIT_CODE = {name: code for code, name in enumerate(SPLITS, start=1)}

DEFAULT_CLASSES = 8
MIN_CLASSES, MAX_CLASSES = 2, 16
DEFAULT_SIZE = 64
MIN_SIZE, MAX_SIZE = 32, 1024
DEFAULT_NUM_IMAGES = 10_000
MAX_NUM_IMAGES = 1_000_000
CROP_PCT = 0.875  # the evaluation transform's crop fraction (stm_probe.data.DEFAULT_CROP_PCT)
PREFIX = "synthetic"

#: Shape of each class, in class order (the first ``K`` are used).
SHAPES: tuple[str, ...] = ("disc", "square", "triangle", "star", "cross", "ring", "crescent", "hexagon",
                           "heart", "arrow", "semicircle", "ellipse", "frame", "lshape", "tshape", "drop")


class TextureClass(NamedTuple):
    """A texture class: its name, pattern and frequency (cycles per pixel of the rendered image)."""

    name: str
    pattern: str
    frequency: float


#: Texture of each class, in class order. Frequencies are 0.075 * 4 ** (i / 15), i = 0..15; the
#: first eight classes take every second one, rising with the class; classes 8..15 repeat the
#: patterns at a frequency at least 1.5x away from the first eight's.
TEXTURES: tuple[TextureClass, ...] = (
    TextureClass("stripes", "stripes", 0.075),
    TextureClass("dots", "dots", 0.0902),
    TextureClass("checks", "checks", 0.1085),
    TextureClass("zigzag", "zigzag", 0.1306),
    TextureClass("waves", "waves", 0.1571),
    TextureClass("hatch", "hatch", 0.189),
    TextureClass("noise", "noise", 0.2274),
    TextureClass("rings", "rings", 0.2735),
    TextureClass("finestripes", "stripes", 0.3),
    TextureClass("finedots", "dots", 0.2073),
    TextureClass("finechecks", "checks", 0.2494),
    TextureClass("widezigzag", "zigzag", 0.0823),
    TextureClass("widewaves", "waves", 0.099),
    TextureClass("widehatch", "hatch", 0.1191),
    TextureClass("widenoise", "noise", 0.1432),
    TextureClass("widerings", "rings", 0.1723),
)

_NOISE_WAVES = 12  # plane waves summed by the band-noise texture
_NUM_DRAWS = 24 + 3 * _NOISE_WAVES


def render_side(size: int) -> int:
    """Side in px an image is rendered at for a model input of ``size``: ``int(size / 0.875)``."""
    return int(size / CROP_PCT)


# --------------------------------------------------------------------------------------------
# Shapes: signed distance in unit coordinates (negative inside, bounding radius <= 1)
# --------------------------------------------------------------------------------------------

Field = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _box(u: np.ndarray, v: np.ndarray, cx: float, cy: float, hx: float, hy: float) -> np.ndarray:
    """Rectangle centred at (cx, cy) with half sides (hx, hy); exact distance outside too."""
    qx, qy = np.abs(u - cx) - hx, np.abs(v - cy) - hy
    return np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0)) + np.minimum(np.maximum(qx, qy), 0.0)


def _circle(u: np.ndarray, v: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    return np.hypot(u - cx, v - cy) - r


def _segment_distance(u: np.ndarray, v: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from (u, v) to the segment a-b."""
    d = b - a
    h = np.clip(((u - a[0]) * d[0] + (v - a[1]) * d[1]) / (d @ d), 0.0, 1.0)
    return np.hypot(u - a[0] - h * d[0], v - a[1] - h * d[1])


def _convex(vertices: list[tuple[float, float]]) -> Field:
    """Convex polygon: inside, the largest signed distance to its edge lines; outside, the
    distance to the nearest edge (exact on both sides, so corners are not drawn as spikes)."""
    pts = np.asarray(vertices, dtype=np.float64)
    centre = pts.mean(axis=0)
    edges = []
    for a, b in zip(pts, np.roll(pts, -1, axis=0)):
        normal = np.array([b[1] - a[1], a[0] - b[0]]) / np.hypot(*(b - a))
        if normal @ (centre - a) > 0:
            normal = -normal  # point outwards
        edges.append((a, b, normal))

    def field(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        lines = np.max([n[0] * (u - a[0]) + n[1] * (v - a[1]) for a, _, n in edges], axis=0)
        outside = np.min([_segment_distance(u, v, a, b) for a, b, _ in edges], axis=0)
        return np.where(lines > 0, outside, lines)

    return field


def _regular(n: int, radius: float) -> Field:
    """Regular ``n``-gon with circumradius ``radius``, a vertex on the +v axis."""
    angles = [np.pi / 2 + 2 * np.pi * k / n for k in range(n)]
    return _convex([(radius * np.cos(a), radius * np.sin(a)) for a in angles])


def _star(points: int = 5, outer: float = 1.0, inner: float = 0.45) -> Field:
    """Star polygon: the angle is folded into half a sector, then the signed distance to one edge
    (from a point, radius ``outer``, to the next inner corner, radius ``inner``)."""
    sector = 2 * np.pi / points
    a = np.array([outer, 0.0])
    b = inner * np.array([np.cos(sector / 2), np.sin(sector / 2)])
    normal = np.array([b[1] - a[1], a[0] - b[0]])
    if normal @ a < 0:
        normal = -normal  # away from the centre

    def field(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        r = np.hypot(u, v)
        phi = np.mod(np.arctan2(u, v), sector)  # a point on the +v axis
        phi = np.minimum(phi, sector - phi)
        x, y = r * np.cos(phi), r * np.sin(phi)
        side = np.sign(normal[0] * (x - a[0]) + normal[1] * (y - a[1]))
        return side * _segment_distance(x, y, a, b)

    return field


def _crescent(outer: float = 0.9, bite_x: float = 0.4, bite: float = 0.75) -> Field:
    """A disc of radius ``outer`` less a disc of radius ``bite`` at (bite_x, 0); outside, the distance
    to the outer arc where its nearest point is kept, else to the nearer tip."""
    tip_u = (outer ** 2 - bite ** 2 + bite_x ** 2) / (2 * bite_x)
    tip_v = np.sqrt(outer ** 2 - tip_u ** 2)

    def field(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        r = np.hypot(u, v)
        inner = np.maximum(r - outer, bite - np.hypot(u - bite_x, v))
        scale = outer / np.maximum(r, 1e-12)  # nearest point of the outer circle
        arc_kept = np.hypot(u * scale - bite_x, v * scale) >= bite
        to_tip = np.hypot(u - tip_u, np.abs(v) - tip_v)
        outside = np.where((r > outer) & arc_kept, r - outer, to_tip)
        return np.where(inner > 0, outside, inner)

    return field


_TRIANGLE = _regular(3, 1.0)
_HEXAGON = _regular(6, 0.95)
_STAR = _star()
_HEART_TIP = _convex([(-0.78, 0.05), (0.78, 0.05), (0.0, -0.92)])
_ARROW_HEAD = _convex([(0.95, 0.0), (0.25, 0.55), (0.25, -0.55)])
_DROP_TIP = _convex([(0.0, -0.95), (0.52, -0.05), (-0.52, -0.05)])

_SHAPE_FIELDS: dict[str, Field] = {
    "disc": lambda u, v: np.hypot(u, v) - 0.85,
    "square": lambda u, v: _box(u, v, 0.0, 0.0, 0.68, 0.68),
    "triangle": _TRIANGLE,
    "star": _STAR,
    "cross": lambda u, v: np.minimum(_box(u, v, 0, 0, 0.94, 0.3), _box(u, v, 0, 0, 0.3, 0.94)),
    "ring": lambda u, v: np.abs(np.hypot(u, v) - 0.65) - 0.25,
    "crescent": _crescent(),
    "hexagon": _HEXAGON,
    "heart": lambda u, v: np.minimum.reduce([_circle(u, v, -0.36, 0.28, 0.46), _circle(u, v, 0.36, 0.28, 0.46),
                                             _HEART_TIP(u, v)]),
    "arrow": lambda u, v: np.minimum(_box(u, v, -0.35, 0.0, 0.6, 0.16), _ARROW_HEAD(u, v)),
    "semicircle": lambda u, v: np.maximum(_circle(u, v, 0.0, -0.35, 0.9), -(v + 0.35)),
    "ellipse": lambda u, v: (np.hypot(u / 0.95, v / 0.45) - 1.0) * 0.45,
    "frame": lambda u, v: np.abs(_box(u, v, 0.0, 0.0, 0.55, 0.55)) - 0.15,
    "lshape": lambda u, v: np.minimum(_box(u, v, -0.4, 0.05, 0.22, 0.7), _box(u, v, 0.05, 0.53, 0.67, 0.22)),
    "tshape": lambda u, v: np.minimum(_box(u, v, 0.0, -0.5, 0.7, 0.2), _box(u, v, 0.0, 0.2, 0.2, 0.5)),
    "drop": lambda u, v: np.minimum(_circle(u, v, 0.0, 0.25, 0.6), _DROP_TIP(u, v)),
}
assert tuple(_SHAPE_FIELDS) == SHAPES


def shape_field(shape: int) -> Field:
    """Signed distance field of class ``shape`` in unit coordinates (negative inside)."""
    return _SHAPE_FIELDS[SHAPES[shape]]


# --------------------------------------------------------------------------------------------
# Textures: t(x, y) in [0, 1] on pixel coordinates
# --------------------------------------------------------------------------------------------


def _soft(z: np.ndarray, f: float) -> np.ndarray:
    """A sinusoid ``z`` in [-1, 1] at ``f`` cycles/px -> a square wave with ~1.5 px edges, in [0, 1]."""
    gain = max(0.5, 1.0 / (3.0 * np.pi * f))
    return np.clip(0.5 + gain * z, 0.0, 1.0)


def _lines(s: np.ndarray, f: float, phase: float, half_width: float) -> np.ndarray:
    """Lines of ``half_width`` px every ``1 / f`` px across ``s``, antialiased over 1 px."""
    offset = np.mod(s * f + phase / (2 * np.pi), 1.0)
    distance = np.minimum(offset, 1.0 - offset) / f
    return np.clip(0.5 + half_width - distance, 0.0, 1.0)


def _texture(params: "ImageParams", x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The texture of ``params`` on pixel coordinates ``x, y`` (px from the image centre), in [0, 1]."""
    tex = TEXTURES[params.texture]
    f = tex.frequency
    c, s_ = np.cos(params.texture_angle), np.sin(params.texture_angle)
    s = c * x + s_ * y
    t = -s_ * x + c * y
    p1, p2 = params.texture_phase
    two_pi = 2 * np.pi
    if tex.pattern == "stripes":
        return _soft(np.sin(two_pi * f * s + p1), f)
    if tex.pattern == "dots":  # square lattice of period 1/f, dots of radius 0.28 periods
        a = np.mod(f * s + p1 / two_pi, 1.0) - 0.5
        b = np.mod(f * t + p2 / two_pi, 1.0) - 0.5
        return np.clip(0.5 + (0.28 - np.hypot(a, b)) / f, 0.0, 1.0)
    if tex.pattern == "checks":  # cells along both axes at f / sqrt(2): the fundamental lies at radius f
        fc = f / np.sqrt(2.0)
        return _soft(np.sin(two_pi * fc * s + p1) * np.sin(two_pi * fc * t + p2), fc)
    if tex.pattern == "zigzag":  # 45-degree chevrons whose stripes run at f
        fs = f / np.sqrt(2.0)
        phase = np.mod(fs / 2 * t + p2 / two_pi, 1.0)
        tri = 2.0 * np.abs(2.0 * phase - 1.0) - 1.0
        return _soft(np.sin(two_pi * fs * (s + 0.5 * tri / fs) + p1), f)
    if tex.pattern == "waves":
        return _soft(np.sin(two_pi * f * s + p1 + 1.6 * np.sin(two_pi * f / 3.0 * t + p2)), f)
    if tex.pattern == "hatch":  # two orthogonal sets of lines
        return np.maximum(_lines(s, f, p1, 0.18 / f), _lines(t, f, p2, 0.18 / f))
    if tex.pattern == "noise":  # band noise: plane waves at 0.92..1.08 f in every direction
        freq, angle, phase = params.noise
        z = np.zeros_like(x)
        for fk, ak, pk in zip(freq * f, angle, phase):
            z += np.cos(two_pi * fk * (np.cos(ak) * x + np.sin(ak) * y) + pk)
        return np.clip(0.5 + 0.3 * z / np.sqrt(_NOISE_WAVES / 2.0), 0.0, 1.0)
    if tex.pattern == "rings":  # concentric circles around a point up to one image side away
        ox, oy = params.texture_origin
        return _soft(np.sin(two_pi * f * np.hypot(x - ox, y - oy) + p1), f)
    raise AssertionError(tex.pattern)


# --------------------------------------------------------------------------------------------
# One image
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ImageParams:
    """Everything that makes one image. Lengths in px of the rendered image, from its centre
    (x to the right, y down); angles in radians; colours RGB in [0, 1].

    ``shape`` / ``texture``: class indices (``None`` where the split has no shape / texture).
    ``radius``: the shape's bounding radius; ``centre``: its position; ``angle``: its rotation.
    ``background``: the plain background; the texture blends ``colour_a`` (t = 0) and
    ``colour_b`` (t = 1); ``fill`` = their mean colours a plain shape (``shape-only``).
    ``noise``: (3, 12) relative frequency, direction and phase of the band-noise waves.
    """

    shape: int | None
    texture: int | None
    radius: float
    centre: tuple[float, float]
    angle: float
    background: np.ndarray
    colour_a: np.ndarray
    colour_b: np.ndarray
    texture_angle: float
    texture_phase: tuple[float, float]
    texture_origin: tuple[float, float]
    noise: np.ndarray

    @property
    def fill(self) -> np.ndarray:
        return (self.colour_a + self.colour_b) / 2.0


def draw_params(seed: int, split: str, index: int, size: int, shape: int | None,
                texture: int | None) -> ImageParams:
    """The parameters of image ``index`` of ``split``, from its own generator (see the module docstring).

    The same fixed vector of uniform draws is used in every split, so nothing depends on the
    class or on another image.
    """
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, _SPLIT_CODE[split], index])))
    u = rng.random(_NUM_DRAWS)
    light = u[0] < 0.5  # background light (texture dark and mid) or dark (texture light and mid)
    background = np.clip((0.72 if light else 0.06) + 0.22 * u[1] + 0.06 * (2 * u[2:5] - 1), 0.0, 1.0)
    colour_a = np.clip((0.04 if light else 0.82) + 0.14 * u[5] + 0.12 * (2 * u[6:9] - 1), 0.0, 1.0)
    colour_b = np.clip(0.40 + 0.16 * u[9] + 0.12 * (2 * u[10:13] - 1), 0.0, 1.0)
    radius = size * (0.26 + 0.14 * u[13])
    reach = size / 2.0 - radius - 1.0  # the shape stays inside the central size x size square
    centre = (reach * (2 * u[14] - 1), reach * (2 * u[15] - 1))
    return ImageParams(
        shape=shape, texture=texture, radius=float(radius), centre=(float(centre[0]), float(centre[1])),
        angle=float(2 * np.pi * u[16]), background=background, colour_a=colour_a, colour_b=colour_b,
        texture_angle=float(np.pi * u[17]), texture_phase=(float(2 * np.pi * u[18]), float(2 * np.pi * u[19])),
        texture_origin=(float(size * (2 * u[20] - 1)), float(size * (2 * u[21] - 1))),
        noise=np.stack([0.92 + 0.16 * u[24:24 + _NOISE_WAVES],
                        2 * np.pi * u[24 + _NOISE_WAVES:24 + 2 * _NOISE_WAVES],
                        2 * np.pi * u[24 + 2 * _NOISE_WAVES:]]),
    )


def pixel_grid(side: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``x, y`` (side, side) in px from the image centre (x right, y down)."""
    c = np.arange(side, dtype=np.float64) + 0.5 - side / 2.0
    return np.meshgrid(c, c)


def shape_coverage(params: ImageParams, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fraction of each pixel inside the shape (antialiased over 1 px), (side, side) in [0, 1]."""
    c, s = np.cos(params.angle), np.sin(params.angle)
    dx, dy = x - params.centre[0], y - params.centre[1]
    u = (c * dx + s * dy) / params.radius
    v = (-s * dx + c * dy) / params.radius
    return np.clip(0.5 - shape_field(params.shape)(u, v) * params.radius, 0.0, 1.0)


def render_params(params: ImageParams, side: int) -> np.ndarray:
    """Render ``params`` as a ``uint8`` RGB array (side, side, 3)."""
    x, y = pixel_grid(side)
    if params.texture is not None:
        t = _texture(params, x, y)[..., None]
        paint = params.colour_a * (1.0 - t) + params.colour_b * t
    else:
        paint = np.broadcast_to(params.fill, (side, side, 3))
    if params.shape is None:
        image = paint
    else:
        alpha = shape_coverage(params, x, y)[..., None]
        image = params.background * (1.0 - alpha) + paint * alpha
    return np.floor(np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# A split
# --------------------------------------------------------------------------------------------

_FILE_INDEX = re.compile(r"(\d+)")


@dataclass(frozen=True)
class SyntheticSpec:
    """One split of the synthetic set: ``num_images`` images, ``index`` 0 .. num_images - 1."""

    split: str = "val"
    classes: int = DEFAULT_CLASSES
    size: int = DEFAULT_SIZE
    seed: int = 0
    num_images: int = DEFAULT_NUM_IMAGES

    def __post_init__(self) -> None:
        where = f"--data {self.location}"
        if self.split not in SPLITS:
            raise UsageError(f"--data synthetic:{self.split}: unknown split; use one of {', '.join(SPLITS)}")
        if not MIN_CLASSES <= self.classes <= MAX_CLASSES:
            raise UsageError(f"{where}: classes={self.classes} is out of range; use {MIN_CLASSES}..{MAX_CLASSES}")
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise UsageError(f"{where}: size={self.size} is out of range; use {MIN_SIZE}..{MAX_SIZE} px")
        if self.seed < 0:
            raise UsageError(f"{where}: seed={self.seed} is negative; use a seed >= 0")
        if not 1 <= self.num_images <= MAX_NUM_IMAGES:
            raise UsageError(f"{where}: n={self.num_images} is out of range; use 1..{MAX_NUM_IMAGES}")

    @property
    def location(self) -> str:
        """The canonical ``--data`` text of the set (without ``n``, which only sets how many)."""
        return f"{PREFIX}:{self.split}?classes={self.classes}&size={self.size}&seed={self.seed}"

    @property
    def side(self) -> int:
        """Side in px of the rendered images (:func:`render_side`)."""
        return render_side(self.size)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The folder of each label: ``<k>-<shape>`` (``<k>-<texture>`` in texture-only), k two digits;
        sorted, they give the labels back (an exported ImageFolder reads with the same labels)."""
        names = [t.name for t in TEXTURES] if self.split == "texture-only" else list(SHAPES)
        return tuple(f"{k:02d}-{names[k]}" for k in range(self.classes))

    def with_split(self, split: str) -> "SyntheticSpec":
        """The same set (classes, size, seed, n) in another split."""
        return replace(self, split=split)

    def _check(self, index: int) -> int:
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} is outside 0..{self.num_images - 1} of {self.location}")
        return int(index)

    def label(self, index: int) -> int:
        """The label of image ``index``: its shape class (its texture class in ``texture-only``)."""
        return self._check(index) % self.classes

    def shape_label(self, index: int) -> int | None:
        """Shape class of image ``index`` (``None`` in ``texture-only``)."""
        return None if self.split == "texture-only" else self.label(index)

    def texture_label(self, index: int) -> int | None:
        """Texture class of image ``index`` (``None`` in ``shape-only``); differs from the shape in cue-conflict."""
        k = self.label(index)
        if self.split == "shape-only":
            return None
        if self.split == "cue-conflict":
            return (k + 1 + (index // self.classes) % (self.classes - 1)) % self.classes
        return k

    def params(self, index: int) -> ImageParams:
        """The generating parameters of image ``index``."""
        return draw_params(self.seed, self.split, self._check(index), self.size, self.shape_label(index),
                           self.texture_label(index))

    def render(self, index: int) -> np.ndarray:
        """Image ``index`` as ``uint8`` RGB (side, side, 3), side = ``int(size / 0.875)``."""
        return render_params(self.params(index), self.side)

    def image(self, index: int) -> Image.Image:
        """Image ``index`` as a PIL RGB image."""
        return Image.fromarray(self.render(index), "RGB")

    def relpath(self, index: int) -> str:
        """``<class folder>/<index>.png``; in cue-conflict ``<shape>/<shape><index>-<texture class><index>.png``,
        the texture class named by its class's shape (the cue-conflict probe's layout)."""
        if self.split == "cue-conflict":
            shape, texture = SHAPES[self.label(index)], SHAPES[self.texture_label(index)]
            return f"{shape}/{shape}{index:06d}-{texture}{index:06d}.png"
        return f"{self.class_names[self.label(index)]}/{index:06d}.png"

    def path(self, index: int) -> str:
        """The pseudo path of image ``index``: ``<location>/<relpath>``."""
        return f"{self.location}/{self.relpath(index)}"

    def index_of(self, path: str) -> int:
        """The image index in a pseudo path or exported file name (its first number)."""
        match = _FILE_INDEX.search(os.path.basename(path))
        if match is None:
            raise ValueError(f"{path} is not a synthetic image path")
        return self._check(int(match.group(1)))

    def notes(self) -> tuple[str, ...]:
        """What the labels mean, for the source description."""
        if self.split == "cue-conflict":
            return ("label = shape class; texture class in the file name (<shape><i>-<texture class><i>.png)",)
        if self.split == "texture-only":
            return ("label = texture class (the texture of that class in train)",)
        return ()


def is_synthetic(data: object) -> bool:
    """True if a ``--data`` value names the synthetic set (a string ``synthetic``, ``synthetic:...``
    or ``synthetic?...``). ``synthetic`` or ``synthetic?...`` while a file or folder ``./synthetic``
    exists is ambiguous: UsageError (``synthetic:val`` names the set, ``./synthetic`` the folder)."""
    if not (isinstance(data, str) and (data == PREFIX or data.startswith((PREFIX + ":", PREFIX + "?")))):
        return False
    if not data.startswith(PREFIX + ":") and os.path.lexists(PREFIX):
        raise UsageError(f"--data {data}: ambiguous, the working directory holds a '{PREFIX}' folder or file too; "
                         f"write {PREFIX}:val{data[len(PREFIX):]} for the synthetic set or ./{PREFIX} for the folder")
    return True


_OPTION_FIELDS = {"classes": "classes", "size": "size", "seed": "seed", "n": "num_images"}


def parse_spec(text: str) -> SyntheticSpec:
    """``synthetic[:<split>][?classes=K&size=S&seed=N&n=N]`` -> :class:`SyntheticSpec` (split default ``val``)."""
    if not is_synthetic(text):
        raise UsageError(f"--data {text}: not a synthetic set; write synthetic:<split>[?classes=K&size=S&seed=N&n=N]")
    head, _, query = text.partition("?")
    split = head[len(PREFIX) + 1:] if head != PREFIX else "val"
    if split not in SPLITS:
        raise UsageError(f"--data {text}: unknown split '{split}'; use one of {', '.join(SPLITS)}")
    values: dict[str, int] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in _OPTION_FIELDS:
            raise UsageError(f"--data {text}: unknown option '{key}'; use {', '.join(_OPTION_FIELDS)}")
        if not re.fullmatch(r"\d+", value):
            raise UsageError(f"--data {text}: {key}={value} is not a non-negative integer")
        values[_OPTION_FIELDS[key]] = int(value)
    return SyntheticSpec(split=split, **values)


def synthetic_source(spec: SyntheticSpec | str):
    """The :class:`~stm_probe.data.ImageSource` of a split: every image, labelled, rendered on the fly."""
    from . import ImageSource

    if isinstance(spec, str):
        spec = parse_spec(spec)
    n, k = spec.num_images, spec.classes
    # spec.path(i) without the per-image checks: a million paths in about a second
    if spec.split == "cue-conflict":
        names = SHAPES[:k]
        paths = tuple(f"{spec.location}/{names[i % k]}/{names[i % k]}{i:06d}-"
                      f"{names[(i % k + 1 + (i // k) % (k - 1)) % k]}{i:06d}.png" for i in range(n))
    else:
        folders = [f"{spec.location}/{name}/" for name in spec.class_names]
        paths = tuple(f"{folders[i % k]}{i:06d}.png" for i in range(n))
    return ImageSource(
        paths=paths,
        labels=tuple(i % k for i in range(n)),
        kind="synthetic",
        location=Path(spec.location),
        class_names=spec.class_names,
        label_space="synthetic",
        notes=spec.notes(),
        synthetic=spec,
    )


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def export_imagefolder(split: str, out_dir: str | os.PathLike, num_images: int, seed: int = 0,
                       classes: int = DEFAULT_CLASSES, size: int = DEFAULT_SIZE) -> list[Path]:
    """Write images ``0 .. num_images - 1`` of a split as PNGs in ImageFolder layout; returns their paths.

    Files are ``out_dir/<relpath>`` (:meth:`SyntheticSpec.relpath`): ``<k>-<name>/<index>.png``,
    read back by ``--data out_dir`` with the same labels and pixels; cue-conflict uses the
    cue-conflict probe's ``<shape>/<shape><index>-<texture class><index>.png``. ``synthetic.json``
    in ``out_dir`` records the set. ``out_dir`` must not exist or be empty (UsageError otherwise).
    """
    spec = SyntheticSpec(split=split, classes=classes, size=size, seed=seed, num_images=num_images)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out} already exists and is not an empty folder; choose a new folder")
    written = []
    for index in range(num_images):
        path = out / spec.relpath(index)
        path.parent.mkdir(parents=True, exist_ok=True)
        spec.image(index).save(path, format="PNG")
        written.append(path)
    record = {"data": f"{spec.location}&n={num_images}", "split": split, "classes": classes, "size": size,
              "seed": seed, "num_images": num_images, "side": spec.side, "class_names": list(spec.class_names),
              "shapes": list(SHAPES[:classes]), "textures": [t._asdict() for t in TEXTURES[:classes]]}
    (out / "synthetic.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return written
