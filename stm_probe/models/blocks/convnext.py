"""Depth-wise convolution ("U-ConvNeXt") as the token mixer of the unified backbone.

Unlike the official ConvNeXt block, the unified block keeps the transformer layout: a pre-norm
token-mixing branch (1x1 conv -> depthwise KxK -> 1x1 conv, all with bias) and a pre-norm MLP
branch, each with its own residual and layer scale.
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers import DropPath, LayerNorm2d, layer_scale


class ConvNeXtBlock(nn.Module):
    """Double-residual block with a projected depthwise conv: (B, C, H, W) -> (B, C, H, W).

    Args:
        dim: channels C.
        drop_path: stochastic-depth rate (shared by both branches).
        layer_scale_init_value: initial layer scale; ``gamma_1`` (1, C, 1, 1) scales the
            NCHW conv branch, ``gamma_2`` (1, 1, 1, C) the channels-last MLP branch; none if <= 0.
        input_resolution, stage, index: part of the block contract, unused.
        kernel_size: depthwise kernel (7 in every released model).
        mlp_ratio: MLP expansion (4).
    """

    def __init__(
        self,
        dim: int,
        drop_path: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        input_resolution: tuple[int, int] | None = None,
        stage: int = 0,
        index: int = 0,
        kernel_size: int = 7,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.dw_norm = LayerNorm2d(dim, eps=1e-6)
        self.dw_input_proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=kernel_size // 2, groups=dim)
        self.dw_out_proj = nn.Conv2d(dim, dim, kernel_size=1)

        self.pw_norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(hidden, dim)

        self.gamma_1 = layer_scale(layer_scale_init_value, 1, dim, 1, 1)
        self.gamma_2 = layer_scale(layer_scale_init_value, 1, 1, 1, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def token_mixer(self, x: torch.Tensor) -> torch.Tensor:
        """Norm -> 1x1 -> depthwise -> 1x1 on NCHW maps: (B, C, H, W) -> (B, C, H, W)."""
        # contiguous NCHW as in the original, so the convs take the same kernels (bitwise parity)
        return self.dw_out_proj(self.dwconv(self.dw_input_proj(self.dw_norm(x).contiguous())))

    def channel_mixer(self, x: torch.Tensor) -> torch.Tensor:
        """Norm -> Linear -> GELU -> Linear on channels-last maps: (B, H, W, C) -> (B, H, W, C)."""
        return self.pwconv2(self.act(self.pwconv1(self.pw_norm(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.token_mixer(x)
        if self.gamma_1 is not None:
            y = self.gamma_1 * y
        x = x + self.drop_path(y)

        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        y = self.channel_mixer(x)
        if self.gamma_2 is not None:
            y = self.gamma_2 * y
        x = x + self.drop_path(y)
        return x.permute(0, 3, 1, 2).contiguous()
