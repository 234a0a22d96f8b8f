"""stm-probe: analyses of the spatial token mixers of modern vision backbones.

Importing the package registers the 20 unified backbones in timm's model registry.
"""
from .models import UNIFIED_MODELS, create_model, list_specs, register_with_timm, resolve_name

__version__ = "0.1.0"

register_with_timm()

__all__ = ["UNIFIED_MODELS", "__version__", "create_model", "list_specs", "resolve_name"]
