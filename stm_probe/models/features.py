"""One way to get stage outputs and to feed [0, 1] pixels to any model."""
from __future__ import annotations

from typing import Sequence

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from .unified import UnifiedNet


def num_stages(model: nn.Module) -> int:
    """Number of feature stages (4 for unified models, len(feature_info) for timm models)."""
    if isinstance(model, UnifiedNet):
        return len(model.depths)
    info = getattr(model, "feature_info", None)
    if info:
        return len(info)
    raise ValueError(f"{type(model).__name__} exposes no feature stages (no feature_info)")


def stage_outputs(model: nn.Module, x: torch.Tensor, stages: Sequence[int]) -> list[torch.Tensor]:
    """Feature maps of ``stages`` (0-based) for normalised images ``x`` (B, 3, H, W).

    Unified models: the output after each stage's LayerNorm (PROTOCOLS.md s. 1), (B, C_i, H_i, W_i).
    timm models: the stage outputs of ``forward_intermediates`` (NCHW), the same stages that
    ``features_only=True`` exposes. Computation stops at the last requested stage where possible.
    """
    if isinstance(model, UnifiedNet):
        return model.forward_stages(x, stages)
    if hasattr(model, "forward_intermediates"):
        outs = model.forward_intermediates(x, indices=list(stages), intermediates_only=True, output_fmt="NCHW")
        return list(outs)
    raise ValueError(f"{type(model).__name__} has no forward_intermediates: cannot read its stages")


class Normalized(nn.Module):
    """Wraps a model so it takes pixels in [0, 1] (B, 3, H, W) and normalises inside.

    mean/std come from the model's timm ``pretrained_cfg`` (ImageNet defaults otherwise). This is
    torchattacks' convention: attacks and gradients see [0, 1] pixels, never normalised tensors.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        cfg = getattr(model, "pretrained_cfg", None) or {}
        mean = torch.tensor(cfg.get("mean", IMAGENET_DEFAULT_MEAN), dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(cfg.get("std", IMAGENET_DEFAULT_STD), dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, H, W) in [0, 1] -> logits (B, classes)."""
        return self.model(self.normalize(x))

    def stages(self, x: torch.Tensor, stages: Sequence[int]) -> list[torch.Tensor]:
        """Stage outputs for pixels in [0, 1]; see `stage_outputs`."""
        return stage_outputs(self.model, self.normalize(x), stages)
