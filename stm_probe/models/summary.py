"""Parameter counts and multiply-accumulates of the unified models (for `stm-probe models`)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .registry import STM_ALIASES, ModelSpec, build_unified, list_specs, release_stem


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_gmacs(model: nn.Module, input_size: int = 224) -> float:
    """GMACs of conv/linear/matmul for one (1, 3, S, S) image, counted on the meta device.

    torch's flop counter counts 2 FLOPs per multiply-accumulate; grid_sample, softmax and norms
    are not counted (the convention of the reference manifest).
    """
    x = torch.empty(1, 3, input_size, input_size, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(x)
    return counter.get_total_flops() / 2e9


def display_aliases(spec: ModelSpec) -> list[str]:
    """The aliases worth listing: the release-file stem (if it differs) and ``unified_<size>_<stm>``."""
    stem = release_stem(spec)
    short = [f"unified_{spec.size}_{alias}" for alias, stm in STM_ALIASES.items() if stm == spec.stm]
    return ([stem] if stem != spec.name else []) + short


def model_table() -> list[dict[str, Any]]:
    """One row per unified model: name, stm, size, params, gmacs_224, aliases."""
    rows = []
    for spec in list_specs():
        with torch.device("meta"):
            model = build_unified(spec.name)
        rows.append(dict(name=spec.name, stm=spec.stm, size=spec.size, params=count_parameters(model),
                         gmacs_224=round(count_gmacs(model), 3), aliases=" ".join(display_aliases(spec))))
    return rows
