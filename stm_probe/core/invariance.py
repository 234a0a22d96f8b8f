"""Invariance of predictions to translation, rotation and scale (docs/protocols.md §5), plus
shift consistency, circular-shift consistency and per-stage shift equivariance.

A pure computation library: plan (`SweepPlan`), seeded draws, views (`Views`) and per-image
metrics (`measure_batch`); loading, summaries and output belong to the caller.

Each image is decoded once into a *base* tensor (see `SweepPlan.base_short_sides`); a batch of
bases is a zero-padded canvas with the per-image sizes (`ImageBatch`). Every view is made from it
on the analysis device with the batched primitives of `stm_probe.core.views`, which reproduce PIL's
8-bit resize and rotate bit for bit. So there is one pipeline for every view: the *resized*
image (short side ``resize_size(S)``, PIL bicubic) and the *standard* view (its centre ``S x S``
crop) are the same whatever kinds run, and equal torchvision's ``Resize + CenterCrop +
ToTensor`` output for every image the base keeps at native size (short side up to 1120 px at
S = 224; a larger one is reduced to that by the loader first).

Kinds (levels in `UNITS`):

* translation: the standard crop window moved by the level s along one of 8 directions per image.
  ``pure`` (default): content moves by exactly s px, black outside the image. ``official``: the
  original script's crop, clipped to the image and zero-padded back to S on both sides, which
  re-centres a clipped crop: once the window leaves the image (beyond 16 px on a 256 px side at
  S = 224) content moves by 8 + s/2 px instead of s. Both start from the centre-crop origin, so
  level 0 is the standard view.
* pre-rotation / post-rotation: ``Image.rotate(angle, BICUBIC)`` of the resized image before
  the centre crop / of the standard view (black corners).
* scale: short side ``int(S / ratio)`` resized from the base, centre crop S (zero-padded).
* shift-consistency (Zhang 2019, antialiased-cnns): two S crops of the centre ``R x R`` square
  (R = ``resize_size(S)``) at independent offsets uniform in [0, level)^2; top-1 agreement.
* circular-shift: top-1 agreement of two circular rolls of the standard view by up to +-level px.
* equivariance: per stage, ||f(roll(x, s)) - roll(f(x), s / r)|| / ||f(x)|| over the whole map
  and over its interior (cells at least the stage's margin away from the map borders and from
  the wrap seams, see `interior_mask`).

Random choices come from `stm_probe.core.seeds`: image i's draw at (kind, level) is a function
of ``stream_id(seed, "invariance", kind, level, repeat)`` and i, computed per batch from
``batch.indices``, so it does not depend on the number of images, the batch size, the other
levels or kinds, or the model order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from ..data import DEFAULT_CROP_PCT, Batch, resize_size
from ..errors import UsageError
from ..models.features import Normalized, num_stages
from .seeds import per_image_integers, stream_id
from .stats import summarise_values
from .views import centre_crop_start, crop, resample, resize_weights, roll, rotate, select, short_side_sizes

KINDS = ("translation", "pre-rotation", "post-rotation", "scale", "shift-consistency", "circular-shift",
         "equivariance")
UNITS = {"translation": "px", "pre-rotation": "degrees", "post-rotation": "degrees", "scale": "crop ratio",
         "shift-consistency": "px (offset range)", "circular-shift": "px (max shift)", "equivariance": "px"}
PIXEL_KINDS = ("translation", "shift-consistency", "circular-shift", "equivariance")  # whole-pixel levels
TRANSLATION_MODES = ("pure", "official")
#: the 8 jitter directions (dy, dx): down, right, up, left and the four diagonals
DIRECTIONS = torch.tensor([(1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, 1), (-1, -1), (1, -1)])
PREDICTION_METRICS = ("top1", "top5", "consistency", "soft_ce", "kl")
#: smallest crop ratio of the paper's scale grid: the base keeps up to int(S / 0.2) px of short side
_ZOOM_RATIO = 0.2
#: default equivariance margin in input px (see `interior_mask`)
DEFAULT_INTERIOR_MARGIN = 16
_MAX_STAGES = 16

#: how each per-image metric is summarised (`stm_probe.core.stats.summarise_values`): "rate" for 0/100
#: outcomes, "mean" for continuous values
METRIC_STATISTICS: dict[str, str] = {
    "top1": "rate", "top5": "rate", "consistency": "rate", "soft_ce": "mean", "kl": "mean",
    **{f"rel_error_stage{k}": "mean" for k in range(1, _MAX_STAGES + 1)},
    **{f"rel_error_interior_stage{k}": "mean" for k in range(1, _MAX_STAGES + 1)},
}


def default_levels(kind: str, input_size: int = 224, crop_pct: float = DEFAULT_CROP_PCT) -> list[float]:
    """The paper's grids: jitter 0..64 px step 4, rotation 0..90 deg step 5, crop ratio 0.2..1.95
    step 0.125; shift consistency: offsets up to ``resize_size(S) - S`` (32 at 224); circular
    shifts of at most 4..32 px and equivariance shifts 4..64 px below ``input_size``."""
    grids = {
        "translation": [float(s) for s in range(0, 65, 4)],
        "pre-rotation": [float(a) for a in range(0, 91, 5)],
        "post-rotation": [float(a) for a in range(0, 91, 5)],
        "scale": [r / 1000 for r in range(200, 1951, 125)],  # the original's floats (200/1000, ...)
        "shift-consistency": [float(resize_size(input_size, crop_pct) - input_size)],
        "circular-shift": [4.0, 8.0, 16.0, 32.0],
        "equivariance": [4.0, 8.0, 16.0, 32.0, 64.0],
    }
    if kind not in grids:
        raise UsageError(f"unknown invariance kind {kind!r}: choose from {', '.join(KINDS)}")
    if kind in ("circular-shift", "equivariance"):
        return [v for v in grids[kind] if v < input_size]
    return grids[kind]


# --- seeded draws (identical for every model) ---------------------------------------------------
def _stream(seed: int, kind: str, level: float, repeat: int) -> int:
    return stream_id(seed, "invariance", kind, float(level), int(repeat))


def draw_directions(seed: int, indices, kind: str, level: float, repeat: int = 0) -> torch.Tensor:
    """Direction of images ``indices`` (N,) at (kind, level): (N,) int64 in [0, 8), see `DIRECTIONS`."""
    draws = per_image_integers(_stream(seed, kind, level, repeat), indices, 0, 7)
    return torch.from_numpy(draws[:, 0])


def draw_circular_shifts(seed: int, indices, level: float, repeat: int = 0) -> torch.Tensor:
    """Two circular shifts (dy, dx) per image, uniform in [-level, level]: (N, 2, 2) int64, [:, 0]
    the first shift, [:, 1] the second."""
    span = int(level)
    draws = per_image_integers(_stream(seed, "circular-shift", level, repeat), indices, -span, span, draws=4)
    return torch.from_numpy(draws).view(-1, 2, 2)


def draw_crop_offsets(seed: int, indices, level: float, repeat: int = 0) -> torch.Tensor:
    """Two crop offsets (dy, dx) per image for shift consistency, uniform in [0, level) (as
    ``np.random.randint(level)``; level 0 = no offset): (N, 2, 2) int64, [:, 0] the first crop."""
    high = max(int(level), 1) - 1
    draws = per_image_integers(_stream(seed, "shift-consistency", level, repeat), indices, 0, high, draws=4)
    return torch.from_numpy(draws).view(-1, 2, 2)


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
def base_short_sides(input_size: int, scale_levels: Sequence[float] = (), crop_pct: float = DEFAULT_CROP_PCT
                     ) -> tuple[int, int]:
    """(short side, maximum short side) of the decoded base images: ``resize_size(S)``, raised to
    ``int(S / r)`` for the smallest crop ratio r that zooms in, so zoomed views are resampled from
    up to native resolution as the paper's pipeline does."""
    short = resize_size(input_size, crop_pct)
    zoom = [int(input_size / r) for r in scale_levels]
    return short, max([short, *zoom])


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


def margin_cells(stride: int, margin: int = DEFAULT_INTERIOR_MARGIN) -> int:
    """Interior margin of a stage in map cells: ``ceil(margin / stride)`` for a margin in input px."""
    return int(math.ceil(margin / stride))


def interior_mask(size: tuple[int, int], seams: torch.Tensor, margin: int) -> torch.Tensor:
    """Cells of an (h, w) map at least ``margin`` cells from every map border and from the wrap
    seam of a circular shift by ``seams`` (B, 2) cells: (B, h, w) bool.

    After ``roll(x, s)`` the rows [0, s) come from the bottom of x, so f(roll(x)) and roll(f(x))
    differ, for a network whose cells see ``margin`` cells either side, only within ``margin`` of
    the map borders (zero padding of f(roll(x))) and of row s (the seam, where roll(f(x)) has
    f(x)'s borders); the same along columns.
    """
    keep = []
    for axis, length in enumerate(size):
        i = torch.arange(length, device=seams.device)
        border = (i >= margin) & (i < length - margin)  # (L,)
        dist = (i[None, :] - seams[:, axis:axis + 1]) % length  # (B, L) cells after the seam
        keep.append(border[None, :] & (dist >= margin) & (dist < length - margin))
    return keep[0][:, :, None] & keep[1][:, None, :]


def _relative_error(out: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """||out - target|| / ||target|| per image over all channels and the ``mask`` (B, h, w) cells."""
    diff, ref = (out - target).double(), target.double()
    if mask is not None:
        diff, ref = diff * mask[:, None], ref * mask[:, None]
    return (diff.flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1).clamp(min=1e-12)).cpu()


def equivariance_errors(shifted: Sequence[torch.Tensor], reference: Sequence[torch.Tensor], shifts: torch.Tensor,
                        strides: Sequence[int], margin: int = DEFAULT_INTERIOR_MARGIN
                        ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Relative errors ||f(roll(x, s)) - roll(f(x), s / r)|| / ||f(x)|| per image, for each stage.

    shifted / reference: stage maps (B, C, h, w) of the rolled and the plain input; shifts (B, 2)
    in input px, multiples of every stage's stride r (input px per map cell). Returns per stage
    (whole map, interior) as (B,) float64 CPU tensors, 0 = perfectly equivariant; the interior
    (`interior_mask` with ``margin_cells(r, margin)``) is None where a map has at most 4 margins
    of cells along an axis, so that some seam position could leave no interior cell.
    """
    errors = []
    for out, ref, stride in zip(shifted, reference, strides):
        if bool((shifts % stride).any()):
            raise ValueError(f"shifts {shifts.tolist()} are not multiples of the stage stride {stride}")
        cells = shifts // stride
        target = roll(ref, cells)
        whole = _relative_error(out, target)
        m = margin_cells(stride, margin)
        interior = None
        if min(out.shape[-2:]) > 4 * m:
            interior = _relative_error(out, target, interior_mask(tuple(out.shape[-2:]), cells, m))
        errors.append((whole, interior))
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


# --- the plan and the per-batch measurement --------------------------------------------------------
@dataclass(frozen=True)
class SweepPlan:
    """What to measure: kinds with their levels (missing ones get `default_levels`), the input
    size S, the seed and repeat of the draws, the translation mode, the crop fraction of the
    standard view and ``interior_margin``, the equivariance interior margin in input px."""

    kinds: tuple[str, ...]
    levels: Mapping[str, Sequence[float]]
    input_size: int
    seed: int = 0
    translation_mode: str = "pure"
    crop_pct: float = DEFAULT_CROP_PCT
    repeat: int = 0
    interior_margin: int = DEFAULT_INTERIOR_MARGIN

    def __post_init__(self) -> None:
        kinds = tuple(self.kinds)
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds:
            what = f"unknown invariance kind '{','.join(bad)}'" if bad else "no invariance kind given"
            raise UsageError(f"{what}: choose from {', '.join(KINDS)}")
        if self.interior_margin < 0:
            raise UsageError(f"interior margin {self.interior_margin}: give 0 or more input px, e.g. 16")
        if self.translation_mode not in TRANSLATION_MODES:
            raise UsageError(f"unknown translation mode {self.translation_mode!r}: "
                             f"choose from {', '.join(TRANSLATION_MODES)}")
        levels = {}
        for kind in kinds:
            given = self.levels.get(kind)
            values = tuple(float(v) for v in (default_levels(kind, self.input_size, self.crop_pct)
                                              if given is None else given))
            if kind in PIXEL_KINDS and any(v < 0 or v != int(v) for v in values):
                raise UsageError(f"{kind} levels {list(values)}: give whole pixels >= 0, e.g. 0,8,16")
            levels[kind] = values
        object.__setattr__(self, "kinds", kinds)
        object.__setattr__(self, "levels", levels)

    def base_short_sides(self) -> tuple[int, int]:
        """(short side, maximum short side) to decode images to (see `base_short_sides`): up to the
        zoom of the paper's smallest crop ratio 0.2 (1120 px at S = 224), or of a smaller ratio
        among the plan's scale levels, whichever kinds run. Plans thus decode the same base, and
        every image no larger than that keeps its native size, so all views are PIL's exactly."""
        zoom = [r for r in self.levels.get("scale", ()) if r < self.crop_pct]
        return base_short_sides(self.input_size, [_ZOOM_RATIO, *zoom], self.crop_pct)


@dataclass
class View:
    """One view of a batch: pixels (B, 3, S, S), compared with ``reference`` (B, 3, S, S; None =
    the standard view); ``shifts`` (B, 2) px of an equivariance roll."""

    kind: str
    level: float
    pixels: torch.Tensor
    reference: torch.Tensor | None = None
    shifts: torch.Tensor | None = None


def iter_views(plan: SweepPlan, views: Views) -> Iterator[View]:
    """Every (kind, level) view of one batch, in plan order, made on the batch's device."""
    index = views.batch.indices
    device = views.standard.device
    for kind in plan.kinds:
        for level in plan.levels[kind]:
            if kind in ("translation", "equivariance"):
                direction = DIRECTIONS[draw_directions(plan.seed, index, kind, level, plan.repeat)].to(device)
                if kind == "translation":
                    yield View(kind, level, views.translation(int(level), direction, plan.translation_mode))
                else:
                    shifts = direction * int(level)
                    yield View(kind, level, views.circular_shift(shifts), shifts=shifts)
            elif kind == "pre-rotation":
                yield View(kind, level, views.pre_rotation(level))
            elif kind == "post-rotation":
                yield View(kind, level, views.post_rotation(level))
            elif kind == "scale":
                yield View(kind, level, views.scale(level))
            elif kind == "shift-consistency":
                offsets = draw_crop_offsets(plan.seed, index, level, plan.repeat).to(device)
                yield View(kind, level, views.shift_crop(offsets[:, 1]), reference=views.shift_crop(offsets[:, 0]))
            elif kind == "circular-shift":
                shifts = draw_circular_shifts(plan.seed, index, level, plan.repeat).to(device)
                yield View(kind, level, views.circular_shift(shifts[:, 1]),
                           reference=views.circular_shift(shifts[:, 0]))


def _stage_setup(net: Normalized, plan: SweepPlan, standard: torch.Tensor) -> tuple[list[torch.Tensor], list[int]]:
    """Stage maps of the standard view and each stage's stride (0 = not measured)."""
    stages = list(range(num_stages(net.model)))
    maps = net.stages(standard, stages)
    info = getattr(net.model, "feature_info", None) or []
    nominal = [entry["reduction"] for entry in info if isinstance(entry, dict) and "reduction" in entry]
    return maps, stage_strides(maps, plan.input_size, nominal)


@torch.inference_mode()
def measure_batch(net: Normalized, plan: SweepPlan, views: Views) -> dict[tuple[str, float, str], np.ndarray]:
    """Every per-image value of one batch: {(kind, level, metric): (B,) float64}.

    Prediction kinds: `prediction_metrics` of each view against the standard view (shift kinds:
    the second view against the first). Equivariance: ``rel_error_stage{k}`` and
    ``rel_error_interior_stage{k}`` (stage k = 1, 2, ...) at the stages whose stride divides the
    shift (stages whose map does not tile the input are left out, as are interiors too small).
    """
    values: dict[tuple[str, float, str], np.ndarray] = {}
    labels = views.batch.labels
    standard_logits = net(views.standard)
    if "equivariance" in plan.kinds:
        reference_maps, strides = _stage_setup(net, plan, views.standard)
    for view in iter_views(plan, views):
        if view.kind == "equivariance":
            measured = [k for k, r in enumerate(strides) if r > 0 and int(view.level) % r == 0]
            if not measured:
                continue
            maps = net.stages(view.pixels, measured)
            errors = equivariance_errors(maps, [reference_maps[k] for k in measured], view.shifts,
                                         [strides[k] for k in measured], plan.interior_margin)
            for k, (whole, interior) in zip(measured, errors):
                values[(view.kind, view.level, f"rel_error_stage{k + 1}")] = whole.numpy()
                if interior is not None:
                    values[(view.kind, view.level, f"rel_error_interior_stage{k + 1}")] = interior.numpy()
            continue
        reference = standard_logits if view.reference is None else net(view.reference)
        for metric, value in prediction_metrics(reference, net(view.pixels), labels).items():
            values[(view.kind, view.level, metric)] = value.numpy()
    return values


# --- thin helpers over many batches ----------------------------------------------------------------
@dataclass
class SweepResult:
    """Per-image values of one model: {(kind, level, metric): list of (B,) float64 arrays}."""

    values: dict[tuple[str, float, str], list[np.ndarray]] = field(default_factory=dict)
    num_images: int = 0

    def add(self, batch_values: dict[tuple[str, float, str], np.ndarray]) -> None:
        for key, value in batch_values.items():
            self.values.setdefault(key, []).append(value)

    def stacked(self, key: tuple[str, float, str]) -> np.ndarray:
        return np.concatenate(self.values[key])


def run_sweep(net: Normalized, plan: SweepPlan, batches: Iterable[ImageBatch], progress=None) -> SweepResult:
    """`measure_batch` over every batch; ``progress`` (tqdm) advances per image."""
    result = SweepResult()
    for batch in batches:
        result.add(measure_batch(net, plan, Views(batch, plan.input_size, plan.crop_pct)))
        result.num_images += int(batch.labels.shape[0])
        if progress is not None:
            progress.update(int(batch.labels.shape[0]))
    return result


def summarise(result: SweepResult, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> list[dict]:
    """Rows (kind, level, metric, value, ci_low, ci_high, n_images) by `stats.summarise_values`
    with `METRIC_STATISTICS`; NaN values (accuracy without a label) are left out, as are keys
    without any value."""
    rows = []
    for key in result.values:
        kind, lv, metric = key
        value, low, high, n = summarise_values(result.stacked(key), METRIC_STATISTICS.get(metric, "mean"),
                                               n_boot=n_boot, seed=seed, level=level)
        if n:
            rows.append({"kind": kind, "level": lv, "metric": metric, "value": value, "ci_low": low,
                         "ci_high": high, "n_images": n})
    return rows


__all__ = [
    "DIRECTIONS", "KINDS", "METRIC_STATISTICS", "PIXEL_KINDS", "PREDICTION_METRICS", "TRANSLATION_MODES", "UNITS",
    "ImageBatch", "SweepPlan", "SweepResult", "View", "Views", "base_short_sides", "centre_crop_start", "crop",
    "default_levels", "draw_circular_shifts", "draw_crop_offsets", "draw_directions", "equivariance_errors",
    "group_images", "interior_mask", "iter_views", "margin_cells", "measure_batch", "pad_images",
    "prediction_metrics", "resample", "resize_weights", "roll", "rotate", "run_sweep", "select",
    "short_side_sizes", "stage_strides", "summarise",
]
