"""Restricting a model's logits to a subset of its classes (ImageNet-R / ImageNet-A).

The datasets' authors score an ImageNet-1k model on their 200 classes by taking the 200 logits
of those classes and the argmax among them. :class:`ClassSubset` does exactly that as a module,
so every probe (accuracy, attacks, invariance of the prediction) sees a 200-class model whose
output ``j`` is ImageNet-1k class ``indices[j]``, and labels are positions in ``indices``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import UsageError

__all__ = ["ClassSubset", "restrict_classes"]


class ClassSubset(nn.Module):
    """Wraps a logits model: pixels ``(B, 3, H, W)`` in [0, 1] -> logits ``(B, K)`` = ``net(x)[:, indices]``.

    ``indices`` are the K kept class indices of ``net``'s output (sorted, distinct). The wrapped
    model's ``model``, ``normalize`` and ``stages`` (the :class:`~stm_probe.models.features.Normalized`
    interface used for feature maps) are passed through unchanged.
    """

    def __init__(self, net: nn.Module, indices: Sequence[int]) -> None:
        super().__init__()
        idx = [int(i) for i in indices]
        if not idx or len(set(idx)) != len(idx) or min(idx) < 0:
            raise ValueError(f"class indices must be distinct non-negative integers, got {len(idx)} values")
        self.net = net
        self.register_buffer("indices", torch.tensor(idx, dtype=torch.long), persistent=False)

    @property
    def num_classes(self) -> int:
        return int(self.indices.numel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, H, W) -> logits of the kept classes (B, K)."""
        logits = self.net(x)
        return logits.index_select(1, self.indices.to(logits.device))

    @property
    def model(self) -> nn.Module:
        return self.net.model

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.normalize(x)

    def stages(self, x: torch.Tensor, stages: Sequence[int]) -> list[torch.Tensor]:
        return self.net.stages(x, stages)


def restrict_classes(net: nn.Module, num_classes: int, indices: Sequence[int], model: str,
                     data: str) -> ClassSubset:
    """``net`` restricted to ``indices``; a model whose head lacks those classes is refused in one line.

    ``num_classes`` is the model's output count; ``data`` names the source in the message.
    """
    if num_classes != 1000:
        raise UsageError(f"{model} has {num_classes} classes, but --data {data} is scored on {len(indices)} of the "
                         "1000 ImageNet-1k classes: use an ImageNet-1k model (1000 outputs)")
    return ClassSubset(net, indices)
