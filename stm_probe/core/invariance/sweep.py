"""The sweep itself: every (kind, level) view of a batch in plan order (`iter_views`), every per-image
value of one batch (`measure_batch`), and the thin helpers over many batches (`run_sweep`, `summarise`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
import torch

from ...models.features import Normalized, num_stages
from ..stats import summarise_values
from .geometry import ImageBatch, Views
from .kinds import METRIC_STATISTICS
from .metrics import equivariance_errors, prediction_metrics, stage_strides
from .plan import DIRECTIONS, SweepPlan, draw_circular_shifts, draw_crop_offsets, draw_directions


# --- the per-batch measurement -----------------------------------------------------------------------
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
