"""ImageNet-C facts and the corruption-error arithmetic (Hendrycks & Dietterich, ICLR 2019).

Facts (``stm_probe/resources/imagenet_c.json``, loaded by :mod:`stm_probe.data.corruption_names`): the 15
benchmark corruptions, the 4 extra (held-out) ones, the families (noise, blur, weather, digital) and
AlexNet's top-1 error per corruption averaged over the 5 severities, plus AlexNet's clean error.

Definitions, with E_{s,c} a model's top-1 error (fraction) at severity s of corruption c:

* CE_c = sum_s E_{s,c} / sum_s E^AlexNet_{s,c} = mean_s E_{s,c} / (AlexNet's average for c)
* relative CE_c = sum_s (E_{s,c} - E_clean) / sum_s (E^AlexNet_{s,c} - E^AlexNet_clean)
* mCE and relative mCE: the means of CE_c and relative CE_c over the 15 benchmark corruptions
  (`mean_corruption_error`, the one the corruption probe uses).

All four are reported in percent (AlexNet = 100). They are defined on all five severities:
the functions refuse (ValueError) a table that lacks one, or a corruption without a normaliser.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..data.corruption_names import benchmark_corruptions, extra_corruptions, imagenet_c_facts

# the ImageNet-C names live in stm_probe.data.corruption_names (layer 1) and are re-exported here
__all__ = ["SEVERITIES", "alexnet_clean_error", "alexnet_error", "benchmark_corruptions", "corruption_error",
           "extra_corruptions", "family_of", "imagenet_c_facts", "mean_corruption_error",
           "relative_corruption_error"]

SEVERITIES = (1, 2, 3, 4, 5)


def family_of(corruption: str) -> str:
    """'noise', 'blur', 'weather' or 'digital'."""
    for family, members in imagenet_c_facts()["families"].items():
        if corruption in members:
            return family
    raise KeyError(corruption)


def alexnet_error(corruption: str) -> float | None:
    """AlexNet's top-1 error on ``corruption`` averaged over the 5 severities (fraction); None for the
    extra corruptions, which have no published normaliser."""
    return imagenet_c_facts()["alexnet_error"].get(corruption)


def alexnet_clean_error() -> float:
    return float(imagenet_c_facts()["alexnet_clean_error"])


def _severity_errors(errors: Mapping[int, float] | Sequence[float], corruption: str) -> np.ndarray:
    """Errors (fractions) at severities 1..5 as an array (5,); ValueError if one is missing."""
    if isinstance(errors, Mapping):
        missing = [s for s in SEVERITIES if s not in errors]
        if missing:
            raise ValueError(f"{corruption}: CE needs all 5 severities, severity {missing[0]} is missing")
        errors = [errors[s] for s in SEVERITIES]
    values = np.asarray(errors, dtype=np.float64)
    if values.shape != (len(SEVERITIES),):
        raise ValueError(f"{corruption}: CE needs the errors at all 5 severities, got {values.size}")
    return values


def _normaliser(corruption: str) -> float:
    value = alexnet_error(corruption)
    if value is None:
        raise ValueError(f"{corruption} has no AlexNet normaliser (not one of the 15 benchmark corruptions)")
    return float(value)


def corruption_error(errors: Mapping[int, float] | Sequence[float], corruption: str) -> float:
    """CE_c in percent from the model's errors (fractions) at severities 1..5."""
    return 100.0 * float(_severity_errors(errors, corruption).mean()) / _normaliser(corruption)


def relative_corruption_error(errors: Mapping[int, float] | Sequence[float], clean_error: float,
                              corruption: str) -> float:
    """Relative CE_c in percent: the error above the model's own clean error, over AlexNet's."""
    gap = float(_severity_errors(errors, corruption).mean()) - float(clean_error)
    return 100.0 * gap / (_normaliser(corruption) - alexnet_clean_error())


def mean_corruption_error(ce: Mapping[str, float]) -> float:
    """mCE in percent from CE_c (`corruption_error`) by corruption, or relative mCE from relative CE_c:
    their mean over the 15 benchmark corruptions (other entries are ignored); ValueError when one is missing."""
    missing = [c for c in benchmark_corruptions() if c not in ce]
    if missing:
        raise ValueError(f"mCE needs the 15 benchmark corruptions, {missing[0]} is missing")
    return float(np.mean([ce[c] for c in benchmark_corruptions()]))
