"""The optimisation recipe's pieces: the learning-rate schedule (`WarmupCosine`), AdamW's parameter
groups (`param_groups`) and the optimiser steps of one epoch (`steps_per_epoch`)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


class WarmupCosine:
    """Learning-rate factor of optimiser step k (0-based): (k + 1) / W during the W warm-up steps,
    then 0.5 (1 + cos(pi (k - W) / (T - W))) over the remaining steps of T (reaching 0 after the last)."""

    def __init__(self, warmup_steps: int, total_steps: int) -> None:
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def param_groups(model: "nn.Module", weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on weight matrices and kernels only, not on biases, norms, 1-D
    parameters or what the model lists in ``no_weight_decay()`` (position embeddings, ...)."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, plain = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (plain if param.ndim <= 1 or name.endswith(".bias") or name in skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def steps_per_epoch(num_images: int, batch_size: int) -> int:
    """Full batches per epoch (the last partial batch is dropped; one batch of all when fewer than B)."""
    return max(1, num_images // batch_size)
