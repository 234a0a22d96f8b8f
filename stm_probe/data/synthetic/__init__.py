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

Rooms: :mod:`~stm_probe.data.synthetic.defaults` (splits, defaults, limits),
:mod:`~stm_probe.data.synthetic.shapes`, :mod:`~stm_probe.data.synthetic.textures`,
:mod:`~stm_probe.data.synthetic.rendering` (one image), :mod:`~stm_probe.data.synthetic.spec` (a split
and its source), :mod:`~stm_probe.data.synthetic.export` (ImageFolder export).
"""
from __future__ import annotations

from .defaults import (CROP_PCT, DEFAULT_CLASSES, DEFAULT_NUM_IMAGES, DEFAULT_SIZE, MAX_CLASSES, MAX_NUM_IMAGES,
                       MAX_SIZE, MIN_CLASSES, MIN_SIZE, PREFIX, SPLITS, render_side)
from .export import export_imagefolder
from .rendering import ImageParams, draw_params, pixel_grid, render_params, shape_coverage
from .shapes import SHAPES, Field, shape_field
from .spec import SyntheticSpec, is_synthetic, parse_spec, synthetic_source
from .textures import TEXTURES, TextureClass

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
    "CROP_PCT",
    "MAX_CLASSES",
    "MAX_NUM_IMAGES",
    "MAX_SIZE",
    "MIN_CLASSES",
    "MIN_SIZE",
    "PREFIX",
    "Field",
    "draw_params",
    "pixel_grid",
    "render_params",
    "shape_coverage",
    "shape_field",
]
