"""Spatial-reduction attention (PVT v1) as the token mixer of the unified backbone.

Queries come from every position; keys and values from a map reduced by a strided conv
(kernel = stride = ``sr_ratio``) followed by LayerNorm. The first block of each stage adds a
learned absolute position embedding (1, C, H, W) to its input; at other input sizes it is
bilinearly resized (``align_corners=True``, as the original loader resizes it for a model built
at that size).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import DropPath, Mlp, layer_scale, trunc_normal_
from ..resize import pvt_pos_embed


class SpatialReductionAttention(nn.Module):
    """Multi-head attention with spatially reduced keys/values: (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, num_heads: int = 1, sr_ratio: int = 1, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.sr_ratio = sr_ratio

        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=1e-5)

    def _reduce(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Key/value tokens: (B, N, C) -> (B, N / sr^2, C) via strided conv and LayerNorm."""
        if self.sr_ratio == 1:
            return x
        batch, _, channels = x.shape
        x = x.transpose(1, 2).reshape(batch, channels, *size)
        x = self.sr(x).flatten(2).transpose(1, 2)
        return self.norm(x)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Tokens (B, N, C) of an (H, W) = ``size`` map, row-major -> (B, N, C)."""
        batch, length, channels = x.shape
        q = self.q(x).reshape(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        # kv channels are [k of all heads | v of all heads]
        kv = self.kv(self._reduce(x, size)).reshape(batch, -1, 2, self.num_heads, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, M, head_dim)

        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(batch, length, channels)
        return self.proj(x)


class PvtBlock(nn.Module):
    """Pre-norm block with spatial-reduction attention and an MLP: (B, C, H, W) -> (B, C, H, W).

    Args:
        dim: channels C.
        drop_path: stochastic-depth rate.
        layer_scale_init_value: initial layer scale (``gamma_1``/``gamma_2``, shape (C,));
            no layer scale when <= 0.
        input_resolution: (H, W) of the stage map at the build size; shape of ``pos_embed``.
        stage: stage index (unused; part of the block contract).
        index: block index within the stage; block 0 owns the position embedding.
        num_heads, mlp_ratio, sr_ratio, qkv_bias: this stage's PVT settings.
    """

    @staticmethod
    def resize_checkpoint_tensor(key: str, value: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
        """A checkpoint's position embedding at another map size, resized bilinearly (key relative to the block)."""
        return pvt_pos_embed(key, value, shape)

    def __init__(
        self,
        dim: int,
        drop_path: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        input_resolution: tuple[int, int] = (56, 56),
        stage: int = 0,
        index: int = 0,
        num_heads: int = 1,
        mlp_ratio: float = 4.0,
        sr_ratio: int = 1,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.input_resolution = tuple(input_resolution)
        if index == 0:
            self.pos_embed = nn.Parameter(torch.zeros(1, dim, *self.input_resolution))
            trunc_normal_(self.pos_embed, std=0.02)
        else:
            self.pos_embed = None

        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = SpatialReductionAttention(dim, num_heads=num_heads, sr_ratio=sr_ratio, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.gamma_1 = layer_scale(layer_scale_init_value, dim)
        self.gamma_2 = layer_scale(layer_scale_init_value, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def position_embedding(self, size: tuple[int, int]) -> torch.Tensor:
        """The embedding (1, C, H, W) for an (H, W) map, bilinearly resized if needed."""
        pos = self.pos_embed
        if tuple(size) != tuple(pos.shape[-2:]):
            pos = F.interpolate(pos, size=tuple(size), mode="bilinear", align_corners=True)
        return pos

    @staticmethod
    def _scale(gamma: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        return x if gamma is None else gamma * x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        if self.pos_embed is not None:
            x = x + self.position_embedding((height, width))
        x = x.flatten(2).transpose(1, 2)  # (B, N, C)
        x = x + self.drop_path(self._scale(self.gamma_1, self.attn(self.norm1(x), (height, width))))
        x = x + self.drop_path(self._scale(self.gamma_2, self.mlp(self.norm2(x))))
        return x.transpose(1, 2).reshape(batch, channels, height, width).contiguous()
