"""Batched image geometry on tensors that reproduces PIL's 8-bit pipeline exactly.

Images are ``(B, C, H, W)`` float tensors whose values are multiples of 1/255 (decoded 8-bit
images, as ``ToTensor`` gives them); image ``b`` of a batch may be smaller than the canvas, with
its own size in ``sizes[b] = (h_b, w_b)``. The primitives run on any device, on the whole batch
at once:

* `resize_weights` + `resample`: PIL's antialiased bicubic resize (``Image.resize(size,
  BICUBIC)``, kernel a = -0.5) as two banded passes (`Taps`) with PIL's 22-bit fixed-point
  coefficients and its rounding to 8 bits after the horizontal and after the vertical pass, so
  the result equals PIL's bit for bit. A crop and zero padding fold into the taps.
* `select` / `roll`: integer crops, shifts and circular rolls by index gathering (-1 = black).
* `rotate`: ``Image.rotate(angle, BICUBIC)``: PIL's affine transform samples 4 x 4 taps with
  the cubic kernel a = -1 (not the a = -0.5 of its resize, nor grid_sample's a = -0.75),
  clamps taps to the image edge, fills black where the source point leaves the image and
  truncates to 8 bits.

Float64 arithmetic keeps every sum of 8-bit values and fixed-point weights exact.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

FIXED_POINT_BITS = 22  # PIL's PRECISION_BITS for 8-bit images (32 - 8 - 2)


def short_side_sizes(sizes: torch.Tensor, short_side: int) -> torch.Tensor:
    """(B, 2) sizes (h, w) after resizing the short side to ``short_side``; the long side is
    ``int(short_side * long / short)`` as torchvision computes it."""
    h, w = sizes[:, 0].double(), sizes[:, 1].double()
    long_h = torch.floor(short_side * h / w).long()  # h is the long side (w <= h)
    long_w = torch.floor(short_side * w / h).long()
    short = torch.full_like(sizes[:, 0], short_side)
    return torch.where((sizes[:, 1] <= sizes[:, 0])[:, None], torch.stack([long_h, short], 1),
                       torch.stack([short, long_w], 1))


def centre_crop_start(length: torch.Tensor, crop: int) -> torch.Tensor:
    """First source index of torchvision's ``CenterCrop(crop)`` along an axis of ``length``:
    ``round((length - crop) / 2)`` (half to even), or minus the leading zero padding
    ``(crop - length) // 2`` when the axis is shorter than the crop."""
    cropped = torch.round((length - crop).double() / 2).long()
    return torch.where(length >= crop, cropped, -((crop - length) // 2))


def pil_bicubic(t: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Cubic convolution kernel of support [-2, 2] in PIL's operation order (a = -0.5 resizes)."""
    t = t.abs()
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = (((t - 5) * t + 8) * t - 4) * a
    return torch.where(t < 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


class Taps(NamedTuple):
    """A banded per-image resampling operator along one axis: output pixel i of image b is
    ``sum_k weight[b, i, k] * source[index[b, i, k]]``; index and weight are (B, n, K)."""

    index: torch.Tensor  # int64, inside the canvas
    weight: torch.Tensor  # float64 fixed-point integers (units of 2^-22), 0 for unused taps


def resize_weights(in_len: torch.Tensor, out_len: torch.Tensor, positions: torch.Tensor, in_max: int) -> Taps:
    """PIL's bicubic resize coefficients for output pixels ``positions`` (B, n) of an axis resized
    from ``in_len[b]`` to ``out_len[b]`` pixels (the source zero-padded to ``in_max``).

    As PIL computes them: the kernel widens by in/out when shrinking, is cut to the taps inside
    the image, normalised, then rounded half away from zero to 22-bit fixed point. Positions
    outside [0, out_len) get zero weights (black padding). Returns (B, n, K) `Taps`.
    """
    scale = (in_len.double() / out_len.double())[:, None]  # (B, 1) source px per output px
    filterscale = scale.clamp(min=1.0)
    support = 2.0 * filterscale
    centre = (positions.double() + 0.5) * scale  # (B, n)
    first = torch.floor(centre - support + 0.5).clamp(min=0)
    stop = torch.minimum(torch.floor(centre + support + 0.5), in_len.double()[:, None])
    taps = 2 * int(math.ceil(float(support.max()))) + 1
    idx = first[..., None] + torch.arange(taps, device=positions.device, dtype=torch.float64)  # (B, n, K)
    kernel = pil_bicubic(((idx - centre[..., None]) + 0.5) * (1.0 / filterscale)[..., None])
    kernel = torch.where(idx < stop[..., None], kernel, torch.zeros_like(kernel))
    total = torch.zeros_like(centre)
    for k in range(taps):  # PIL sums the taps in order; kept for bit-exact normalisation
        total = total + kernel[..., k]
    kernel = torch.where(total[..., None] != 0, kernel / total[..., None], kernel)
    fixed = torch.trunc(kernel * float(1 << FIXED_POINT_BITS) + torch.where(kernel < 0, -0.5, 0.5))
    inside = (positions >= 0) & (positions < out_len[:, None])
    fixed = torch.where(inside[..., None] & (idx < stop[..., None]), fixed, torch.zeros_like(fixed))
    return Taps(idx.long().clamp(max=in_max - 1), fixed)


def _to_8bit(acc: torch.Tensor) -> torch.Tensor:
    """PIL's ``clip8``: fixed-point sums -> 8-bit values, rounding half up, clamped to [0, 255]."""
    return torch.floor((acc + float(1 << (FIXED_POINT_BITS - 1))) / float(1 << FIXED_POINT_BITS)).clamp_(0, 255)


def _apply(values: torch.Tensor, taps: Taps, dim: int) -> torch.Tensor:
    """Fixed-point sums of ``values`` (B, C, H, W) along ``dim`` (2 or 3) with ``taps`` (B, n, K)."""
    b, c = values.shape[:2]
    out_shape = list(values.shape)
    out_shape[dim] = taps.index.shape[1]
    view = (b, 1, -1, 1) if dim == 2 else (b, 1, 1, -1)
    acc = values.new_zeros(out_shape)
    for k in range(taps.index.shape[2]):  # exact integer sums: the order does not matter
        index = taps.index[..., k].reshape(view).expand(out_shape)
        acc += values.gather(dim, index) * taps.weight[..., k].reshape(view)
    return acc


def resample(pixels: torch.Tensor, rows: Taps, cols: Taps) -> torch.Tensor:
    """PIL's two-pass resize with `resize_weights` operators: columns first, 8-bit rounding, then rows.

    pixels (B, C, H, W) in [0, 1] on the 1/255 grid, rows (B, n, K) taps into H, cols (B, m, K')
    taps into W -> (B, C, n, m) float32 on the 1/255 grid. Only the source rows some row tap reads
    take part in the column pass.
    """
    used = rows.index[rows.weight != 0]
    lo, hi = (int(used.min()), int(used.max()) + 1) if used.numel() else (0, 1)
    values = torch.round(pixels[:, :, lo:hi].double() * 255)
    wide = _to_8bit(_apply(values, cols, 3))  # (B, C, h, m)
    rows = Taps((rows.index - lo).clamp(0, hi - lo - 1), rows.weight)
    return (_to_8bit(_apply(wide, rows, 2))).float() / 255


def select(pixels: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Integer crop by index: out[b, :, i, j] = pixels[b, :, rows[b, i], cols[b, j]], zero where
    an index is -1. pixels (B, C, H, W), rows (B, n), cols (B, m) int64 -> (B, C, n, m)."""
    b, c, h, w = pixels.shape
    padded = F.pad(pixels, (0, 1, 0, 1))  # index h / w reads the zero row / column
    rows = torch.where(rows < 0, h, rows)
    cols = torch.where(cols < 0, w, cols)
    out = padded.gather(2, rows[:, None, :, None].expand(b, c, rows.shape[1], w + 1))
    return out.gather(3, cols[:, None, None, :].expand(b, c, rows.shape[1], cols.shape[1]))


def crop(pixels: torch.Tensor, sizes: torch.Tensor, top: torch.Tensor, left: torch.Tensor, out_size: int
         ) -> torch.Tensor:
    """``out_size`` square windows from (top_b, left_b) (B,) of images of ``sizes`` (B, 2), black
    outside each image: (B, C, S, S)."""
    idx = torch.arange(out_size, device=pixels.device)
    axes = []
    for start, length in ((top, sizes[:, 0]), (left, sizes[:, 1])):
        pos = start[:, None] + idx
        axes.append(torch.where((pos >= 0) & (pos < length[:, None]), pos, -1))
    return select(pixels, *axes)


def roll(pixels: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Per-image circular shift, as ``torch.roll(x[b], (dy_b, dx_b), (-2, -1))``: (B, C, H, W),
    shifts (B, 2) int64 -> (B, C, H, W)."""
    h, w = pixels.shape[-2:]
    ar_h = torch.arange(h, device=pixels.device)
    ar_w = torch.arange(w, device=pixels.device)
    return select(pixels, (ar_h - shifts[:, :1]) % h, (ar_w - shifts[:, 1:]) % w)


def _cubic_a1(v1: torch.Tensor, v2: torch.Tensor, v3: torch.Tensor, v4: torch.Tensor, d: torch.Tensor
              ) -> torch.Tensor:
    """PIL's transform interpolation (cubic convolution, a = -1) between v2 and v3 at offset d."""
    p2 = -v1 + v3
    p3 = 2 * (v1 - v2) + v3 - v4
    p4 = -v1 + v2 - v3 + v4
    return v2 + d * (p2 + d * (p3 + d * p4))


def rotate(pixels: torch.Tensor, sizes: torch.Tensor, angle: float, top: torch.Tensor, left: torch.Tensor,
           out_size: int) -> torch.Tensor:
    """``Image.rotate(angle, BICUBIC)`` of each image (counter-clockwise about its centre, no
    expand, black fill), returning the ``out_size`` square whose top-left corner is (top_b,
    left_b) (B,) in image coordinates. pixels (B, C, H, W) canvas on the 1/255 grid, sizes (B, 2)
    -> (B, C, S, S) float32 on the 1/255 grid, equal to PIL's output (float64 throughout)."""
    b, c, height, width = pixels.shape
    theta = -math.radians(angle % 360.0)
    m0, m1 = round(math.cos(theta), 15), round(math.sin(theta), 15)  # PIL's inverse matrix
    m3, m4 = round(-math.sin(theta), 15), round(math.cos(theta), 15)
    h, w = sizes[:, 0].double()[:, None, None], sizes[:, 1].double()[:, None, None]
    cx, cy = w / 2, h / 2
    m2 = (m0 * -cx + m1 * -cy) + cx
    m5 = (m3 * -cx + m4 * -cy) + cy
    steps = torch.arange(out_size, device=pixels.device, dtype=torch.float64)
    yin = (top.double()[:, None, None] + steps[None, :, None]) + 0.5  # (B, S, 1) output pixel centres
    xin = (left.double()[:, None, None] + steps[None, None, :]) + 0.5  # (B, 1, S)
    src_x = m0 * xin + m1 * yin + m2  # (B, S, S) source point of each output pixel
    src_y = m3 * xin + m4 * yin + m5
    inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
    fx, fy = torch.floor(src_x - 0.5), torch.floor(src_y - 0.5)
    dx, dy = (src_x - 0.5) - fx, (src_y - 0.5) - fy
    last_x, last_y = sizes[:, 1].long()[:, None, None] - 1, sizes[:, 0].long()[:, None, None] - 1
    xs = [torch.minimum((fx.long() + k).clamp(min=0), last_x) for k in (-1, 0, 1, 2)]  # taps clamped to the edge
    ys = [torch.minimum((fy.long() + k).clamp(min=0), last_y) for k in (-1, 0, 1, 2)]
    flat = torch.round(pixels.double() * 255).flatten(2)  # (B, C, H W)

    def tap(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return flat.gather(2, (y * width + x).flatten(1)[:, None].expand(b, c, -1)).view(b, c, out_size, out_size)

    dx, dy = dx[:, None], dy[:, None]
    row_values = [_cubic_a1(*(tap(y, x) for x in xs), dx) for y in ys]
    value = _cubic_a1(*row_values, dy)
    value = torch.trunc(value.clamp(0, 255)) * inside[:, None]
    return value.float() / 255
