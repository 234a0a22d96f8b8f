"""Invariance of predictions to translation, rotation and scale (docs/protocols.md §5), plus
shift consistency, circular-shift consistency and per-stage shift equivariance.

A pure computation library: plan (`SweepPlan`), seeded draws, views (`Views`) and per-image
metrics (`measure_batch`); loading, summaries and output belong to the caller.

The rooms: `kinds` (the kinds, units, metrics: no torch), `plan` (default levels, `SweepPlan`, the
seeded draws), `geometry` (`ImageBatch`, `Views`), `metrics` (`prediction_metrics`, the equivariance
errors) and `sweep` (`measure_batch`, `run_sweep`, `summarise`). Importing this package loads only
`kinds`; every other name loads its room (and torch) on first use, so the probe's options and the
figures stay light.

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

import importlib
from typing import Any

from .kinds import (DEFAULT_INTERIOR_MARGIN, KINDS, METRIC_STATISTICS, PIXEL_KINDS, PREDICTION_METRICS,
                    TRANSLATION_MODES, UNITS)

#: the names that load their room (and torch) on first use -> the module that holds them
_LAZY = {
    **dict.fromkeys(("DIRECTIONS", "SweepPlan", "base_short_sides", "default_levels", "draw_circular_shifts",
                     "draw_crop_offsets", "draw_directions"), "stm_probe.core.invariance.plan"),
    **dict.fromkeys(("ImageBatch", "Views", "group_images", "pad_images"), "stm_probe.core.invariance.geometry"),
    **dict.fromkeys(("equivariance_errors", "interior_mask", "margin_cells", "prediction_metrics", "stage_strides"),
                    "stm_probe.core.invariance.metrics"),
    **dict.fromkeys(("SweepResult", "View", "iter_views", "measure_batch", "run_sweep", "summarise"),
                    "stm_probe.core.invariance.sweep"),
    **dict.fromkeys(("centre_crop_start", "crop", "resample", "resize_weights", "roll", "rotate", "select",
                     "short_side_sizes"), "stm_probe.core.views"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})


__all__ = [
    "DEFAULT_INTERIOR_MARGIN", "DIRECTIONS", "KINDS", "METRIC_STATISTICS", "PIXEL_KINDS", "PREDICTION_METRICS",
    "TRANSLATION_MODES", "UNITS", "ImageBatch", "SweepPlan", "SweepResult", "View", "Views", "base_short_sides",
    "centre_crop_start", "crop", "default_levels", "draw_circular_shifts", "draw_crop_offsets", "draw_directions",
    "equivariance_errors", "group_images", "interior_mask", "iter_views", "margin_cells", "measure_batch",
    "pad_images", "prediction_metrics", "resample", "resize_weights", "roll", "rotate", "run_sweep", "select",
    "short_side_sizes", "stage_strides", "summarise",
]
