"""Small layers shared by the unified backbone and its blocks."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (B, C, H, W); eps 1e-6 as in the original."""

    def __init__(self, num_channels: int, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__(num_channels, eps=eps, elementwise_affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2).contiguous()  # contiguous as the original: convs after it pick the same kernels


class Mlp(nn.Module):
    """Linear -> GELU -> Linear on channels-last tokens (..., C)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def layer_scale(init_value: float, *shape: int) -> nn.Parameter | None:
    """A layer-scale parameter of ``shape`` filled with ``init_value`` (1e-6), or None if <= 0."""
    return nn.Parameter(init_value * torch.ones(*shape)) if init_value > 0 else None
