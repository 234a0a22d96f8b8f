"""Which input sizes a model takes, checked before an analysis starts.

Unified models take any multiple of 32 (checked arithmetically). Any other model is probed:
one forward of a (1, C, S, S) image on the meta device with the model's parameters and buffers
swapped for meta tensors (no memory, no arithmetic, the model itself untouched); when that
probe fails, one real forward of a single image under ``torch.no_grad`` decides (some
operations have no meta implementation).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UsageError
from .unified import UnifiedNet

UNIFIED_MULTIPLE = 32  # total stride of the unified backbones


def check_input_size(model: nn.Module, input_size: int) -> None:
    """UsageError (one line naming the sizes the model takes) if ``model`` cannot run on
    ``input_size`` x ``input_size`` images; returns None when it can."""
    name = _name(model)
    if isinstance(model, UnifiedNet):
        if input_size < UNIFIED_MULTIPLE or input_size % UNIFIED_MULTIPLE:
            low = max(UNIFIED_MULTIPLE, input_size // UNIFIED_MULTIPLE * UNIFIED_MULTIPLE)
            raise UsageError(f"{name} takes input sizes that are multiples of {UNIFIED_MULTIPLE}: {input_size} is not; "
                             f"use {low} or {low + UNIFIED_MULTIPLE}")
        return
    if input_size < 1:
        raise UsageError(f"input size {input_size} is not a positive number of pixels")
    error = _probe(model, input_size, meta=True)
    if error is not None:
        error = _probe(model, input_size, meta=False)
    if error is not None:
        raise UsageError(f"{name} cannot run on {input_size}x{input_size} images ({_first_line(error)}): "
                         f"{accepted_sizes(model, input_size)}")


def accepted_sizes(model: nn.Module, input_size: int | None = None) -> str:
    """The sizes a (timm) model takes, in words: its fixed size, or the size it was made for.

    A fixed size equal to ``input_size`` (the model was built for it and still fails) is not
    offered; the size of the model's pretrained configuration is.
    """
    patch_embed = getattr(model, "patch_embed", None)
    fixed = getattr(patch_embed, "img_size", None) if getattr(patch_embed, "strict_img_size", False) else None
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if fixed is None and cfg.get("fixed_input_size") and cfg.get("input_size"):
        fixed = tuple(cfg["input_size"][-2:])
    if fixed is not None and tuple(fixed) != (input_size, input_size):
        return f"it takes {fixed[0]}x{fixed[1]} images only; use --input-size {fixed[0]}"
    made = tuple(cfg["input_size"][-2:]) if cfg.get("input_size") else None
    return f"it was made for {made[0]}x{made[1]}; try --input-size {made[0]}" if made else "try another --input-size"


def _probe(model: nn.Module, input_size: int, meta: bool) -> Exception | None:
    """Run one (1, C, S, S) image through ``model`` (eval mode, restored after); the error or None."""
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    device = next(iter(params.values())).device if params else torch.device("cpu")
    channels = _in_chans(model)
    was_training = model.training
    # functional_call can leave meta tensors behind in modules used twice (e.g. timm's CoaT): keep the originals
    originals = [(m, dict(m._parameters), dict(m._buffers)) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            if meta:
                swapped = {k: torch.empty_like(v, device="meta") for k, v in {**params, **buffers}.items()}
                x = torch.empty(1, channels, input_size, input_size, device="meta")
                torch.func.functional_call(model, swapped, (x,))
            else:
                model(torch.zeros(1, channels, input_size, input_size, device=device))
        return None
    except Exception as exc:  # any failure of the forward means: not at this size (or not on meta)
        return exc
    finally:
        for module, module_params, module_buffers in originals:
            module._parameters.update(module_params)
            module._buffers.update(module_buffers)
        model.train(was_training)


def _in_chans(model: nn.Module) -> int:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return int(cfg["input_size"][0]) if cfg.get("input_size") else 3


def _name(model: nn.Module) -> str:
    return getattr(getattr(model, "stm_probe_spec", None), "name", type(model).__name__)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__
