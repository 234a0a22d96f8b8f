"""The plan of an invariance sweep: the paper's default levels of each kind (`default_levels`), the short
side images are decoded to (`base_short_sides`), the validated plan (`SweepPlan`), and the seeded
per-image draws (directions, circular shifts, crop offsets) that are the same for every model."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from ...data import DEFAULT_CROP_PCT, resize_size
from ...errors import UsageError
from ..seeds import per_image_integers, stream_id
from .kinds import DEFAULT_INTERIOR_MARGIN, KINDS, PIXEL_KINDS, TRANSLATION_MODES

#: the 8 jitter directions (dy, dx): down, right, up, left and the four diagonals
DIRECTIONS = torch.tensor([(1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, 1), (-1, -1), (1, -1)])
#: smallest crop ratio of the paper's scale grid: the base keeps up to int(S / 0.2) px of short side
_ZOOM_RATIO = 0.2


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


def base_short_sides(input_size: int, scale_levels: Sequence[float] = (), crop_pct: float = DEFAULT_CROP_PCT
                     ) -> tuple[int, int]:
    """(short side, maximum short side) of the decoded base images: ``resize_size(S)``, raised to
    ``int(S / r)`` for the smallest crop ratio r that zooms in, so zoomed views are resampled from
    up to native resolution as the paper's pipeline does."""
    short = resize_size(input_size, crop_pct)
    zoom = [int(input_size / r) for r in scale_levels]
    return short, max([short, *zoom])


# --- the plan ---------------------------------------------------------------------------------------
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
