"""A toy spatial token mixer for tests/test_toy_stm.py: the ONE block file a new STM needs.

3x3 average pooling (PoolFormer's mixer, pool(x) - x) plus a learned position bias of the stage's
map size, so that the block also owns a size-dependent table and shows how a block resizes a
checkpoint made at another input size (`resize_checkpoint_tensor`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stm_probe.models.layers import DropPath, LayerNorm2d, Mlp, layer_scale


class PoolMixerBlock(nn.Module):
    """(B, C, H, W) -> (B, C, H, W): x + gamma_1 * (pool(LN(x)) - LN(x) + bias); x + gamma_2 * MLP(LN(x))."""

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale_init_value: float = 1e-6,
                 input_resolution: tuple[int, int] | None = None, stage: int = 0, index: int = 0,
                 pool_size: int = 3) -> None:
        super().__init__()
        side = input_resolution or (7, 7)
        self.norm1 = LayerNorm2d(dim, eps=1e-6)
        self.pool = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)
        self.pos_bias = nn.Parameter(torch.randn(1, dim, *side) * 0.02)  # (1, C, H, W) at the build size
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.gamma_1 = layer_scale(layer_scale_init_value, 1, dim, 1, 1)
        self.gamma_2 = layer_scale(layer_scale_init_value, 1, 1, 1, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    @staticmethod
    def resize_checkpoint_tensor(key: str, value: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
        """The position bias of a checkpoint made at another input size, resized bilinearly."""
        if key == "pos_bias":
            return F.interpolate(value, size=tuple(shape[-2:]), mode="bilinear", align_corners=False)
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        bias = F.interpolate(self.pos_bias, size=x.shape[-2:], mode="bilinear", align_corners=False) \
            if self.pos_bias.shape[-2:] != x.shape[-2:] else self.pos_bias
        mixed = self.pool(y) - y + bias
        x = x + self.drop_path(mixed if self.gamma_1 is None else self.gamma_1 * mixed)
        z = self.mlp(self.norm2(x.permute(0, 2, 3, 1)))
        z = z if self.gamma_2 is None else self.gamma_2 * z
        return x + self.drop_path(z.permute(0, 3, 1, 2))
