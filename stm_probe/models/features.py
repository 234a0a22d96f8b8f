"""One way to get stage outputs and to feed [0, 1] pixels to any model."""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

from .layers import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from .unified import UnifiedNet


def _timm_stage_indices(model: nn.Module) -> list[int]:
    """feature_info indices of a timm model's stages: those at stride >= 4 (a stride-2 stem
    output, as in ResNets, is not a stage), so stage k lines up with the unified models' k."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise ValueError(f"{type(model).__name__} exposes no feature stages (no feature_info)")
    reductions = [entry.get("reduction", 1) if isinstance(entry, dict) else 1 for entry in info]
    kept = [i for i, r in enumerate(reductions) if r >= 4]
    return kept or list(range(len(info)))


def num_stages(model: nn.Module) -> int:
    """Number of feature stages (4 for unified models; timm: feature_info entries at stride >= 4)."""
    if isinstance(model, UnifiedNet):
        return len(model.depths)
    return len(_timm_stage_indices(model))


def stage_outputs(model: nn.Module, x: torch.Tensor, stages: Sequence[int]) -> list[torch.Tensor]:
    """Feature maps of ``stages`` (0-based) for normalised images ``x`` (B, 3, H, W).

    Unified models: the output after each stage's LayerNorm (docs/protocols.md §1), (B, C_i, H_i, W_i).
    timm models: the ``forward_intermediates`` outputs (NCHW) of the feature_info entries at
    stride >= 4, the stages ``features_only=True`` exposes. Maps come in ascending stage order;
    computation stops at the last requested stage where the model allows it.
    """
    if isinstance(model, UnifiedNet):
        return model.forward_stages(x, stages)
    if not hasattr(model, "forward_intermediates"):
        raise ValueError(f"{type(model).__name__} has no forward_intermediates: cannot read its stages")
    mapping = _timm_stage_indices(model)
    indices = [mapping[s] for s in stages]
    outs = model.forward_intermediates(x, indices=indices, intermediates_only=True, output_fmt="NCHW")
    return list(outs)


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Parameters do not require grad inside the block: analyses that only need input gradients
    (ERF, attacks) skip saving what weight gradients would need. Restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


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
