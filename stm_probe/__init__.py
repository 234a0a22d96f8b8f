"""stm-probe: analyses of the spatial token mixers of modern vision backbones.

``import stm_probe`` is light (no torch): the command line starts fast. The names in ``__all__`` load on
first use: ``run`` (a probe over models -> DataFrame), ``load_run`` (a finished run folder -> the same
DataFrame), ``create_model`` (``pretrained=True`` for the released weights), ``list_models``, ``corrupt``
(an ImageNet-C corruption of one image), ``PROBES``. The 20 unified backbones enter timm's model registry
whenever timm is loaded: by ``import stm_probe`` (or the first `create_model` or `run`) when timm is
already imported, by stm-probe itself when it needs timm, or by ``stm_probe.models.register_with_timm()``;
so ``timm.create_model("unified_swin_tiny")`` works after ``import timm, stm_probe``. Building a unified
model does not import timm. No import hook is installed.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "run": "stm_probe.api", "create_model": "stm_probe.models", "list_specs": "stm_probe.models",
    "resolve_name": "stm_probe.models", "UNIFIED_MODELS": "stm_probe.models", "PROBES": "stm_probe.probes",
    "load_run": "stm_probe.api", "list_models": "stm_probe.api", "UsageError": "stm_probe.errors",
    "corrupt": "stm_probe.core.corruptions",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stm_probe' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public API (``__all__``) with the module's own names, so tab completion finds ``run``."""
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})


if "timm" in sys.modules:  # torch and timm are loaded already: registering costs little
    importlib.import_module("stm_probe.models.registry")

__all__ = ["PROBES", "UNIFIED_MODELS", "UsageError", "__version__", "corrupt", "create_model", "list_models",
           "list_specs", "load_run", "resolve_name", "run"]
