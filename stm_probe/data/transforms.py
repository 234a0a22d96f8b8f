"""The evaluation transforms: PIL image -> ``float32`` tensor in [0, 1], no mean/std normalisation.

:class:`EvalTransform` (short-side resize + centre crop, or a warp to ``S x S``) and
:class:`ShortSideResize` (short side resized, nothing cropped).
"""
from __future__ import annotations

from typing import Literal

import torch
from PIL import Image

from ..errors import UsageError
from .pixels import to_rgb_tensor

DEFAULT_CROP_PCT = 0.875

TransformMode = Literal["center", "warp"]


def resize_size(input_size: int, crop_pct: float = DEFAULT_CROP_PCT) -> int:
    """Short side before the centre crop: ``int(input_size / crop_pct)`` (224 -> 256)."""
    return int(input_size / crop_pct)


def _short_side_size(w: int, h: int, r: int) -> tuple[int, int]:
    """``(width, height)`` with short side ``r``; long side ``int(r * long / short)`` (torchvision)."""
    return (r, int(r * h / w)) if w <= h else (int(r * w / h), r)


class EvalTransform:
    """PIL image -> ``float32`` tensor ``(3, S, S)`` in [0, 1], ``S = input_size``.

    ``mode="center"``: short side to ``resize_size(S)`` (bicubic, antialiased), then centre
    crop ``S x S``; identical to torchvision's ``Resize(R, BICUBIC) + CenterCrop(S) +
    ToTensor()`` for RGB images. ``mode="warp"``: resize straight to ``S x S`` (bicubic, aspect
    ratio not kept, nothing cropped), used by the ERF analysis. No mean/std normalisation.
    Any PIL mode is accepted (see :func:`to_rgb_tensor`).
    """

    def __init__(self, input_size: int = 224, mode: TransformMode = "center", crop_pct: float = DEFAULT_CROP_PCT):
        if mode not in ("center", "warp"):
            raise UsageError(f"unknown transform mode {mode!r}; use 'center' or 'warp'")
        if input_size < 1 or not 0 < crop_pct <= 1:
            raise UsageError(f"bad input size {input_size} / crop fraction {crop_pct}")
        self.input_size = int(input_size)
        self.mode = mode
        self.crop_pct = crop_pct
        self.resize = resize_size(self.input_size, crop_pct)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        s = self.input_size
        if self.mode == "warp":
            return to_rgb_tensor(img, (s, s))
        nw, nh = _short_side_size(*img.size, self.resize)
        # crop offset rounded as torchvision's CenterCrop
        top, left = int(round((nh - s) / 2.0)), int(round((nw - s) / 2.0))
        return to_rgb_tensor(img, (nw, nh), (left, top, left + s, top + s))

    def __repr__(self) -> str:
        if self.mode == "warp":
            return f"EvalTransform(warp to {self.input_size}x{self.input_size}, bicubic, [0,1])"
        return f"EvalTransform(resize {self.resize} bicubic, center crop {self.input_size}, [0,1])"


def eval_transform(
    input_size: int = 224, mode: TransformMode = "center", crop_pct: float = DEFAULT_CROP_PCT
) -> EvalTransform:
    """The standard evaluation transform (see :class:`EvalTransform`)."""
    return EvalTransform(input_size, mode, crop_pct)


class ShortSideResize:
    """PIL image -> ``float32`` tensor ``(3, h, w)`` in [0, 1]: short side resized, nothing cropped.

    The short side becomes ``short_side`` (bicubic, antialiased) and the long side
    ``int(short_side * long / short)``, the rounding of :class:`EvalTransform`, so
    ``EvalTransform(S)(img)`` is the centre ``S x S`` crop of ``ShortSideResize(resize_size(S))(img)``.
    With ``max_short_side`` (>= ``short_side``), an image whose short side lies in
    ``[short_side, max_short_side]`` keeps its native size and a larger one is reduced to
    ``max_short_side``: a higher-resolution base for views that zoom in (the invariance analysis).
    Sizes differ between images, so load these with ``batch_size=1``. Any PIL mode is accepted
    (see :func:`to_rgb_tensor`).
    """

    def __init__(self, short_side: int, max_short_side: int | None = None):
        if short_side < 1 or (max_short_side is not None and max_short_side < short_side):
            raise UsageError(f"bad short side {short_side} / maximum {max_short_side}")
        self.short_side = int(short_side)
        self.max_short_side = int(max_short_side) if max_short_side is not None else self.short_side

    def __call__(self, img: Image.Image) -> torch.Tensor:
        w, h = img.size
        r = min(max(min(w, h), self.short_side), self.max_short_side)
        return to_rgb_tensor(img, _short_side_size(w, h, r))

    def __repr__(self) -> str:
        if self.max_short_side == self.short_side:
            return f"ShortSideResize(short side {self.short_side} bicubic, no crop, [0,1])"
        return (f"ShortSideResize(short side clamped to [{self.short_side}, {self.max_short_side}] bicubic, "
                "no crop, [0,1])")

