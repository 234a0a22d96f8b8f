"""Invariance of predictions to translation, rotation and scale (PROTOCOLS.md section 5), plus
circular-shift consistency and per-stage shift equivariance.

Each image is decoded once into a *base* tensor (short side ``resize_size(S)``, or up to its
native size when the scale sweep zooms in, see `base_short_sides`); a batch of bases is a
zero-padded canvas with the per-image sizes. Every view is made from that canvas on the analysis
device by three batched primitives:

* `resample`: a per-image separable linear map, rows (B, n, H) and columns (B, m, W), applied as
  two batched matmuls. `resize_weights` builds them with PIL's antialiased bicubic filter and
  folds in the crop and zero-padding, so "resize the short side to L, centre crop S" is one call.
* `select`: integer crops, shifts and circular rolls by index gathering (-1 = black).
* `rotate`: bicubic `grid_sample` about the image centre, zero fill.

Views follow the paper's PIL pipeline: standard = short side ``int(S / 0.875)`` + centre crop S;
translation, pre-rotation and scale are made from the resized uncropped image; post-rotation
rotates the standard view. Random choices (translation and equivariance directions, circular
shifts) are drawn from the seed per image position and level, so every model sees the same views.
Metrics are per image; `summarise` gives the mean and a bootstrap 95% CI over images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .data import DEFAULT_CROP_PCT, Batch, resize_size
from .models.features import Normalized, num_stages
from .stats import bootstrap_ci

KINDS = ("translation", "pre-rotation", "post-rotation", "scale", "circular-shift", "equivariance")
UNITS = {"translation": "px", "pre-rotation": "degrees", "post-rotation": "degrees", "scale": "crop ratio",
         "circular-shift": "px (max shift)", "equivariance": "px"}
TRANSLATION_MODES = ("official", "pure")
#: the 8 jitter directions (dy, dx): down, right, up, left and the four diagonals
DIRECTIONS = torch.tensor([(1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, 1), (-1, -1), (1, -1)])
PREDICTION_METRICS = ("top1", "top5", "consistency", "soft_ce", "kl")
_STREAMS = {"translation": 0, "equivariance": 1, "circular-shift": 2}  # independent seeded draws per kind


def default_levels(kind: str, input_size: int = 224) -> list[float]:
    """The paper's grids: jitter 0..64 px step 4, rotation 0..90 deg step 5, crop ratio 0.2..1.95
    step 0.125; beyond the paper, circular shifts of at most 4..32 px and equivariance shifts
    4..64 px, keeping those below ``input_size`` (a full-size circular shift is the identity)."""
    grids = {
        "translation": [float(s) for s in range(0, 65, 4)],
        "pre-rotation": [float(a) for a in range(0, 91, 5)],
        "post-rotation": [float(a) for a in range(0, 91, 5)],
        "scale": [r / 1000 for r in range(200, 1951, 125)],  # the original's floats (200/1000, ...)
        "circular-shift": [4.0, 8.0, 16.0, 32.0],
        "equivariance": [4.0, 8.0, 16.0, 32.0, 64.0],
    }
    if kind in ("circular-shift", "equivariance"):
        return [v for v in grids[kind] if v < input_size]
    return grids[kind]


# --- seeded draws (identical for every model) ---------------------------------------------------
def _rng(seed: int, kind: str) -> np.random.Generator:
    return np.random.default_rng([seed % 2**32, _STREAMS[kind]])


def draw_directions(seed: int, num_images: int, num_levels: int, kind: str = "translation") -> torch.Tensor:
    """Direction index in [0, 8) per image position and level, (N, L) int64; see `DIRECTIONS`."""
    return torch.from_numpy(_rng(seed, kind).integers(0, 8, size=(num_images, num_levels)))


def draw_circular_shifts(seed: int, num_images: int, levels: Sequence[float]) -> torch.Tensor:
    """Two circular shifts (dy, dx) per image position and level, uniform integers in
    [-level, level]: (N, L, 2, 2) int64."""
    rng = _rng(seed, "circular-shift")
    draws = [rng.integers(-int(lv), int(lv) + 1, size=(num_images, 2, 2)) for lv in levels]
    return torch.from_numpy(np.stack(draws, axis=1)) if draws else torch.zeros(num_images, 0, 2, 2, dtype=torch.int64)


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


# --- geometry -----------------------------------------------------------------------------------
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


def _bicubic(t: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """PIL's bicubic kernel (a = -0.5), support [-2, 2]."""
    t = t.abs()
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = (((t - 5) * t + 8) * t - 4) * a
    return torch.where(t < 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def resize_weights(in_len: torch.Tensor, out_len: torch.Tensor, positions: torch.Tensor, in_max: int) -> torch.Tensor:
    """Weights (B, n, in_max) mapping an axis of ``in_len`` pixels (zero-padded to ``in_max``) to
    output ``positions`` (B, n) of its bicubic resize to ``out_len`` pixels, as PIL computes them
    (antialiased: the kernel widens by in/out when shrinking; normalised over the taps inside the
    image). Rows whose position lies outside [0, out_len) are zero (black padding). Only the taps
    under each kernel are evaluated, then scattered."""
    scale = (in_len.double() / out_len.double())[:, None, None]  # (B, 1, 1) source px per output px
    support = scale.clamp(min=1.0)  # kernel stretch; the kernel spans +-2 support source px
    centre = (positions.double()[..., None] + 0.5) * scale  # (B, n, 1)
    taps = int(math.ceil(4 * float(support.max()))) + 2
    idx = torch.floor(centre - 2 * support).long() + torch.arange(taps, device=positions.device)  # (B, n, K)
    weights = _bicubic((idx + 0.5 - centre) / support) * ((idx >= 0) & (idx < in_len[:, None, None]))
    weights = weights / weights.sum(-1, keepdim=True).clamp(min=1e-12)
    inside = (positions >= 0) & (positions < out_len[:, None])
    weights = (weights * inside[..., None]).float()
    dense = torch.zeros(*positions.shape, in_max, device=positions.device)
    return dense.scatter_add_(2, idx.clamp(0, in_max - 1), weights)


def _used(op: torch.Tensor) -> slice:
    """The source indices any row of ``op`` (B, n, L) reads: a slice of [0, L)."""
    idx = (op != 0).any(dim=1).any(dim=0).nonzero()
    return slice(int(idx[0]), int(idx[-1]) + 1) if idx.numel() else slice(0, 0)


def resample(pixels: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Separable per-image linear map: out[b] = rows[b] @ pixels[b] @ cols[b]^T per channel.

    pixels (B, C, H, W), rows (B, n, H), cols (B, m, W) -> (B, C, n, m), clamped to [0, 1]. Only
    the source rows and columns some weight reads take part, contracted in the cheaper order.
    """
    ys, xs = _used(rows), _used(cols)
    pixels, rows, cols = pixels[..., ys, xs], rows[..., ys][:, None], cols[..., xs].transpose(1, 2)[:, None]
    (h, w), n, m = pixels.shape[-2:], rows.shape[-2], cols.shape[-1]
    if h * w * m + n * h * m <= n * h * w + n * w * m:
        out = torch.matmul(rows, torch.matmul(pixels, cols))
    else:
        out = torch.matmul(torch.matmul(rows, pixels), cols)
    return out.clamp_(0.0, 1.0)


def select(pixels: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Integer crop by index: out[b, :, i, j] = pixels[b, :, rows[b, i], cols[b, j]], zero where
    an index is -1. pixels (B, C, H, W), rows (B, n), cols (B, m) int64 -> (B, C, n, m)."""
    b, c, h, w = pixels.shape
    padded = F.pad(pixels, (0, 1, 0, 1))  # index h / w reads the zero row / column
    rows = torch.where(rows < 0, h, rows)
    cols = torch.where(cols < 0, w, cols)
    out = padded.gather(2, rows[:, None, :, None].expand(b, c, rows.shape[1], w + 1))
    return out.gather(3, cols[:, None, None, :].expand(b, c, rows.shape[1], cols.shape[1]))


def roll(pixels: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Per-image circular shift, as ``torch.roll(x[b], (dy_b, dx_b), (-2, -1))``: (B, C, H, W),
    shifts (B, 2) int64 -> (B, C, H, W)."""
    h, w = pixels.shape[-2:]
    ar_h = torch.arange(h, device=pixels.device)
    ar_w = torch.arange(w, device=pixels.device)
    return select(pixels, (ar_h - shifts[:, :1]) % h, (ar_w - shifts[:, 1:]) % w)


def rotate(pixels: torch.Tensor, sizes: torch.Tensor, angle: float, top: torch.Tensor, left: torch.Tensor,
           out_size: int) -> torch.Tensor:
    """Rotate each image ``angle`` degrees counter-clockwise about its centre (bicubic, zero fill,
    no expand, as PIL's ``rotate``) and return the ``out_size`` square whose top-left corner is
    (top_b, left_b) in image coordinates. pixels (B, 3, H, W) canvas, sizes (B, 2) -> (B, 3, S, S)."""
    height, width = pixels.shape[-2:]
    steps = torch.arange(out_size, device=pixels.device, dtype=torch.float64) + 0.5
    y = top.double()[:, None, None] + steps[None, :, None]  # (B, S, 1) pixel-centre coordinates
    x = left.double()[:, None, None] + steps[None, None, :]  # (B, 1, S)
    cy, cx = (sizes.double() / 2).unbind(1)
    u, v = x - cx[:, None, None], y - cy[:, None, None]
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    src_x = cos * u - sin * v + cx[:, None, None]  # inverse map of a counter-clockwise rotation (y down)
    src_y = sin * u + cos * v + cy[:, None, None]
    grid = torch.stack([2 * src_x / width - 1, 2 * src_y / height - 1], dim=-1).float()
    out = F.grid_sample(pixels, grid, mode="bicubic", padding_mode="zeros", align_corners=False)
    return out.clamp_(0.0, 1.0)


# --- views ---------------------------------------------------------------------------------------
def base_short_sides(input_size: int, scale_levels: Sequence[float] = (), crop_pct: float = DEFAULT_CROP_PCT
                     ) -> tuple[int, int]:
    """(short side, maximum short side) of the decoded base images: ``resize_size(S)``, raised to
    ``int(S / r)`` for the smallest crop ratio r of a scale sweep that zooms in, so zoomed views
    are resampled from up to native resolution as the paper's pipeline does."""
    short = resize_size(input_size, crop_pct)
    zoom = [int(input_size / r) for r in scale_levels]
    return short, max([short, *zoom])


class Views:
    """Every view of one `ImageBatch`, made on its device.

    ``resized`` is the image with its short side at ``resize_size(S)`` (B, 3, H, W canvas) and
    ``standard`` its centre ``S x S`` crop (B, 3, S, S): the reference views.
    """

    def __init__(self, batch: ImageBatch, input_size: int, crop_pct: float = DEFAULT_CROP_PCT) -> None:
        self.batch = batch
        self.size = input_size
        base, base_sizes = batch.pixels, batch.sizes
        self.resized_sizes = short_side_sizes(base_sizes, resize_size(input_size, crop_pct))
        if torch.equal(self.resized_sizes, base_sizes):
            self.resized = base
        else:
            self.resized = self._resize_crop(self.resized_sizes, torch.zeros_like(base_sizes),
                                             tuple(int(v) for v in self.resized_sizes.max(0).values))
        self.top = centre_crop_start(self.resized_sizes[:, 0], input_size)
        self.left = centre_crop_start(self.resized_sizes[:, 1], input_size)
        self.standard = self._crop_resized(self.top, self.left)

    def _resize_crop(self, new_sizes: torch.Tensor, start: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
        """Resize each base image to ``new_sizes`` (B, 2) and crop ``out_hw`` from ``start`` (B, 2)
        (negative = zero padding first), in one separable resampling of the base."""
        base, base_sizes = self.batch.pixels, self.batch.sizes
        device = base.device
        pos_y = start[:, :1] + torch.arange(out_hw[0], device=device)
        pos_x = start[:, 1:] + torch.arange(out_hw[1], device=device)
        rows = resize_weights(base_sizes[:, 0], new_sizes[:, 0], pos_y, base.shape[-2])
        cols = resize_weights(base_sizes[:, 1], new_sizes[:, 1], pos_x, base.shape[-1])
        return resample(base, rows, cols)

    def _crop_resized(self, top: torch.Tensor, left: torch.Tensor, valid_y: tuple | None = None,
                      valid_x: tuple | None = None) -> torch.Tensor:
        """``S x S`` window of the resized image from (top, left) (B,); black outside the image
        and outside the optional [lo, hi) intervals (B,) per axis."""
        idx = torch.arange(self.size, device=top.device)
        axes = []
        sizes = self.resized_sizes
        for start, length, valid in ((top, sizes[:, 0], valid_y), (left, sizes[:, 1], valid_x)):
            pos = start[:, None] + idx
            keep = (pos >= 0) & (pos < length[:, None])
            if valid is not None:
                keep &= (pos >= valid[0][:, None]) & (pos < valid[1][:, None])
            axes.append(torch.where(keep, pos, -1))
        return select(self.resized, *axes)

    def translation(self, shift: int, directions: torch.Tensor, mode: str = "official") -> torch.Tensor:
        """Crop ``S`` moved by ``shift`` px along each image's direction (B, 2) of (dy, dx) in {-1, 0, 1}.

        official: the paper's crop: window centred at (h // 2 + dy s, w // 2 + dx s), clipped to
        the image and zero-padded back to S on both sides ((S - n) // 2 before), which re-centres
        a truncated crop. pure: the standard crop window moved by exactly (dy s, dx s); where it
        leaves the image the view is black, so content moves by exactly s.
        """
        offset = directions * int(shift)
        if mode == "pure":
            return self._crop_resized(self.top + offset[:, 0], self.left + offset[:, 1])
        starts, valid = [], []
        for axis in (0, 1):
            length = self.resized_sizes[:, axis]
            start = length // 2 + offset[:, axis] - self.size // 2
            lo, hi = start.clamp(min=0), (start + self.size).clamp(max=length)
            kept = (hi - lo).clamp(min=0)
            starts.append(lo - (self.size - kept) // 2)
            valid.append((lo, hi))
        return self._crop_resized(starts[0], starts[1], valid[0], valid[1])

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

    def circular_shift(self, shifts: torch.Tensor) -> torch.Tensor:
        """The standard view rolled by (dy, dx) per image, shifts (B, 2): (B, 3, S, S)."""
        return roll(self.standard, shifts)


# --- metrics -------------------------------------------------------------------------------------
def prediction_metrics(reference: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image metrics of variant ``logits`` (B, K) against ``reference`` logits (B, K).

    top1/top5: 100 if the label is in the top 1/5 (NaN where the label is -1); consistency: 100
    if the top-1 equals the reference's; soft_ce: -sum softmax(ref) log_softmax(var) (nats);
    kl: KL(softmax(ref) || softmax(var)) (nats). Values (B,) float64 on the CPU.
    """
    reference, logits = reference.double(), logits.double()
    ref_logp, logp = reference.log_softmax(-1), logits.log_softmax(-1)
    ref_p = ref_logp.exp()
    soft_ce = -(ref_p * logp).sum(-1)
    kl = (ref_p * (ref_logp - logp)).sum(-1)
    consistency = (logits.argmax(-1) == reference.argmax(-1)).double() * 100
    topk = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
    hits = topk == labels[:, None]
    known = labels >= 0
    nan = torch.full_like(soft_ce, float("nan"))
    top1 = torch.where(known, hits[:, 0].double() * 100, nan)
    top5 = torch.where(known, hits.any(-1).double() * 100, nan)
    values = {"top1": top1, "top5": top5, "consistency": consistency, "soft_ce": soft_ce, "kl": kl}
    return {k: v.cpu() for k, v in values.items()}


def equivariance_errors(shifted: Sequence[torch.Tensor], reference: Sequence[torch.Tensor], shifts: torch.Tensor,
                        strides: Sequence[int]) -> list[torch.Tensor]:
    """Relative error ||f(roll(x, s)) - roll(f(x), s / r)|| / ||f(x)|| per image, for each stage.

    shifted / reference: stage maps (B, C, h, w) of the rolled and the plain input; shifts (B, 2)
    in input px, multiples of every stage's stride r (px per map cell). Returns one (B,) float64
    CPU tensor per stage; 0 = perfectly equivariant.
    """
    errors = []
    for out, ref, stride in zip(shifted, reference, strides):
        if bool((shifts % stride).any()):
            raise ValueError(f"shifts {shifts.tolist()} are not multiples of the stage stride {stride}")
        diff = (out - roll(ref, shifts // stride)).double().flatten(1).norm(dim=1)
        errors.append((diff / ref.double().flatten(1).norm(dim=1).clamp(min=1e-12)).cpu())
    return errors


def stage_strides(stage_maps: Sequence[torch.Tensor], input_size: int, nominal: Sequence[int] = ()) -> list[int]:
    """Input px per map cell of each stage map (B, C, h, w) of an ``input_size`` square input; 0
    (not measured) where the map does not tile the input evenly or, given the model's ``nominal``
    strides (feature_info reductions), where the tiling is not one of them (e.g. a padded map)."""
    strides = []
    for feat in stage_maps:
        h, w = feat.shape[-2:]
        stride = input_size // h
        even = h * stride == input_size and w * stride == input_size
        strides.append(stride if even and (not nominal or stride in nominal) else 0)
    return strides


# --- the sweep -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepPlan:
    """What to measure: kinds with their levels, the input size and the seeded random draws.

    num_images: positions in the image source (the draws are indexed by ``Batch.indices``).
    """

    kinds: tuple[str, ...]
    levels: dict[str, tuple[float, ...]]
    input_size: int
    num_images: int
    seed: int = 0
    translation_mode: str = "official"
    crop_pct: float = DEFAULT_CROP_PCT
    draws: dict[str, torch.Tensor] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        n = self.num_images
        for kind in ("translation", "equivariance"):
            if kind in self.kinds:
                self.draws[kind] = DIRECTIONS[draw_directions(self.seed, n, len(self.levels[kind]), kind)]
        if "circular-shift" in self.kinds:
            self.draws["circular-shift"] = draw_circular_shifts(self.seed, n, self.levels["circular-shift"])

    def base_short_sides(self) -> tuple[int, int]:
        """(short side, maximum short side) to decode images to; see `base_short_sides`."""
        zoom = [r for r in self.levels.get("scale", ()) if r < self.crop_pct] if "scale" in self.kinds else []
        return base_short_sides(self.input_size, zoom, self.crop_pct)


@dataclass
class View:
    """One view of a batch: pixels (B, 3, S, S), compared with the standard view or, for
    circular shifts, with ``first_shift``; ``shifts`` (B, 2) px for equivariance."""

    kind: str
    level: float
    pixels: torch.Tensor
    shifts: torch.Tensor | None = None
    first_shift: torch.Tensor | None = None  # circular-shift: the first of the two shifted views


def iter_views(plan: SweepPlan, views: Views) -> Iterator[View]:
    """Every (kind, level) view of one batch, in plan order, made on the batch's device."""
    index = views.batch.indices.cpu()
    device = views.standard.device
    for kind in plan.kinds:
        for j, level in enumerate(plan.levels[kind]):
            if kind == "translation":
                direction = plan.draws[kind][index, j].to(device)
                yield View(kind, level, views.translation(int(level), direction, plan.translation_mode))
            elif kind == "pre-rotation":
                yield View(kind, level, views.pre_rotation(level))
            elif kind == "post-rotation":
                yield View(kind, level, views.post_rotation(level))
            elif kind == "scale":
                yield View(kind, level, views.scale(level))
            elif kind == "circular-shift":
                shifts = plan.draws[kind][index, j].to(device)  # (B, 2, 2)
                yield View(kind, level, views.circular_shift(shifts[:, 1]),
                           first_shift=views.circular_shift(shifts[:, 0]))
            elif kind == "equivariance":
                shifts = plan.draws[kind][index, j].to(device) * int(level)
                yield View(kind, level, views.circular_shift(shifts), shifts=shifts)


@dataclass
class SweepResult:
    """Per-image values of one model: {(kind, level, metric): list of (B,) float64 arrays}."""

    values: dict[tuple[str, float, str], list[np.ndarray]] = field(default_factory=dict)
    num_images: int = 0

    def add(self, kind: str, level: float, metrics: dict[str, torch.Tensor]) -> None:
        for metric, value in metrics.items():
            self.values.setdefault((kind, level, metric), []).append(value.numpy())

    def stacked(self, key: tuple[str, float, str]) -> np.ndarray:
        return np.concatenate(self.values[key])


@torch.inference_mode()
def evaluate_batch(net: Normalized, plan: SweepPlan, views: Views, result: SweepResult) -> None:
    """Run ``net`` on every view of one batch and add the per-image metrics to ``result``.

    Equivariance is measured at the stages whose stride divides the shift (stage k metric
    ``rel_error_stage{k+1}``); other kinds compare logits with the standard view's (circular
    shift: with the first shifted view's).
    """
    labels = views.batch.labels
    standard_logits = net(views.standard)
    stages, strides, reference_maps = [], [], []
    if "equivariance" in plan.kinds:
        stages = list(range(num_stages(net.model)))
        reference_maps = net.stages(views.standard, stages)
        info = getattr(net.model, "feature_info", None) or []
        nominal = [entry["reduction"] for entry in info if isinstance(entry, dict) and "reduction" in entry]
        strides = stage_strides(reference_maps, plan.input_size, nominal)
    for view in iter_views(plan, views):
        if view.kind == "equivariance":
            measured = [k for k in stages if strides[k] > 0 and int(view.level) % strides[k] == 0]
            if measured:
                maps = net.stages(view.pixels, measured)
                errors = equivariance_errors(maps, [reference_maps[k] for k in measured], view.shifts,
                                             [strides[k] for k in measured])
                result.add(view.kind, view.level, {f"rel_error_stage{k + 1}": e for k, e in zip(measured, errors)})
            continue
        reference = net(view.first_shift) if view.first_shift is not None else standard_logits
        result.add(view.kind, view.level, prediction_metrics(reference, net(view.pixels), labels))
    result.num_images += int(labels.shape[0])


@torch.inference_mode()
def run_sweep(net: Normalized, plan: SweepPlan, batches: Iterable[ImageBatch], progress=None) -> SweepResult:
    """Evaluate ``net`` on every view of every batch; ``progress`` (tqdm) advances per image."""
    result = SweepResult()
    for batch in batches:
        evaluate_batch(net, plan, Views(batch, plan.input_size, plan.crop_pct), result)
        if progress is not None:
            progress.update(int(batch.labels.shape[0]))
    return result


def summarise(result: SweepResult, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> list[dict]:
    """Rows (kind, level, metric, value, ci_low, ci_high, n_images): the mean over images with a
    finite value (accuracy: labelled images only; none -> no row) and its bootstrap CI."""
    rows = []
    for (kind, lv, metric) in result.values:
        values = result.stacked((kind, lv, metric))
        values = values[np.isfinite(values)]
        if values.size == 0:
            continue
        low, high = bootstrap_ci(values, n_boot=n_boot, level=level, seed=seed)
        rows.append({"kind": kind, "level": lv, "metric": metric, "value": float(values.mean()),
                     "ci_low": low, "ci_high": high, "n_images": int(values.size)})
    return rows
