"""The vocabulary of the invariance sweep: the kinds, their units, which take whole-pixel levels, the
translation modes, the per-image metrics and how each is summarised. Plain Python (no torch), so the
probe's options and the figures use it without loading torch."""
from __future__ import annotations

KINDS = ("translation", "pre-rotation", "post-rotation", "scale", "shift-consistency", "circular-shift",
         "equivariance")
UNITS = {"translation": "px", "pre-rotation": "degrees", "post-rotation": "degrees", "scale": "crop ratio",
         "shift-consistency": "px (offset range)", "circular-shift": "px (max shift)", "equivariance": "px"}
PIXEL_KINDS = ("translation", "shift-consistency", "circular-shift", "equivariance")  # whole-pixel levels
TRANSLATION_MODES = ("pure", "official")
PREDICTION_METRICS = ("top1", "top5", "consistency", "soft_ce", "kl")
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
