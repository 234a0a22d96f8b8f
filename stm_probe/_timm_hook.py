"""Register the unified models in timm's registry when timm is imported, without importing it here.

Importing timm (and torch) takes seconds; the command line must print help and argument errors
in well under one. If timm is already loaded the models are registered at once; otherwise an
import hook registers them right after timm finishes loading.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any


def _register() -> None:
    if "stm_probe.models.registry" in sys.modules:
        return  # being imported (it imported timm): it registers the models itself when done
    importlib.import_module("stm_probe.models.registry")


class _AfterTimm(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps timm's loader so registration runs after timm executes."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module: Any) -> None:
            original(module)
            _register()

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def register_when_timm_loads() -> None:
    if "timm" in sys.modules:
        _register()
    elif not any(isinstance(f, _AfterTimm) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterTimm())
