"""Parameter counts and multiply-accumulates of a model (to recount `stm_probe.models.facts`)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    """Parameter elements of ``model`` (buffers not counted)."""
    return sum(p.numel() for p in model.parameters())


def count_gmacs(model: nn.Module, input_size: int = 224) -> float:
    """GMACs of conv/linear/matmul for one (1, 3, S, S) image, counted on the meta device.

    torch's flop counter counts 2 FLOPs per multiply-accumulate; grid_sample, softmax and norms
    are not counted (the convention of the reference manifest). Puts ``model`` in eval mode.
    """
    x = torch.empty(1, 3, input_size, input_size, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(x)
    return counter.get_total_flops() / 2e9
