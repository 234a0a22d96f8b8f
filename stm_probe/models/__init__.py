"""Models: the unified backbones, their STM blocks, and the one registry that builds every model.

The names below load on first use, so light submodules (`names`, `facts`, `summary`) import
without torch or timm. The unified models enter timm's registry whenever timm is loaded (see
`registry`): importing this package does so at once when timm is already imported.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any

_LAZY = {
    "UNIFIED_MODELS": "names", "ModelSpec": "names",
    "build_unified": "registry", "create_model": "registry", "expand_model_patterns": "registry",
    "list_specs": "registry", "register_with_timm": "registry", "resolve_name": "registry",
    "check_input_size": "input_size", "UnifiedNet": "unified",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)

if "timm" in sys.modules:  # torch and timm are loaded already: registering costs little
    importlib.import_module(f"{__name__}.registry")
