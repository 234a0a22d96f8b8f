"""One registry for every model stm-probe builds: the 20 unified backbones and any timm model.

`create_model` is the single entry point. Unified models are also registered in timm's registry
on import, so ``timm.create_model("unified_swin_tiny", num_classes=10)`` works.
"""
from __future__ import annotations

import difflib
import fnmatch
import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import timm
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from ..errors import UsageError
from .configs import SIZES, STMS, model_settings
from .unified import UnifiedNet

# STM family -> (module in stm_probe.models.blocks, block class, release-file stem)
_BLOCKS: dict[str, tuple[str, str, str]] = {
    "halo": ("halo", "HaloBlock", "halonet"),
    "pvt": ("pvt", "PvtBlock", "pvt"),
    "swin": ("swin", "SwinBlock", "swin"),
    "convnext": ("convnext", "ConvNeXtBlock", "convnext"),
    "dcn_v3": ("dcn_v3", "DCNv3Block", "internimage"),
}

# short STM names accepted in `unified_<size>_<stm>` (and as `unified_<stm>_<size>`)
STM_ALIASES: dict[str, str] = {
    "halo": "halo", "halonet": "halo",
    "attn": "pvt", "pvt": "pvt",
    "swin": "swin", "window": "swin",
    "conv": "convnext", "dwconv": "convnext", "convnext": "convnext",
    "dcn": "dcn_v3", "dcnv3": "dcn_v3", "dcn_v3": "dcn_v3", "internimage": "dcn_v3",
}

UNIFIED_MODELS: tuple[str, ...] = tuple(f"unified_{stm}_{size}" for stm in STMS for size in SIZES)


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about a model name before building it."""

    name: str  # canonical name (unified) or the timm architecture name
    stm: str  # STM family for unified models, "timm" otherwise
    size: str  # micro/tiny/small/base, or "-" for timm models
    aliases: tuple[str, ...] = field(default=())

    @property
    def is_unified(self) -> bool:
        return self.stm != "timm"


def release_stem(spec: ModelSpec) -> str:
    """File stem of the released checkpoint, e.g. ``unified_halonet_tiny`` for unified_halo_tiny."""
    return f"unified_{_BLOCKS[spec.stm][2]}_{spec.size}"


def _aliases(stm: str, size: str) -> tuple[str, ...]:
    names = {f"unified_{_BLOCKS[stm][2]}_{size}"}
    names.update(f"unified_{size}_{short}" for short, full in STM_ALIASES.items() if full == stm)
    names.update(f"unified_{short}_{size}" for short, full in STM_ALIASES.items() if full == stm)
    names.discard(f"unified_{stm}_{size}")
    return tuple(sorted(names))


UNIFIED_SPECS: dict[str, ModelSpec] = {
    f"unified_{stm}_{size}": ModelSpec(f"unified_{stm}_{size}", stm, size, _aliases(stm, size))
    for stm in STMS for size in SIZES
}
_ALIAS_TO_NAME: dict[str, str] = {a: s.name for s in UNIFIED_SPECS.values() for a in (s.name, *s.aliases)}


def resolve_name(name: str) -> ModelSpec:
    """Canonical spec for a unified name or alias, or a timm architecture; UsageError if unknown."""
    key = name.strip().lower().replace("-", "_")
    if key in _ALIAS_TO_NAME:
        return UNIFIED_SPECS[_ALIAS_TO_NAME[key]]
    if timm.is_model(name):
        return ModelSpec(name, "timm", "-")
    candidates = list(_ALIAS_TO_NAME) + timm.list_models()
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "run `stm-probe models` for the list"
    raise UsageError(f"unknown model '{name}': {hint}")


def expand_model_patterns(patterns: list[str]) -> list[str]:
    """Resolve names, aliases and globs (``unified_*_tiny``) to canonical names, in order, no repeats."""
    names: list[str] = []
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            matches = [n for n in _ALIAS_TO_NAME if fnmatch.fnmatchcase(n, pattern)]
            resolved = sorted({_ALIAS_TO_NAME[m] for m in matches}, key=UNIFIED_MODELS.index)
            if not resolved:
                resolved = timm.list_models(pattern)
            if not resolved:
                raise UsageError(f"model pattern '{pattern}' matches no model: run `stm-probe models` for the list")
        else:
            resolved = [resolve_name(pattern).name]
        names.extend(n for n in resolved if n not in names)
    return names


def block_class(stm: str) -> type[nn.Module]:
    """The block class of an STM family (imported lazily)."""
    module_name, class_name, _ = _BLOCKS[stm]
    module = importlib.import_module(f"stm_probe.models.blocks.{module_name}")
    return getattr(module, class_name)


def default_cfg(spec: ModelSpec, num_classes: int = 1000) -> dict[str, Any]:
    """timm-style pretrained_cfg of a unified model (evaluation transform of the paper)."""
    return dict(
        architecture=spec.name, input_size=(3, 224, 224), crop_pct=0.875, interpolation="bicubic",
        mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, num_classes=num_classes,
        first_conv="downsample_layers.0.stem.0", classifier="head",
        file=f"{release_stem(spec)}.pth",
    )


def build_unified(name: str, **kwargs: Any) -> UnifiedNet:
    """Build a unified model (random init) by canonical name or alias; kwargs go to `UnifiedNet`."""
    spec = resolve_name(name)
    settings = model_settings(spec.stm, spec.size)
    settings.update(kwargs)
    model = UnifiedNet(block=block_class(spec.stm), **settings)
    model.pretrained_cfg = default_cfg(spec, model.num_classes)
    model.default_cfg = model.pretrained_cfg
    return model


def _timm_entrypoint(name: str) -> Callable[..., nn.Module]:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if pretrained:
            raise UsageError(f"{name}: no pretrained weights are downloaded; pass a checkpoint file instead")
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(key, None)
        return build_unified(name, **kwargs)

    entrypoint.__name__ = name
    entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"Unified backbone `{name}` (stm-probe)."
    return entrypoint


def register_with_timm() -> None:
    """Add the 20 unified models to timm's registry (idempotent)."""
    module = sys.modules[__name__]
    for name in UNIFIED_MODELS:
        if timm.is_model(name):
            continue
        fn = _timm_entrypoint(name)
        setattr(module, name, fn)
        timm.models.register_model(fn)


def create_model(
    name: str,
    checkpoint: str | Path | None = None,
    checkpoint_key: str | None = None,
    strict: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """Build a model by name (unified name, alias or any timm architecture), optionally load weights.

    Never downloads anything: timm models are built with ``pretrained=False``. With ``checkpoint``
    the weights are loaded safely (see `stm_probe.checkpoint.load_checkpoint`), and the model gets a
    ``stm_probe_weights`` attribute describing them (path, sha256, key used); without, it is
    randomly initialised and ``stm_probe_weights`` says ``random-init``.
    """
    from ..checkpoint import load_checkpoint

    spec = resolve_name(name)
    if spec.is_unified:
        model = build_unified(spec.name, **kwargs)
    else:
        model = timm.create_model(spec.name, pretrained=False, **kwargs)
    model.stm_probe_spec = spec
    model.stm_probe_weights = {"weights": "random-init"}
    if checkpoint is not None:
        model.stm_probe_weights = load_checkpoint(model, checkpoint, key=checkpoint_key, strict=strict)
    return model


def list_specs() -> list[ModelSpec]:
    """The 20 unified models in registry order."""
    return [UNIFIED_SPECS[n] for n in UNIFIED_MODELS]
