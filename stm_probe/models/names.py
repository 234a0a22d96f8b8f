"""Names of the 20 unified models and their aliases, in plain Python (no torch, no timm).

Canonical names follow the original code, ``unified_{halo,pvt,swin,convnext,dcn_v3}_{size}``;
aliases are the release-file stem (``unified_halonet_tiny``) and the short forms
``unified_<size>_<stm>`` / ``unified_<stm>_<size>`` with any short STM name (``attn``, ``conv``,
...). Light enough for the command line's fast paths (help, `stm-probe models`).
"""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import UsageError
from .configs import SIZES

if TYPE_CHECKING:
    from .stms import StmRecord

# STM family -> stem of its released checkpoint files (unified_<stem>_<size>.pth); filled from the records
RELEASE_STEMS: dict[str, str] = {}

# short STM names accepted in `unified_<size>_<stm>` (and as `unified_<stm>_<size>`) -> STM family
STM_ALIASES: dict[str, str] = {}

# canonical names of the unified models, STM-major in registration order (the paper's 20 first)
UNIFIED_MODELS: list[str] = []

SUGGEST_CUTOFF = 0.6  # difflib similarity from which a known name is suggested


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about a model name before building it."""

    name: str  # canonical name (unified) or the timm architecture name
    stm: str  # STM family for unified models, "timm" otherwise
    size: str  # micro/tiny/small/base, or "-" for timm models
    aliases: tuple[str, ...] = field(default=())

    @property
    def is_unified(self) -> bool:
        return self.stm != "timm"


def release_stem(spec: ModelSpec) -> str:
    """File stem of the released checkpoint, e.g. ``unified_halonet_tiny`` for unified_halo_tiny."""
    return f"unified_{RELEASE_STEMS[spec.stm]}_{spec.size}"


def _aliases(stm: str, size: str) -> tuple[str, ...]:
    names = {f"unified_{RELEASE_STEMS[stm]}_{size}"}
    names.update(f"unified_{size}_{short}" for short, full in STM_ALIASES.items() if full == stm)
    names.update(f"unified_{short}_{size}" for short, full in STM_ALIASES.items() if full == stm)
    names.discard(f"unified_{stm}_{size}")
    return tuple(sorted(names))


UNIFIED_SPECS: dict[str, ModelSpec] = {}
# every accepted spelling (canonical names included) -> canonical name
ALIAS_TO_NAME: dict[str, str] = {}


def add_family(record: "StmRecord") -> None:
    """Enter one STM family's models and spellings in the tables above (`stms.register_stm` calls this)."""
    RELEASE_STEMS[record.name] = record.release_stem
    STM_ALIASES.update({alias: record.name for alias in (*record.aliases, record.name)})
    for size in SIZES:
        if size in record.sizes:
            spec = ModelSpec(f"unified_{record.name}_{size}", record.name, size, _aliases(record.name, size))
            UNIFIED_SPECS[spec.name] = spec
            UNIFIED_MODELS.append(spec.name)
            ALIAS_TO_NAME.update({alias: spec.name for alias in (spec.name, *spec.aliases)})


def remove_family(record: "StmRecord") -> None:
    """Undo `add_family`."""
    gone = [name for name, spec in UNIFIED_SPECS.items() if spec.stm == record.name]
    for name in gone:
        del UNIFIED_SPECS[name]
        UNIFIED_MODELS.remove(name)
    for table in (STM_ALIASES, ALIAS_TO_NAME):
        for key in [k for k, v in table.items() if v == record.name or v in gone]:
            del table[key]
    RELEASE_STEMS.pop(record.name, None)


def normalise(name: str) -> str:
    """Lower case, '-' read as '_', surrounding blanks dropped."""
    return name.strip().lower().replace("-", "_")


def is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def unified_spec(name: str) -> ModelSpec | None:
    """The spec of a unified name or alias, or None."""
    canonical = ALIAS_TO_NAME.get(normalise(name))
    return UNIFIED_SPECS[canonical] if canonical else None


def match_unified(pattern: str) -> list[str]:
    """Canonical names of the unified models a name, alias or glob denotes, in registry order."""
    if is_glob(pattern):
        hits = {ALIAS_TO_NAME[a] for a in ALIAS_TO_NAME if fnmatch.fnmatchcase(a, normalise(pattern))}
        return [n for n in UNIFIED_MODELS if n in hits]
    spec = unified_spec(pattern)
    return [spec.name] if spec else []


def similarity(a: str, b: str) -> float:
    """difflib ratio of two names, also compared without a leading ``unified_`` (so 'pvt_tiny'
    is close to 'unified_pvt_tiny')."""
    bare = (a.removeprefix("unified_"), b.removeprefix("unified_"))
    return max(difflib.SequenceMatcher(None, a, b).ratio(), difflib.SequenceMatcher(None, *bare).ratio())


def unified_suggestions(name: str) -> list[tuple[float, str]]:
    """(similarity, text) of each unified model close to ``name``, best first, one entry per model.

    The text is the canonical name, or ``alias (canonical)`` when an alias is what ``name``
    resembles most (a canonical name wins ties).
    """
    key = normalise(name)
    best: dict[str, tuple[float, bool, str]] = {}  # canonical -> (score, is canonical, alias)
    for alias, canonical in ALIAS_TO_NAME.items():
        entry = (similarity(key, alias), alias == canonical, alias)
        if entry[0] >= SUGGEST_CUTOFF and entry[:2] > best.get(canonical, (0.0, False, ""))[:2]:
            best[canonical] = entry
    ranked = sorted(best.items(), key=lambda item: (-item[1][0], not item[1][1], UNIFIED_MODELS.index(item[0])))
    return [(score, alias if is_canonical else f"{alias} ({canonical})")
            for canonical, (score, is_canonical, alias) in ranked]


def select_unified(patterns: list[str] | None) -> list[ModelSpec]:
    """Specs of the unified models matching any of ``patterns`` (registry order; all 20 for none).

    UsageError (with a did-you-mean when a name is close) for a pattern matching none of them.
    """
    if not patterns:
        return list(UNIFIED_SPECS.values())
    wanted: set[str] = set()
    for pattern in patterns:
        names = match_unified(pattern)
        if not names:
            close = [text for _, text in unified_suggestions(pattern)[:3]]
            hint = f"did you mean {', '.join(close)}?" if close and not is_glob(pattern) else "try 'unified_*'"
            raise UsageError(f"'{pattern}' matches none of the 20 unified models: {hint}")
        wanted.update(names)
    return [spec for name, spec in UNIFIED_SPECS.items() if name in wanted]


def _enter_records() -> None:
    from .stms import STM_RECORDS

    for record in STM_RECORDS.values():
        add_family(record)


_enter_records()
