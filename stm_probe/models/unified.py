"""The unified backbone of "Demystify Transformers & Convolutions" (one network, five STMs).

Stem (stride 4) -> 4 stages of STM blocks with a downsampling layer before stages 2-4 and a
LayerNorm2d after every stage -> conv1x1/BN/GELU head -> global average pool -> Linear.
Only the block class differs between the 20 released models.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from .layers import LayerNorm2d, trunc_normal_


def _stage_value(value: Any, stage: int) -> Any:
    """A per-stage setting: lists/tuples are indexed by stage, scalars apply to every stage."""
    return value[stage] if isinstance(value, (list, tuple)) else value


class Stem(nn.Module):
    """conv3x3/s2 -> LN2d -> GELU -> conv3x3/s2 -> LN2d: (B, 3, H, W) -> (B, C0, H/4, W/4)."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        mid = out_chans // 2
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, mid, kernel_size=3, stride=2, padding=1),
            LayerNorm2d(mid),
            nn.GELU(),
            nn.Conv2d(mid, out_chans, kernel_size=3, stride=2, padding=1),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)


class Downsample(nn.Module):
    """conv3x3/s2 without bias -> LN2d: (B, Ci, H, W) -> (B, Ci+1, H/2, W/2)."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.reduction = nn.Sequential(
            nn.Conv2d(in_chans, out_chans, kernel_size=3, stride=2, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduction(x)


class UnifiedNet(nn.Module):
    """The unified backbone with a pluggable STM block class.

    Args:
        block: block class following the contract in ``stm_probe.models.blocks``.
        block_kwargs: the STM's settings; list values are per stage.
        depths, dims: blocks and channels per stage.
        img_size: build resolution (pixels); sets shapes of size-dependent parameters (PVT).
        drop_path_rate: stochastic depth, rising linearly from 0 over all blocks.
    """

    def __init__(
        self,
        block: type[nn.Module],
        block_kwargs: dict[str, Any] | None = None,
        depths: Sequence[int] = (2, 2, 6, 2),
        dims: Sequence[int] = (96, 192, 384, 768),
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int | tuple[int, int] = 224,
        drop_path_rate: float = 0.0,
        drop_rate: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        head_ratio: float = 1.5,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        block_kwargs = dict(block_kwargs or {})
        img_hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.depths = tuple(depths)
        self.dims = tuple(dims)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.downsample_layers = nn.ModuleList([Stem(in_chans, dims[0])])
        for i in range(3):
            self.downsample_layers.append(Downsample(dims[i], dims[i + 1]))

        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.stages = nn.ModuleList()
        self.stage_norms = nn.ModuleList()
        self.feature_info: list[dict[str, Any]] = []
        cursor = 0
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            resolution = (img_hw[0] // 4 // 2**i, img_hw[1] // 4 // 2**i)
            stage_kwargs = {k: _stage_value(v, i) for k, v in block_kwargs.items()}
            self.stages.append(nn.ModuleList(
                block(
                    dim=dim,
                    drop_path=rates[cursor + j],
                    layer_scale_init_value=layer_scale_init_value,
                    input_resolution=resolution,
                    stage=i,
                    index=j,
                    **stage_kwargs,
                )
                for j in range(depth)
            ))
            self.stage_norms.append(LayerNorm2d(dim))
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2**i, module=f"stage_norms.{i}"))
            cursor += depth

        self.num_features = int(dims[-1] * head_ratio)
        self.conv_head = nn.Sequential(
            nn.Conv2d(dims[-1], self.num_features, kernel_size=1, bias=False),
            nn.BatchNorm2d(self.num_features),
            nn.GELU(),
        )
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)
        for module in self.modules():
            if module is not self and hasattr(module, "init_weights"):
                module.init_weights()

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    # --- timm model interface -------------------------------------------------------------
    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_stage(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Downsample + blocks + norm of stage ``i``: (B, C_{i-1}, H, W) -> (B, C_i, H/2, W/2)."""
        x = self.downsample_layers[i](x)
        for blk in self.stages[i]:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return self.stage_norms[i](x)

    def forward_stages(self, x: torch.Tensor, stages: Sequence[int] | None = None) -> list[torch.Tensor]:
        """Stage outputs after each stage norm for images (B, 3, H, W), H and W multiples of 32.

        Returns the maps of ``stages`` (0-based, default all four), shapes (B, C_i, H/2^(i+2), W/2^(i+2)).
        Stops after the last requested stage.
        """
        wanted = sorted(set(range(4) if stages is None else stages))
        outputs = []
        for i in range(wanted[-1] + 1):
            x = self.forward_stage(x, i)
            if i in wanted:
                outputs.append(x)
        return outputs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> last stage map (B, C3, H/32, W/32)."""
        for i in range(4):
            x = self.forward_stage(x, i)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.conv_head(x), 1).flatten(1)
        if self.drop_rate > 0:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W), normalised -> logits (B, num_classes)."""
        return self.forward_head(self.forward_features(x))
