"""Small layers shared by the unified backbone and its blocks.

`DropPath`, `trunc_normal_` and `make_divisible` behave exactly as timm's (same random draws, same
values; tests/test_models.py compares them), kept here so that building a unified model does not
import timm (and with it torchvision and torch._dynamo: about 1.5 s of every command).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


#: ImageNet mean and standard deviation per RGB channel, for pixels in [0, 1] (timm's IMAGENET_DEFAULT_*).
IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Stochastic depth: zero whole samples of ``x`` (B, ...) with probability ``drop_prob`` while
    training and scale the kept ones by 1 / (1 - drop_prob); the identity otherwise."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    if keep > 0.0:
        mask.div_(keep)
    return x * mask


class DropPath(nn.Module):
    """`drop_path` as a module (per-sample stochastic depth on a residual branch)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={round(self.drop_prob, 3):0.3f}"


def trunc_normal_(tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0,
                  b: float = 2.0) -> torch.Tensor:
    """Fill ``tensor`` in place from N(mean, std^2) truncated to [a, b], by the inverse CDF.

    One uniform draw per element mapped through erfinv (timm's method; newer PyTorch's own
    ``nn.init.trunc_normal_`` samples by rejection and would draw different weights).
    """
    def cdf(v: float) -> float:
        return (1.0 + math.erf(v / math.sqrt(2.0))) / 2.0

    with torch.no_grad():
        low, high = cdf((a - mean) / std), cdf((b - mean) / std)
        tensor.uniform_(2 * low - 1, 2 * high - 1).erfinv_()
        tensor.mul_(std * math.sqrt(2.0)).add_(mean).clamp_(min=a, max=b)
    return tensor


def make_divisible(value: float, divisor: int = 8) -> int:
    """``value`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``), rounded up
    instead where rounding down would lose more than 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


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
