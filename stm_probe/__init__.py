"""stm-probe: analyses of the spatial token mixers of modern vision backbones.

``import stm_probe`` is light (no torch): the command line starts fast. The names below load on
first use. The 20 unified backbones are registered in timm's model registry as soon as both
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
    "corrupt": "stm_probe.corruptions",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stm_probe' has no attribute {name!r}")


register_when_timm_loads()

__all__ = ["PROBES", "UNIFIED_MODELS", "__version__", "corrupt", "create_model", "list_specs", "resolve_name", "run"]
