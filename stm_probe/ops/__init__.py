"""Plain-PyTorch replacements for the compiled operators of the original code."""
from .dcnv3 import (
    DCNV3_IMPL_ENV,
    DCNV3_IMPLS,
    dcnv3_base_grid,
    dcnv3_core,
    dcnv3_core_gather,
    dcnv3_core_reference,
    dcnv3_from_offsets,
    dcnv3_reference_points,
    dcnv3_sampling_locations,
    resolve_dcnv3_impl,
)

__all__ = [
    "DCNV3_IMPL_ENV",
    "DCNV3_IMPLS",
    "dcnv3_base_grid",
    "dcnv3_core",
    "dcnv3_core_gather",
    "dcnv3_core_reference",
    "dcnv3_from_offsets",
    "dcnv3_reference_points",
    "dcnv3_sampling_locations",
    "resolve_dcnv3_impl",
]
