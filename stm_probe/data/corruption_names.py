"""ImageNet-C names: the shipped facts file and the benchmark / extra corruption lists.

Facts (``stm_probe/resources/imagenet_c.json``): the 15 benchmark corruptions, the 4 extra
(held-out) ones, the families and AlexNet's errors. The arithmetic on them lives in
:mod:`stm_probe.core.corruption_metrics`, which re-exports these names.
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any


@lru_cache(maxsize=1)
def imagenet_c_facts() -> dict[str, Any]:
    """The shipped ImageNet-C facts (see the module docstring)."""
    text = (resources.files("stm_probe") / "resources" / "imagenet_c.json").read_text(encoding="utf-8")
    return json.loads(text)


def benchmark_corruptions() -> tuple[str, ...]:
    """The 15 benchmark corruptions, in the paper's order."""
    return tuple(imagenet_c_facts()["corruptions"])


def extra_corruptions() -> tuple[str, ...]:
    """The 4 extra corruptions (speckle noise, Gaussian blur, spatter, saturate)."""
    return tuple(imagenet_c_facts()["extra_corruptions"])
