"""Static facts of the 20 unified models: parameter count and GMACs at 224x224.

Serves `stm-probe models` without building anything. The numbers were counted on the built
models (1000-class head) with `stm_probe.models.complexity.count_parameters` and `count_gmacs`
(multiply-accumulates of conv/linear/matmul for one 1x3x224x224 image; grid_sample, softmax and
norms not counted), and equal the original code's reference manifest. `tests/test_models.py`
rebuilds every model on the meta device and checks both numbers; `model_table(build=True)`
recounts them.
"""
from __future__ import annotations

from typing import NamedTuple


class ModelFacts(NamedTuple):
    """Size of one unified model with its 1000-class head."""

    params: int  # parameter elements
    gmacs_224: float  # 1e9 multiply-accumulates for one 224x224 image, 4 decimals


MODEL_FACTS: dict[str, ModelFacts] = {
    "unified_halo_micro": ModelFacts(4_389_672, 0.8606),
    "unified_halo_tiny": ModelFacts(31_523_176, 5.2976),
    "unified_halo_small": ModelFacts(52_831_336, 9.8099),
    "unified_halo_base": ModelFacts(93_327_336, 17.0297),
    "unified_pvt_micro": ModelFacts(4_454_056, 0.6121),
    "unified_pvt_tiny": ModelFacts(31_157_736, 4.7078),
    "unified_pvt_small": ModelFacts(50_887_656, 7.5512),
    "unified_pvt_base": ModelFacts(91_566_312, 13.1298),
    "unified_swin_micro": ModelFacts(4_381_042, 0.7005),
    "unified_swin_tiny": ModelFacts(31_540_546, 4.8829),
    "unified_swin_small": ModelFacts(52_867_666, 9.1332),
    "unified_swin_base": ModelFacts(93_388_576, 16.1275),
    "unified_convnext_micro": ModelFacts(4_439_624, 0.6481),
    "unified_convnext_tiny": ModelFacts(31_912_360, 4.9973),
    "unified_convnext_small": ModelFacts(54_393_640, 9.3879),
    "unified_convnext_base": ModelFacts(95_865_576, 16.6211),
    "unified_dcn_v3_micro": ModelFacts(4_302_692, 0.6364),
    "unified_dcn_v3_tiny": ModelFacts(29_933_272, 4.7858),
    "unified_dcn_v3_small": ModelFacts(50_082_280, 8.1733),
    "unified_dcn_v3_base": ModelFacts(97_465_192, 15.9967),
}


PUBLISHED_CSV = "published_numbers.csv"  # in stm_probe/resources/: the paper's ImageNet-1k top-1 at 224 px


def published_top1() -> dict[str, float]:
    """{canonical model name: published ImageNet-1k top-1 (percent, 224 px)} from the packaged CSV."""
    import csv
    from importlib.resources import files

    text = (files("stm_probe") / "resources" / PUBLISHED_CSV).read_text(encoding="utf-8")
    return {row["model"]: float(row["imagenet1k_top1"]) for row in csv.DictReader(text.splitlines())
            if row.get("imagenet1k_top1")}
