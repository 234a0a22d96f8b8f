"""The geometry of the invariance views: images of different sizes on one zero-padded canvas
(`ImageBatch`, `pad_images`, `group_images`) and every view of a batch made on its device (`Views`:
translation, rotations, scale, shifted crops, circular shifts), PIL-exact through `stm_probe.core.views`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch

from ...data import DEFAULT_CROP_PCT, Batch, resize_size
from ...errors import UsageError
from ..views import centre_crop_start, crop, resample, resize_weights, roll, rotate, select, short_side_sizes
from .kinds import TRANSLATION_MODES


# --- image batches ------------------------------------------------------------------------------
@dataclass
class ImageBatch:
    """Images of different sizes on one zero-padded canvas.

    pixels:  (B, 3, H, W) float in [0, 1]; image b fills ``pixels[b, :, :h_b, :w_b]``, zeros elsewhere
    sizes:   (B, 2) int64 (h_b, w_b)
    labels:  (B,) int64, -1 unknown; indices: (B,) int64 positions in the loader's source
    """

    pixels: torch.Tensor
    sizes: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor


def pad_images(images: Sequence[torch.Tensor], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Put (3, h_b, w_b) images top-left on one zero canvas (B, 3, max h, max w); returns (canvas, sizes)."""
    sizes = torch.tensor([tuple(img.shape[-2:]) for img in images], dtype=torch.int64)
    height, width = (int(v) for v in sizes.max(0).values)
    canvas = torch.zeros(len(images), 3, height, width, device=device)
    for b, img in enumerate(images):  # collation: one copy per image
        canvas[b, :, : img.shape[-2], : img.shape[-1]] = img.to(device, non_blocking=True)
    return canvas, sizes.to(device)


def group_images(batches: Iterable[Batch], batch_size: int, device: torch.device) -> Iterator[ImageBatch]:
    """Group single-image batches (loaded with ``ShortSideResize``, ``batch_size=1``) into
    `ImageBatch`es of up to ``batch_size`` images on ``device``."""
    pending: list[Batch] = []

    def flush() -> ImageBatch:
        pixels, sizes = pad_images([img for b in pending for img in b.images], device)
        labels = torch.cat([b.labels for b in pending]).to(device)
        indices = torch.cat([b.indices for b in pending]).to(device)
        return ImageBatch(pixels, sizes, labels, indices)

    count = 0
    for batch in batches:
        pending.append(batch)
        count += len(batch.paths)
        if count >= batch_size:
            yield flush()
            pending, count = [], 0
    if pending:
        yield flush()


# --- views ---------------------------------------------------------------------------------------
class Views:
    """Every view of one `ImageBatch`, made on its device.

    ``resized`` is each image with its short side at ``resize_size(S)`` (B, 3, H, W canvas,
    sizes ``resized_sizes`` (B, 2)) and ``standard`` its centre ``S x S`` crop (B, 3, S, S): the
    reference views, equal to PIL's resize and torchvision's centre crop of the base.
    """

    def __init__(self, batch: ImageBatch, input_size: int, crop_pct: float = DEFAULT_CROP_PCT) -> None:
        self.batch = batch
        self.size = input_size
        self.resize_side = resize_size(input_size, crop_pct)
        base, base_sizes = batch.pixels, batch.sizes
        self.resized_sizes = short_side_sizes(base_sizes, self.resize_side)
        if torch.equal(self.resized_sizes, base_sizes):
            self.resized = base  # PIL's resize to the same size is the identity
        else:
            self.resized = self._resize_crop(self.resized_sizes, torch.zeros_like(base_sizes),
                                             tuple(int(v) for v in self.resized_sizes.max(0).values))
        self.top = centre_crop_start(self.resized_sizes[:, 0], input_size)
        self.left = centre_crop_start(self.resized_sizes[:, 1], input_size)
        self.standard = crop(self.resized, self.resized_sizes, self.top, self.left, input_size)

    def _resize_crop(self, new_sizes: torch.Tensor, start: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
        """Resize each base image to ``new_sizes`` (B, 2) and crop ``out_hw`` from ``start`` (B, 2)
        (negative = zero padding first), in one PIL-exact resampling of the base."""
        base, base_sizes = self.batch.pixels, self.batch.sizes
        device = base.device
        pos_y = start[:, :1] + torch.arange(out_hw[0], device=device)
        pos_x = start[:, 1:] + torch.arange(out_hw[1], device=device)
        rows = resize_weights(base_sizes[:, 0], new_sizes[:, 0], pos_y, base.shape[-2])
        cols = resize_weights(base_sizes[:, 1], new_sizes[:, 1], pos_x, base.shape[-1])
        return resample(base, rows, cols)

    def _window(self, top: torch.Tensor, left: torch.Tensor, valid_y: tuple, valid_x: tuple) -> torch.Tensor:
        """``S x S`` window of ``resized`` from (top, left) (B,), black outside the [lo, hi)
        intervals (B,) of each axis."""
        idx = torch.arange(self.size, device=top.device)
        axes = []
        for start, (lo, hi) in ((top, valid_y), (left, valid_x)):
            pos = start[:, None] + idx
            axes.append(torch.where((pos >= lo[:, None]) & (pos < hi[:, None]), pos, -1))
        return select(self.resized, *axes)

    def translation(self, shift: int, directions: torch.Tensor, mode: str = "pure") -> torch.Tensor:
        """The standard crop window moved by ``shift`` px along each image's direction (B, 2) of
        (dy, dx) in {-1, 0, 1}: (B, 3, S, S).

        pure: black where the window leaves the image, so content moves by exactly ``shift``.
        official: the original script's crop: the moved window clipped to the image and zero-padded
        back to S with ``(S - n) // 2`` before, which re-centres a clipped crop (content then moves
        by ``(c + shift) / 2`` where c is the centre-crop margin: 8 + s/2 px beyond 16 px on a
        256 px side at S = 224).
        """
        if mode not in TRANSLATION_MODES:
            raise UsageError(f"unknown translation mode {mode!r}: choose from {', '.join(TRANSLATION_MODES)}")
        offset = directions * int(shift)
        starts, valid = [], []
        for axis, origin in ((0, self.top), (1, self.left)):
            length = self.resized_sizes[:, axis]
            start = origin + offset[:, axis]
            lo, hi = start.clamp(min=0), torch.minimum(start + self.size, length)
            if mode == "official":
                start = lo - (self.size - (hi - lo).clamp(min=0)) // 2
            starts.append(start)
            valid.append((lo, hi))
        return self._window(starts[0], starts[1], valid[0], valid[1])

    def pre_rotation(self, angle: float) -> torch.Tensor:
        """Rotate the resized image about its centre, then take the centre crop: (B, 3, S, S)."""
        return rotate(self.resized, self.resized_sizes, angle, self.top, self.left, self.size)

    def post_rotation(self, angle: float) -> torch.Tensor:
        """Rotate the standard view about its centre (corners black): (B, 3, S, S)."""
        b = self.standard.shape[0]
        zeros = torch.zeros(b, dtype=torch.int64, device=self.standard.device)
        sizes = torch.full((b, 2), self.size, dtype=torch.int64, device=self.standard.device)
        return rotate(self.standard, sizes, angle, zeros, zeros, self.size)

    def scale(self, ratio: float) -> torch.Tensor:
        """Short side to ``int(S / ratio)``, centre crop ``S`` (zero-padded when smaller), resampled
        from the base image in one step: (B, 3, S, S)."""
        new_sizes = short_side_sizes(self.batch.sizes, int(self.size / ratio))
        start = torch.stack([centre_crop_start(new_sizes[:, 0], self.size),
                             centre_crop_start(new_sizes[:, 1], self.size)], 1)
        return self._resize_crop(new_sizes, start, (self.size, self.size))

    def shift_crop(self, offsets: torch.Tensor) -> torch.Tensor:
        """``S x S`` crop at ``offsets`` (B, 2) (dy, dx) px from the corner of the centre ``R x R``
        square (R = ``resize_size(S)``), black outside the square: (B, 3, S, S)."""
        starts, valid = [], []
        for axis in (0, 1):
            origin = centre_crop_start(self.resized_sizes[:, axis], self.resize_side)
            starts.append(origin + offsets[:, axis])
            valid.append((origin, origin + self.resize_side))
        return self._window(starts[0], starts[1], valid[0], valid[1])

    def circular_shift(self, shifts: torch.Tensor) -> torch.Tensor:
        """The standard view rolled by (dy, dx) per image, shifts (B, 2): (B, 3, S, S)."""
        return roll(self.standard, shifts)
