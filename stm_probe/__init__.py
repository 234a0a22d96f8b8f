"""stm-probe: analyses of the spatial token mixers of modern vision backbones.

``import stm_probe`` is light (no torch): the command line starts fast. The names in ``__all__`` load on
first use: ``run`` (a probe over models -> DataFrame), ``load_run`` (a finished run folder -> the same
DataFrame), ``create_model`` (``pretrained=True`` for the released weights), ``list_models``, ``PROBES``. The 20 unified backbones are registered in timm's model registry as soon as both
stm_probe and timm are imported (in either order), so ``timm.create_model("unified_swin_tiny")``
works after ``import stm_probe, timm``.
"""
from __future__ import annotations

import importlib
from typing import Any

from ._timm_hook import register_when_timm_loads

__version__ = "0.1.0"

_LAZY = {
    "run": "stm_probe.api", "create_model": "stm_probe.models", "list_specs": "stm_probe.models",
    "resolve_name": "stm_probe.models", "UNIFIED_MODELS": "stm_probe.models", "PROBES": "stm_probe.probes",
    "load_run": "stm_probe.api", "list_models": "stm_probe.api", "UsageError": "stm_probe.errors",
    "corrupt": "stm_probe.corruptions",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stm_probe' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public API (``__all__``) with the module's own names, so tab completion finds ``run``."""
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})


register_when_timm_loads()

__all__ = ["PROBES", "UNIFIED_MODELS", "UsageError", "__version__", "corrupt", "create_model", "list_models",
           "list_specs", "load_run", "resolve_name", "run"]
