"""``--checkpoint-dir DIR``: each selected model finds its own weights file in a folder.

A unified model accepts its release name (``unified_halonet_tiny.pth``, with the release stems
halonet / pvt / swin / convnext / internimage) and its canonical name (``unified_halo_tiny.pth``),
each optionally with the original trainer's ``-ema`` suffix (``unified_halonet_tiny-ema.pth``), as
``.pth``, ``.pt`` or ``.safetensors``; a timm model accepts ``<architecture>.pth`` / ``.pt`` /
``.safetensors``. Names are compared without regard to case. Only the folder's own entries are
searched (not subfolders). Two fitting files for one model (e.g. plain and ``-ema``) and a model
with none are refused in one line naming the files; an explicit ``--checkpoint NAME=PATH`` resolves
either (the session searches only the models without one).

Replicates (`seed_checkpoints`, for ``stm-probe compare``): files with a training-seed suffix,
``<name>_s<k>`` or ``<name>-seed<k>`` before the extension (``unified_halo_micro_s0.pth``,
``unified_halonet_micro-seed2.safetensors``), are several checkpoints of one model, in seed order.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import UsageError
from .names import release_stem, unified_spec

EXTENSIONS = (".pth", ".pt", ".safetensors")
EMA_SUFFIX = "-ema"
SEED_SUFFIX = re.compile(r"^(?P<base>.+?)[_-](?:s|seed)(?P<seed>\d+)$", re.IGNORECASE)


def stems(model: str) -> list[str]:
    """File stems a model's weights may have: release stem first, then the canonical name (unified);
    the architecture name (timm)."""
    spec = unified_spec(model)
    if spec is None:
        return [model]
    return list(dict.fromkeys([release_stem(spec), spec.name]))


def candidate_names(model: str) -> list[str]:
    """Every file name that counts as ``model``'s weights, e.g. ``unified_halonet_tiny-ema.safetensors``."""
    return [f"{stem}{ema}{ext}" for stem in stems(model) for ema in ("", EMA_SUFFIX) for ext in EXTENSIONS]


def expected_names(model: str) -> str:
    """The names a user should give the file, for messages: ``unified_halonet_tiny[-ema].pth|.pt|.safetensors
    or unified_halo_tiny[-ema].pth|...``."""
    endings = "|".join(EXTENSIONS)
    return " or ".join(f"{stem}[{EMA_SUFFIX}]{endings}" for stem in stems(model))


def find_checkpoints(models: list[str], folder: Path, missing_ok: bool = False) -> dict[str, str]:
    """{canonical model name: path} of each model's file in ``folder`` (see module docstring).

    UsageError (one line) when ``folder`` is not a folder, when a model has no file (unless
    ``missing_ok``: it is left out), or when several files fit one model.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UsageError(f"--checkpoint-dir {folder}: no such folder; pass the folder holding the .pth/.safetensors "
                         "files")
    entries: dict[str, list[Path]] = {}
    try:
        listing = sorted(folder.iterdir())
    except OSError as exc:
        raise UsageError(f"--checkpoint-dir {folder}: cannot list the folder ({exc.strerror}); check its "
                         "permissions") from None
    for entry in listing:
        entries.setdefault(entry.name.lower(), []).append(entry)
    found: dict[str, str] = {}
    for model in models:
        hits = [hit for name in candidate_names(model) for hit in entries.get(name.lower(), [])]
        if not hits and missing_ok:
            continue
        if not hits:
            raise UsageError(f"--checkpoint-dir {folder} holds no file for {model} (expected {expected_names(model)}): "
                             f"add it, pass --checkpoint {model}=PATH, or leave the model out")
        if len(hits) > 1:
            names = ", ".join(hit.name for hit in hits)
            raise UsageError(f"--checkpoint-dir {folder}: {len(hits)} files fit {model} ({names}); pick one with "
                             f"--checkpoint {model}=PATH (or move the others out)")
        if not hits[0].is_file():
            raise UsageError(f"--checkpoint-dir {folder}: {hits[0].name} (for {model}) is not a file; replace it with "
                             "the weights file")
        try:
            with open(hits[0], "rb"):
                pass
        except OSError as exc:
            raise UsageError(f"--checkpoint-dir {folder}: {hits[0].name} (for {model}) cannot be read "
                             f"({exc.strerror or type(exc).__name__}); check its permissions") from None
        found[model] = str(hits[0])
    return found


def checkpoints_from_dir(models: list[str], explicit: dict[str, str], folder: str | Path,
                         quiet: bool = False, missing_ok: bool = False) -> tuple[dict[str, str], list[str]]:
    """Files found in ``folder`` for the models without an explicit ``--checkpoint``, and one line per
    model saying which file it got (printed unless ``quiet``; the session keeps them as notes).
    ``missing_ok`` (with ``--pretrained``): a model without a file is left to the release download."""
    import sys

    found = find_checkpoints([m for m in models if m not in explicit], Path(folder), missing_ok=missing_ok)
    lines = [f"{model}: {path} (from --checkpoint-dir)" for model, path in found.items()]
    lines += [f"{model}: {explicit[model]} (--checkpoint, not --checkpoint-dir)" for model in models
              if model in explicit]
    if not quiet:
        for line in lines:
            print(f"stm-probe: {line}", file=sys.stderr)
    return found, lines


def seed_checkpoints(models: list[str], folder: str | Path) -> dict[str, list[str]]:
    """{model: [its file of seed k, in increasing k]} for the models with seed-suffixed files in ``folder``
    (module docstring); {} when no file carries a seed suffix. UsageError when ``folder`` cannot be listed or
    two files give one model the same seed."""
    folder = Path(folder).expanduser()
    try:
        listing = sorted(p for p in folder.iterdir() if p.is_file())
    except OSError as exc:
        raise UsageError(f"--checkpoint-dir {folder}: cannot list the folder ({exc.strerror}); check the path and "
                         "its permissions") from None
    seeded: dict[tuple[str, int], list[Path]] = {}
    for entry in listing:
        stem, ext = entry.stem, entry.suffix.lower()
        match = SEED_SUFFIX.match(stem) if ext in EXTENSIONS else None
        if match:
            seeded.setdefault((match["base"].lower(), int(match["seed"])), []).append(entry)
    found: dict[str, list[str]] = {}
    for model in models:
        bases = {f"{stem}{ema}".lower() for stem in stems(model) for ema in ("", EMA_SUFFIX)}
        files = {seed: paths for (base, seed), paths in seeded.items() if base in bases}
        for seed, paths in files.items():
            if len(paths) > 1:
                raise UsageError(f"--checkpoint-dir {folder}: {len(paths)} files are seed {seed} of {model} "
                                 f"({', '.join(p.name for p in paths)}); keep one")
        if files:
            found[model] = [str(files[seed][0]) for seed in sorted(files)]
    return found
