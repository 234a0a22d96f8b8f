"""Plain-PyTorch replacements for the compiled operators of the original code."""
from .dcnv3 import (
    dcnv3_base_grid,
    dcnv3_core,
    dcnv3_from_offsets,
    dcnv3_reference_points,
    dcnv3_sampling_locations,
)

__all__ = [
    "dcnv3_base_grid",
    "dcnv3_core",
    "dcnv3_from_offsets",
    "dcnv3_reference_points",
    "dcnv3_sampling_locations",
]
