"""Deformable convolution v3 ("U-InternImage") as the token mixer of the unified backbone.

Each of ``num_heads`` channel groups samples the zero-padded value map at ``points`` locations
around every position: a fixed 3x3 grid plus offsets predicted from the query, which is the
normalised input passed through depthwise conv -> LayerNorm -> GELU. The samples are summed
with softmax-normalised weights predicted from the same query. The sampling runs in
`stm_probe.ops.dcnv3` (``grid_sample`` in plain PyTorch; Triton kernels on CUDA, selected by
``$STM_PROBE_DCNV3``); see there for the coordinate conventions kept from the original,
including its swapped (x, y) order of the base grid.

Initialisation: the original zero-initialises the offset and weight predictors and
xavier-initialises the value/output projections when the block is built, but its backbone then
re-initialises every Conv2d/Linear with trunc_normal(std=0.02) and zero bias, so in a built
backbone none of that survives. This module does the same: its own init runs at construction,
and it defines no ``init_weights`` hook, so `UnifiedNet`'s global init has the last word.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...ops.dcnv3 import dcnv3_base_grid, dcnv3_core, dcnv3_reference_points, dcnv3_sampling_locations
from ..layers import DropPath, Mlp, layer_scale


def _autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for this device type (False for types autocast does not know, e.g. meta)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:
        return False


class ChannelsFirstLayerNorm(nn.Module):
    """nn.LayerNorm (eps 1e-5) over the channels of an NCHW map, kept as ``.norm`` (state-dict layout)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class DCNv3(nn.Module):
    """Grouped deformable sampling with softmax weights: (B, H, W, C) -> (B, H, W, C).

    Args:
        dim: channels C.
        num_heads: channel groups G, each with its own offsets and weights.
        points: sampling points per group (a square number; 9 = 3x3 grid).
        kernel_size: kernel of the depthwise conv of the query branch.
    """

    def __init__(self, dim: int, num_heads: int, points: int = 9, kernel_size: int = 3) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.points = points
        self.padding = math.isqrt(points) // 2
        self.dw_conv = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size, padding=(kernel_size - 1) // 2, groups=dim),
            ChannelsFirstLayerNorm(dim),
            nn.GELU(),
        )
        self.sampling_offsets = nn.Linear(dim, num_heads * points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        # (H, W, device) -> (reference points (H*W, 2), base grid (P, 2)); plain attribute, not state
        self._grid_cache: dict[tuple[int, int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """The original's block-level init (overwritten by the backbone's global init)."""
        for layer in (self.sampling_offsets, self.attention_weights):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        for layer in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _grids(self, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached float32 reference points (H*W, 2) and base grid (P, 2) for an H x W map."""
        key = (height, width, device)
        if key not in self._grid_cache:
            with torch.inference_mode(False):  # normal tensors even if first built under inference mode
                self._grid_cache[key] = (
                    dcnv3_reference_points(height, width, self.padding, device=device),
                    dcnv3_base_grid(self.points, device=device),
                )
        return self._grid_cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input (B, H, W, C) -> (B, H, W, C)."""
        batch, height, width, channels = x.shape
        length, pad = height * width, self.padding

        query = self.dw_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        value = F.pad(self.value_proj(x), (0, 0, pad, pad, pad, pad))  # (B, H + 2p, W + 2p, C)
        offsets = self.sampling_offsets(query).reshape(batch, length, self.num_heads, self.points, 2)
        weights = self.attention_weights(query).reshape(batch, length, self.num_heads, self.points)
        weights = F.softmax(weights, dim=-1)

        ref, grid = self._grids(height, width, x.device)
        locations = dcnv3_sampling_locations(offsets, ref, grid, (height + 2 * pad, width + 2 * pad))
        if _autocast_enabled(x.device.type):
            # the original's compiled op casts its inputs to float32 and runs outside autocast
            with torch.autocast(x.device.type, enabled=False):
                out = dcnv3_core(value.float(), locations.float(), weights.float())
        else:
            out = dcnv3_core(value, locations, weights)
        return self.output_proj(out).reshape(batch, height, width, channels)


class DCNv3Block(nn.Module):
    """Pre-norm block with DCNv3 and an MLP: (B, C, H, W) -> (B, C, H, W).

    Args:
        dim: channels C.
        drop_path: stochastic-depth rate.
        layer_scale_init_value: initial layer scale (``gamma1``/``gamma2``, shape (C,)); none if <= 0.
        input_resolution, stage, index: part of the block contract, unused (any H, W works).
        num_heads: DCNv3 channel groups of this stage.
        points: sampling points per group (9).
        kernel_size: depthwise kernel of the offset/weight branch (3).
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
        num_heads: int = 1,
        points: int = 9,
        kernel_size: int = 3,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = DCNv3(dim, num_heads=num_heads, points=points, kernel_size=kernel_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.gamma1 = layer_scale(layer_scale_init_value, dim)
        self.gamma2 = layer_scale(layer_scale_init_value, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    @staticmethod
    def _scale(gamma: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        return x if gamma is None else gamma * x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        x = x + self.drop_path(self._scale(self.gamma1, self.attn(self.norm1(x))))
        x = x + self.drop_path(self._scale(self.gamma2, self.mlp(self.norm2(x))))
        return x.permute(0, 3, 1, 2)
