"""Settings of the 20 released unified models (docs/protocols.md §1; factory calls of the original), read by
the paper's five STM records (`stm_probe.models.stms`).

Each entry: the STM family, the size, and the keyword arguments of `UnifiedNet` except the block
class. List-valued block settings are per stage.
"""
from __future__ import annotations

from typing import Any

SIZES = ("micro", "tiny", "small", "base")

_SMALL_DIMS = (32, 64, 128, 256)
_TINY_DIMS = (96, 192, 384, 768)
_BASE_DIMS = (128, 256, 512, 1024)

# halo and swin share dims, depths and heads (window/block 7); only the STM differs.
_WINDOW_SIZES: dict[str, dict[str, Any]] = {
    "micro": dict(dims=_SMALL_DIMS, depths=(2, 2, 9, 2), heads=(1, 2, 4, 8), drop_path_rate=0.0),
    "tiny": dict(dims=_TINY_DIMS, depths=(2, 2, 6, 2), heads=(3, 6, 12, 24), drop_path_rate=0.2),
    "small": dict(dims=_TINY_DIMS, depths=(2, 2, 18, 2), heads=(3, 6, 12, 24), drop_path_rate=0.3),
    "base": dict(dims=_BASE_DIMS, depths=(2, 2, 18, 2), heads=(4, 8, 16, 32), drop_path_rate=0.5),
}

_PVT_SIZES: dict[str, dict[str, Any]] = {
    "micro": dict(dims=(32, 64, 160, 256), depths=(2, 2, 3, 2), mlp=(8, 8, 4, 4), drop_path_rate=0.0),
    "tiny": dict(dims=(64, 128, 320, 512), depths=(3, 4, 9, 3), mlp=(8, 8, 4, 4), drop_path_rate=0.1),
    "small": dict(dims=(64, 128, 320, 512), depths=(3, 4, 21, 3), mlp=(8, 8, 4, 4), drop_path_rate=0.3),
    "base": dict(dims=(64, 128, 320, 512), depths=(3, 8, 45, 3), mlp=(4, 4, 4, 4), drop_path_rate=0.5),
}

_CONVNEXT_SIZES: dict[str, dict[str, Any]] = {
    "micro": dict(dims=_SMALL_DIMS, depths=(3, 3, 8, 3), drop_path_rate=0.0),
    "tiny": dict(dims=_TINY_DIMS, depths=(2, 2, 9, 2), drop_path_rate=0.1),
    "small": dict(dims=_TINY_DIMS, depths=(2, 2, 24, 2), drop_path_rate=0.4),
    "base": dict(dims=_BASE_DIMS, depths=(2, 2, 24, 2), drop_path_rate=0.5),
}

_DCN_SIZES: dict[str, dict[str, Any]] = {
    "micro": dict(base=32, depths=(2, 2, 9, 2), group_base=2, drop_path_rate=0.0),
    "tiny": dict(base=64, depths=(4, 4, 18, 4), group_base=4, drop_path_rate=0.1),
    "small": dict(base=80, depths=(4, 4, 21, 4), group_base=5, drop_path_rate=0.3),
    "base": dict(base=112, depths=(4, 4, 21, 4), group_base=7, drop_path_rate=0.5),
}


def _doubling(base: int) -> tuple[int, ...]:
    return tuple(base * 2**i for i in range(4))


def model_settings(stm: str, size: str) -> dict[str, Any]:
    """`UnifiedNet` keyword arguments (without ``block``) for one registered model."""
    if stm in ("halo", "swin"):
        s = _WINDOW_SIZES[size]
        block = dict(num_heads=s["heads"])
        block.update(block_size=7, halo_size=3) if stm == "halo" else block.update(window_size=7)
        return dict(dims=s["dims"], depths=s["depths"], drop_path_rate=s["drop_path_rate"], block_kwargs=block)
    if stm == "pvt":
        s = _PVT_SIZES[size]
        block = dict(num_heads=(1, 2, 5, 8), mlp_ratio=s["mlp"], sr_ratio=(8, 4, 2, 1), qkv_bias=True)
        return dict(dims=s["dims"], depths=s["depths"], drop_path_rate=s["drop_path_rate"], block_kwargs=block)
    if stm == "convnext":
        s = _CONVNEXT_SIZES[size]
        return dict(dims=s["dims"], depths=s["depths"], drop_path_rate=s["drop_path_rate"], block_kwargs={})
    if stm == "dcn_v3":
        s = _DCN_SIZES[size]
        block = dict(num_heads=_doubling(s["group_base"]), points=9, kernel_size=3)
        return dict(dims=_doubling(s["base"]), depths=s["depths"], drop_path_rate=s["drop_path_rate"],
                    block_kwargs=block)
    raise KeyError(stm)
