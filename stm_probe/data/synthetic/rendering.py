"""One image: its parameters drawn from ``(seed, split, index)`` and its rendering as ``uint8`` RGB."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .defaults import _SPLIT_CODE
from .shapes import shape_field
from .textures import _NOISE_WAVES, _texture

_NUM_DRAWS = 24 + 3 * _NOISE_WAVES


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
