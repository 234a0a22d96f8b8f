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


# --- layer scales of a whole model -------------------------------------------------------------
# Parameter names of layer scales: the unified blocks' gamma_1 / gamma_2 (gamma1 / gamma2 in
# DCNv3, as the original), timm's LayerScale (`ls1.gamma`), CaiT and ConvNeXt blocks.
LAYER_SCALE_NAMES = ("gamma_1", "gamma_2", "gamma1", "gamma2", "gamma")


def layer_scale_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """The layer-scale parameters of ``model`` grouped by block, in module order.

    A block is the module owning the parameter; for a wrapper that holds nothing but the
    parameter (timm's ``LayerScale``), the module above it.
    """
    modules = dict(model.named_modules())
    groups: dict[str, list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        owner, _, leaf = name.rpartition(".")
        if leaf not in LAYER_SCALE_NAMES:
            continue
        module = modules[owner]
        if owner and not list(module.children()) and len(list(module.parameters(recurse=False))) == 1:
            owner = owner.rpartition(".")[0]  # a LayerScale wrapper: group by its block
        groups.setdefault(owner, []).append(param)
    return list(groups.values())


def set_layer_scales(model: nn.Module, value: float) -> int:
    """Fill every layer-scale parameter of ``model`` with ``value``; returns how many tensors."""
    count = 0
    with torch.no_grad():
        for group in layer_scale_groups(model):
            for param in group:
                param.fill_(value)
                count += 1
    return count


def layer_scale_magnitudes(model: nn.Module) -> list[float]:
    """Mean |gamma| per block (over all its layer-scale elements), in module order."""
    with torch.no_grad():
        return [float(torch.cat([p.detach().abs().flatten() for p in group]).float().mean())
                for group in layer_scale_groups(model)]


def copy_layer_scale_magnitudes(src: nn.Module, dst: nn.Module) -> int:
    """Fill every layer scale of each block of ``dst`` with the mean |gamma| of the same block
    of ``src`` (e.g. a trained model), so a fresh copy mixes tokens as strongly; returns the
    number of blocks. ValueError if the two models have different numbers of blocks."""
    magnitudes = layer_scale_magnitudes(src)
    groups = layer_scale_groups(dst)
    if len(groups) != len(magnitudes):
        raise ValueError(f"{len(magnitudes)} blocks with layer scales in the source, {len(groups)} in the target")
    with torch.no_grad():
        for value, group in zip(magnitudes, groups):
            for param in group:
                param.fill_(value)
    return len(groups)
