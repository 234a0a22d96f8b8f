"""The table of unified models (`stm-probe models`): name, STM, size, parameters, GMACs at 224, the paper's
top-1, aliases.

Served from static facts (`stm_probe.models.facts`): importing this module and building the
table needs neither torch nor timm. ``build=True`` recounts on models built on the meta device
(imports torch, the registry and torch's flop counter then).
"""
from __future__ import annotations

from typing import Any

from .facts import MODEL_FACTS
from .names import STM_ALIASES, ModelSpec, release_stem, select_unified

COLUMNS = ("name", "stm", "size", "params", "gmacs_224", "published_top1", "aliases")
_HEADERS = ("model", "STM", "size", "params", "GMACs@224", "top-1 (paper)", "aliases")


def display_aliases(spec: ModelSpec) -> list[str]:
    """The aliases worth listing: the release-file stem (if it differs) and ``unified_<size>_<stm>``."""
    stem = release_stem(spec)
    short = [f"unified_{spec.size}_{alias}" for alias, stm in STM_ALIASES.items() if stm == spec.stm]
    return ([stem] if stem != spec.name else []) + short


def model_table(patterns: list[str] | None = None, build: bool = False) -> list[dict[str, Any]]:
    """One row per unified model matching ``patterns`` (names, aliases, globs; all 20 for None), in registry order.

    Rows: name, stm, size, params (int), gmacs_224 (float, 4 decimals), published_top1 (the paper's ImageNet-1k
    top-1 at 224, percent), aliases (space-separated).
    From the static facts, or with ``build=True`` counted on each model built on the meta device
    (about half a second per model). UsageError for a pattern matching no unified model.
    """
    specs = select_unified(patterns)
    # a registered STM has no static facts: its models are counted as with build=True
    counts = {s.name: MODEL_FACTS[s.name] for s in specs if not build and s.name in MODEL_FACTS}
    counts.update(_recount([s.name for s in specs if s.name not in counts]))
    from .facts import published_top1

    top1 = published_top1()
    return [dict(name=s.name, stm=s.stm, size=s.size, params=counts[s.name][0], gmacs_224=counts[s.name][1],
                 published_top1=top1.get(s.name), aliases=" ".join(display_aliases(s))) for s in specs]


def _recount(names: list[str]) -> dict[str, tuple[int, float]]:
    """(params, GMACs at 224 rounded to 4 decimals) of each model, built on the meta device."""
    if not names:
        return {}
    import torch

    from .complexity import count_gmacs, count_parameters
    from .registry import build_unified

    counts = {}
    for name in names:
        with torch.device("meta"):
            model = build_unified(name)
        counts[name] = (count_parameters(model), round(count_gmacs(model), 4))
    return counts


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rows of `model_table` as aligned text columns under a header line (parameters with thousands separators)."""
    cells = [[f"{r[k]:,}" if k == "params" else str(r[k]) for k in COLUMNS] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(_HEADERS)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(_HEADERS, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip() for c in cells]
    return "\n".join(lines)
