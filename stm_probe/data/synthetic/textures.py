"""Textures: ``t(x, y)`` in [0, 1] on pixel coordinates, one pattern and frequency per class."""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from .rendering import ImageParams


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
