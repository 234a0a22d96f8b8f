"""`patch-shuffle` (Naseer et al., NeurIPS 2021, "Intriguing properties of vision transformers"):
the standard view cut into a g x g grid of (S/g)-px patches put back in a random order.

Each image gets its own permutation per g, seeded by (seed, g, repeat) and the image's index,
so every model sees the same shuffles. g = 1 is the unshuffled reference (the clean pass's
values; no second forward). Metrics against the unshuffled view, as the invariance probe
(`stm_probe.core.invariance.prediction_metrics`): top1 / top5 with labels, consistency with the
unshuffled top-1, soft_ce and kl against the unshuffled softmax. The shuffled views of all grids
share forward passes (`logits_of_views`).
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
from .base import BiasMethod, Key

#: the paper's grids at 224; a run keeps those dividing its input side
DEFAULT_GRIDS = (1, 2, 4, 7, 8, 14, 16, 28)
#: views per forward pass, in multiples of --batch-size (views of several levels share a pass)
VIEWS_PER_BATCH = 4


def draw_permutations(stream: int, indices: Any, count: int) -> torch.Tensor:
    """A uniform random permutation of ``count`` patches per image ``indices`` (B,): (B, count) int64,
    the argsort of per-image seeded uniforms (`stm_probe.core.seeds`)."""
    keys = per_image_uniform(stream, indices, count)
    return torch.from_numpy(np.argsort(keys, axis=1, kind="stable"))


def shuffle_patches(images: torch.Tensor, grid: int, perms: torch.Tensor) -> torch.Tensor:
    """``images`` (B, C, S, S) cut into ``grid`` x ``grid`` patches (row-major), patch k of the output
    being patch ``perms[b, k]`` of the input; perms (B, grid^2). Returns (B, C, S, S)."""
    b, c, h, w = images.shape
    ph, pw = h // grid, w // grid
    patches = images.reshape(b, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, grid * grid, c, ph, pw)
    index = perms.to(images.device)[:, :, None, None, None].expand(-1, -1, c, ph, pw)
    shuffled = patches.gather(1, index)
    return shuffled.reshape(b, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def logits_of_views(net: torch.nn.Module, views: Iterable[torch.Tensor | None], clean: torch.Tensor,
                    max_views: int) -> list[torch.Tensor]:
    """Logits (B, K) of each view (B, C, S, S) in turn; ``None`` stands for the clean view (its
    logits ``clean`` are reused). Views are concatenated and a pass runs once they reach
    ``max_views`` images (so a pass holds fewer than ``max_views`` + B), so small batches of many
    levels still fill the device. Call under ``torch.inference_mode``."""
    out: list[torch.Tensor | None] = []
    pending: list[tuple[int, torch.Tensor]] = []

    def flush() -> None:
        logits = net(torch.cat([v for _, v in pending]))
        for (slot, _), part in zip(pending, logits.split([v.shape[0] for _, v in pending])):
            out[slot] = part
        pending.clear()

    for view in views:
        out.append(clean if view is None else None)
        if view is not None:
            pending.append((len(out) - 1, view))
            if sum(v.shape[0] for _, v in pending) >= max_views:
                flush()
    if pending:
        flush()
    return out  # type: ignore[return-value]


class PatchShuffle(BiasMethod):
    """Prediction metrics of patch-shuffled views against the unshuffled one (module docstring)."""

    name = "patch-shuffle"
    statistics = METRIC_STATISTICS
    randomised = True

    @cached_property
    def grids(self) -> tuple[int, ...]:
        """The grids to run: ``--grids`` (each must divide the input side), else the defaults that do."""
        side = self.input_size
        if self.config.grids is None:
            return tuple(g for g in DEFAULT_GRIDS if side % g == 0)
        bad = [g for g in self.config.grids if g < 1 or side % g]
        if bad:
            divisors = ",".join(str(d) for d in range(1, min(side, 64) + 1) if side % d == 0)
            raise UsageError(f"--grids {bad[0]}: a grid must divide --input-size {side} into whole patches; "
                             f"choose from {divisors}")
        return tuple(dict.fromkeys(self.config.grids))

    def check(self) -> list[str]:
        _ = self.grids  # validates --grids (UsageError)
        return []

    def measure(self, model: Any, batch: Any, repeat: int) -> dict[Key, np.ndarray]:
        device = self.session.device
        images, labels = batch.images.to(device), batch.labels.to(device)

        def views() -> Iterable[torch.Tensor | None]:
            for g in self.grids:
                if g == 1:
                    yield None
                else:
                    yield shuffle_patches(images, g, draw_permutations(self.stream(g, repeat), batch.indices, g * g))

        with torch.inference_mode():
            clean = model.net(images)
            require_finite(clean, model.name)
            logits = logits_of_views(model.net, views(), clean, VIEWS_PER_BATCH * self.session.options.batch_size)
        out: dict[Key, np.ndarray] = {}
        for g, view_logits in zip(self.grids, logits):
            require_finite(view_logits, model.name)
            for metric, value in prediction_metrics(clean, view_logits, labels).items():
                out[("", g, None, metric)] = value.numpy()
        return out
