"""Models: the unified backbones, their STM blocks, and the one registry that builds every model."""
from .registry import (
    UNIFIED_MODELS,
    ModelSpec,
    build_unified,
    create_model,
    expand_model_patterns,
    list_specs,
    register_with_timm,
    resolve_name,
)
from .unified import UnifiedNet

__all__ = [
    "UNIFIED_MODELS", "ModelSpec", "UnifiedNet", "build_unified", "create_model",
    "expand_model_patterns", "list_specs", "register_with_timm", "resolve_name",
]
