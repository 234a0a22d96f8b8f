"""Resizing the size-dependent tables of a checkpoint to a model built at another input size, as the
original loader does. Each rule takes (state-dict key, tensor in the file, shape the model wants) and
returns the resized tensor, or None where the key or the shapes are not its kind; the blocks that own
such tables call them from their ``resize_checkpoint_tensor`` (see `stm_probe.models.stms`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def resize_bias_table(table: torch.Tensor, side: int) -> torch.Tensor:
    """Swin relative-position bias table ((2w-1)^2, heads) -> (side^2, heads), bicubic as the original loader.

    The table is viewed as a (heads, 2w-1, 2w-1) grid of offsets and resized with
    ``F.interpolate(mode='bicubic', align_corners=False)``; ``side`` is ``2 * window - 1``.
    Differentiable; computed in float32 and returned in the table's dtype.
    """
    rows, heads = table.shape
    side_in = math.isqrt(rows)
    if side_in * side_in != rows:
        raise ValueError(f"bias table with {rows} rows is not a square grid of offsets")
    grid = table.permute(1, 0).reshape(1, heads, side_in, side_in).float()
    grid = F.interpolate(grid, size=(side, side), mode="bicubic")
    return grid.reshape(heads, side * side).permute(1, 0).to(table.dtype)


def swin_bias_table(key: str, value: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    """A Swin ``relative_position_bias_table`` ((2w-1)^2, heads), bicubic (`resize_bias_table`)."""
    if key.endswith("relative_position_bias_table") and value.shape[1] == shape[1]:
        side_out = math.isqrt(shape[0])
        if math.isqrt(value.shape[0]) ** 2 == value.shape[0] and side_out ** 2 == shape[0]:
            return resize_bias_table(value, side_out)
    return None


def halo_relative_table(key: str, value: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    """A halo ``height_rel`` / ``width_rel`` table (2 * window - 1, head dim), linear with align_corners."""
    if key.endswith(("height_rel", "width_rel")) and value.shape[1] == shape[1]:
        table = value.permute(1, 0).unsqueeze(0).float()
        table = F.interpolate(table, size=shape[0], mode="linear", align_corners=True)
        return table.squeeze(0).permute(1, 0).to(value.dtype)
    return None


def pvt_pos_embed(key: str, value: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    """A PVT ``pos_embed`` (1, C, H, W), bilinear with align_corners."""
    if key.endswith("pos_embed") and value.dim() == 4 and value.shape[:2] == shape[:2]:
        return F.interpolate(value.float(), size=tuple(shape[-2:]), mode="bilinear", align_corners=True).to(value.dtype)
    return None
