"""The names of ImageNet-C's corruptions: the 19 in canonical order (the 15 of the benchmark, then the 4
extra ones), the groups ``--corruptions`` accepts, and which corruptions draw random numbers."""
from __future__ import annotations

from ..corruption_metrics import benchmark_corruptions, extra_corruptions


#: corruptions that draw random numbers (the others are deterministic functions of the image)
RANDOM_CORRUPTIONS = frozenset({"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur",
                                "motion_blur", "snow", "frost", "fog", "spatter", "elastic_transform"})
GROUPS = ("benchmark", "extra", "all")


def all_corruptions() -> tuple[str, ...]:
    """The 15 benchmark corruptions then the 4 extra ones."""
    return benchmark_corruptions() + extra_corruptions()


def corruption_list(text: str) -> tuple[str, ...]:
    """'--corruptions' text -> names in the canonical order: names and the groups 'benchmark' (the 15),
    'extra' (the 4 held-out ones) and 'all'; unknown names are kept for the choices check."""
    from ...options import name_list

    names = name_list(text)
    groups = {"benchmark": benchmark_corruptions(), "extra": extra_corruptions(), "all": all_corruptions()}
    chosen = {c for n in names for c in groups.get(n, (n,))}
    return tuple(c for c in all_corruptions() if c in chosen) + tuple(n for n in names if n not in groups
                                                                       and n not in all_corruptions())
