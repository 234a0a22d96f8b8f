"""Pixels: any PIL image mode -> an RGB ``float32`` tensor ``(3, H, W)`` in [0, 1].

16-bit images keep their precision, transparent pixels are composited on white, EXIF orientation
is not applied (as in torchvision and timm).
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

#: Colour behind transparent pixels (RGBA, LA, PA, palette or colour-key transparency).
ALPHA_BACKGROUND: tuple[int, int, int] = (255, 255, 255)

_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _integer_range(img: Image.Image) -> float:
    """Largest value of an integer-mode image's sample format.

    Pillow reads 16-bit PNG / TIFF as ``I;16*`` and 16-bit PGM/PPM as ``I`` (scaled to
    0..65535), so the range is 65535 unless a TIFF declares another bit depth
    (``BitsPerSample``; signed when ``SampleFormat`` is 2).
    """
    tags = getattr(img, "tag_v2", None)
    if img.mode != "I" or tags is None or 258 not in tags:
        return 65535.0
    bits, sample_format = tags[258], tags.get(339, 1)
    bits = int(bits[0] if isinstance(bits, tuple) else bits)
    signed = (sample_format[0] if isinstance(sample_format, tuple) else sample_format) == 2
    return float(2 ** (bits - 1) - 1 if signed else 2 ** bits - 1)


def _rgb_planes(img: Image.Image) -> tuple[Image.Image, ...]:
    """``img`` as one 8-bit ``RGB`` image, or as float ``F`` planes in [0, 1].

    Pillow's high-bit-depth modes are single-channel (it decodes a 16-bit colour PNG to 8-bit
    RGB), so they give one grey plane, which :func:`to_rgb_tensor` repeats three times.

    * ``I;16*``: divided by 65535; ``I``: divided by its sample range (:func:`_integer_range`),
      negatives clip to 0; ``F``: taken as intensities, clipped to [0, 1] (NaN -> 0).
      Transparency of a 16-bit grey image is ignored.
    * ``RGBA``/``LA``/``PA`` and any image with a ``transparency`` entry (palette index or
      colour key): composited on :data:`ALPHA_BACKGROUND` (white).
    * everything else (``L``, ``1``, ``P``, ``CMYK``, ``YCbCr``, ``RGBX``, ...): PIL's
      ``convert("RGB")`` (CMYK without colour profile: ``(255 - c)(255 - k) / 255``).
    """
    mode = img.mode
    if mode in _HIGH_BIT_MODES:
        arr = np.asarray(img).astype(np.float32 if mode == "F" else np.float64)
        if mode != "F":
            arr = arr / _integer_range(img)
        arr = np.clip(np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
        return (Image.fromarray(arr.astype(np.float32)),)
    if mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("LA").convert("RGBA") if mode == "La" else img.convert("RGBA")
        background = Image.new("RGBA", img.size, ALPHA_BACKGROUND + (255,))
        return (Image.alpha_composite(background, rgba).convert("RGB"),)
    return (img if mode == "RGB" else img.convert("RGB"),)


def to_rgb_tensor(
    img: Image.Image,
    size: tuple[int, int] | None = None,
    crop: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """PIL image of any mode -> ``float32`` tensor ``(3, H, W)`` in [0, 1].

    ``size=(width, height)`` resizes first (PIL bicubic, antialiased), then ``crop=(left,
    top, right, bottom)`` cuts a box out of the resized image. 8-bit images are resized as
    8-bit RGB, exactly as torchvision's ``Resize`` + ``ToTensor``; 16-bit and float images
    are resized as float planes (PIL mode ``F``) and keep their precision. Mode conversions
    are described in :func:`_rgb_planes`. Raises ``ValueError`` if the resized image would
    exceed PIL's decompression-bomb pixel limit (an extreme aspect ratio).
    """
    planes = _rgb_planes(img)
    if size is not None and tuple(size) != img.size:
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and size[0] * size[1] > limit:
            raise ValueError(f"resizing {img.size[0]}x{img.size[1]} to {size[0]}x{size[1]} pixels is over "
                             f"PIL's limit of {limit} pixels (extreme aspect ratio)")
        planes = tuple(p.resize(tuple(size), Image.BICUBIC) for p in planes)
    if crop is not None:
        planes = tuple(p.crop(crop) for p in planes)
    if planes[0].mode == "RGB":
        arr = np.asarray(planes[0], dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255)
    arr = np.stack([np.asarray(p, dtype=np.float32) for p in planes])
    x = torch.from_numpy(np.clip(arr, 0.0, 1.0))  # bicubic overshoot
    return x.expand(3, -1, -1).contiguous() if x.shape[0] == 1 else x

