"""`patch-drop` (Naseer et al., NeurIPS 2021, "Intriguing properties of vision transformers"):
a fraction f of the standard view's ``--patch-size`` px patches replaced by a fill.

The view at fraction f of P patches drops ``round(f x P)`` of them (Python's round, half to
even), the first ones of a per-image order, so the dropped sets grow with f (a deletion curve):

* ``random``: a uniform random order per image, seeded by (seed, repeat) and the image's index
  (the same for every f and every model);
* ``salient`` / ``non-salient``: patches by decreasing / increasing per-patch sum of the model's
  own attribution map (`attribution.attribution_maps`, ``--method``, target = label or clean
  top-1); ties keep the row-major patch order.

``--fill``: ``zero`` (black pixels), ``mean`` (the ImageNet mean colour (0.485, 0.456, 0.406) in
[0, 1] pixels) or ``noise`` (uniform in [0, 1), one seeded noise image per image, shared by every
f and order). f = 0 is the clean view (its values come from the clean pass).

Metrics against the clean view (`stm_probe.core.invariance.prediction_metrics`) keyed (order, f), and
per order the area under each image's curve, ``auc_consistency`` (and ``auc_top1`` with labels):
the trapezoid integral of that image's 0/100 values over the sorted distinct fractions divided by
their span, i.e. the curve's mean height in percent (100 = never changed; needs two fractions),
summarised by its mean and a bootstrap CI.
"""
from __future__ import annotations

from functools import cached_property
from typing import Any, Iterable

import numpy as np
import torch

from ...errors import UsageError
from ...core.invariance import METRIC_STATISTICS, prediction_metrics
from ...core.seeds import per_image_uniform
from ..base import require_finite
from .attribution import attribution_maps, attribution_targets
from .base import BiasMethod, Key
from .patch_shuffle import VIEWS_PER_BATCH, logits_of_views

#: the fill colour of --fill mean: timm's IMAGENET_DEFAULT_MEAN, in [0, 1] pixels
IMAGENET_MEAN = (0.485, 0.456, 0.406)
AUC_METRICS = ("consistency", "top1")


def drop_count(fraction: float, patches: int) -> int:
    """How many of ``patches`` a fraction drops: round(fraction x patches)."""
    return int(round(fraction * patches))


def patch_scores(maps: torch.Tensor, patch: int) -> torch.Tensor:
    """Per-patch sums of maps (B, H, W): (B, (H / patch) x (W / patch)), patches row-major."""
    b, h, w = maps.shape
    return maps.reshape(b, h // patch, patch, w // patch, patch).sum((2, 4)).reshape(b, -1)


def salient_order(scores: torch.Tensor, descending: bool = True) -> torch.Tensor:
    """Patch indices (B, P) by decreasing (or increasing) score; ties in row-major order."""
    return torch.sort(scores, dim=1, descending=descending, stable=True).indices


def random_order(stream: int, indices: Any, patches: int) -> torch.Tensor:
    """A seeded uniform random order of ``patches`` per image ``indices`` (B,): (B, P) int64."""
    return torch.from_numpy(np.argsort(per_image_uniform(stream, indices, patches), axis=1, kind="stable"))


def drop_patches(images: torch.Tensor, order: torch.Tensor, count: int, patch: int, fill: torch.Tensor) -> torch.Tensor:
    """``images`` (B, C, S, S) with the first ``count`` patches of ``order`` (B, P) replaced by ``fill``
    (broadcastable to the images). Returns a new (B, C, S, S) tensor."""
    b, _, h, w = images.shape
    rows, cols = h // patch, w // patch
    dropped = torch.zeros(b, rows * cols, dtype=torch.bool, device=images.device)
    dropped.scatter_(1, order[:, :count].to(images.device), True)
    mask = dropped.view(b, 1, rows, 1, cols, 1).expand(b, 1, rows, patch, cols, patch).reshape(b, 1, h, w)
    return torch.where(mask, fill, images)


def area_under_curve(fractions: list[float], values: list[np.ndarray]) -> np.ndarray:
    """Per-image trapezoid integral of ``values`` (one (B,) array per fraction, in fraction order)
    over ``fractions`` divided by their span: the curve's mean height, (B,); NaN propagates."""
    xs = np.asarray(fractions, dtype=np.float64)
    order = np.argsort(xs, kind="stable")
    ys = np.stack(values, axis=1)[:, order]
    return np.trapezoid(ys, xs[order], axis=1) / (xs.max() - xs.min())


class PatchDrop(BiasMethod):
    """Prediction metrics with a growing fraction of patches dropped, per order (module docstring)."""

    name = "patch-drop"
    statistics = {**METRIC_STATISTICS, **{f"auc_{m}": "mean" for m in AUC_METRICS}}

    @property
    def randomised(self) -> bool:  # type: ignore[override]
        return "random" in self.config.orders or self.config.fill == "noise"

    @cached_property
    def fractions(self) -> tuple[float, ...]:
        return tuple(dict.fromkeys(float(f) for f in self.config.fractions))

    def check(self) -> list[str]:
        side, patch = self.input_size, self.config.patch_size
        if side % patch:
            sizes = ",".join(str(d) for d in range(2, min(side, 64) + 1) if side % d == 0)
            raise UsageError(f"--patch-size {patch}: patches must tile --input-size {side} exactly; choose a divisor "
                             f"such as {sizes}")
        return []

    def _fill(self, images: torch.Tensor, indices: Any, repeat: int) -> torch.Tensor:
        """The fill, broadcastable to ``images`` (B, 3, S, S)."""
        if self.config.fill == "zero":
            return images.new_zeros(())
        if self.config.fill == "mean":
            return torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        noise = per_image_uniform(self.stream("noise", repeat), indices, images[0].numel())
        return torch.from_numpy(noise).to(images.device, images.dtype).view_as(images)

    def _orders(self, model: Any, images: torch.Tensor, labels: torch.Tensor, clean: torch.Tensor,
                indices: Any, repeat: int) -> dict[str, torch.Tensor]:
        """Each order's patch ranking (B, P), on the images' device."""
        patch = self.config.patch_size
        count = (images.shape[-2] // patch) * (images.shape[-1] // patch)
        orders: dict[str, torch.Tensor] = {}
        if {"salient", "non-salient"} & set(self.config.orders):
            maps = attribution_maps(model.net, images, attribution_targets(labels, clean), self.config.method,
                                    self.session.options.batch_size)
            require_finite(maps, model.name, "attributions")
            scores = patch_scores(maps, patch)
        for name in self.config.orders:
            if name == "random":
                orders[name] = random_order(self.stream("random", repeat), indices, count).to(images.device)
            else:
                orders[name] = salient_order(scores, descending=name == "salient")
        return orders

    def measure(self, model: Any, batch: Any, repeat: int) -> dict[Key, np.ndarray]:
        device, patch = self.session.device, self.config.patch_size
        images, labels = batch.images.to(device), batch.labels.to(device)
        with torch.inference_mode():
            clean = model.net(images)
        require_finite(clean, model.name)
        orders = self._orders(model, images, labels, clean, batch.indices, repeat)
        fill = self._fill(images, batch.indices, repeat)
        count = (images.shape[-2] // patch) * (images.shape[-1] // patch)
        levels = [(name, f) for name in orders for f in self.fractions]

        def views() -> Iterable[torch.Tensor | None]:
            for name, f in levels:
                dropped = drop_count(f, count)
                yield None if dropped == 0 else drop_patches(images, orders[name], dropped, patch, fill)

        with torch.inference_mode():
            logits = logits_of_views(model.net, views(), clean, VIEWS_PER_BATCH * self.session.options.batch_size)
        out: dict[Key, np.ndarray] = {}
        for (name, f), view_logits in zip(levels, logits):
            require_finite(view_logits, model.name)
            for metric, value in prediction_metrics(clean, view_logits, labels).items():
                out[(name, f, None, metric)] = value.numpy()
        if len(self.fractions) > 1:
            for name in orders:
                for metric in AUC_METRICS:
                    curve = [out[(name, f, None, metric)] for f in self.fractions]
                    out[(name, None, None, f"auc_{metric}")] = area_under_curve(list(self.fractions), curve)
        return out
