"""One registry for every model stm-probe builds: the 20 unified backbones and any timm model.

`create_model` is the single entry point. Names and aliases of the unified models live in
`stm_probe.models.names` (plain Python); this module builds models. Building a unified model does
not import timm (about 1.5 s with torchvision); timm is loaded only for a timm architecture, a
misspelt name's suggestions or a glob, and whenever it is loaded (here, or already by the caller
when this module is imported) the unified models enter its registry, so
``timm.create_model("unified_swin_tiny", num_classes=10)`` works. A caller who imports timm only
later calls `register_with_timm()`. Imports go one way: registry -> checkpoint (which never imports
the registry).
"""
from __future__ import annotations

import difflib
import functools
import importlib
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..checkpoint import checkpoint_num_classes, is_computed_buffer, load_checkpoint, read_checkpoint
from ..errors import UsageError
from ..label_spaces import checkpoint_class_names, trained_summary, weights_label
from .stms import STM_RECORDS
from .input_size import check_input_size
from .layers import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from .names import (
    ALIAS_TO_NAME,
    STM_ALIASES,
    SUGGEST_CUTOFF,
    UNIFIED_MODELS,
    UNIFIED_SPECS,
    ModelSpec,
    is_glob,
    match_unified,
    release_stem,
    unified_spec,
    unified_suggestions,
)
from .unified import UnifiedNet

__all__ = [
    "ALIAS_TO_NAME", "STM_ALIASES", "UNIFIED_MODELS", "UNIFIED_SPECS", "ModelSpec", "block_class", "build_unified",
    "classifier_names", "create_model", "default_cfg", "expand_model_patterns", "guess_model", "list_specs",
    "register_with_timm", "release_stem", "resolve_name", "suggest_names",
]

def resolve_name(name: str) -> ModelSpec:
    """Canonical spec for a unified name or alias, or a timm architecture; UsageError if unknown.

    The error suggests up to three distinct close names (see `suggest_names`).
    """
    spec = unified_spec(name)
    if spec is not None:
        return spec
    if _timm().is_model(name):
        return ModelSpec(name, "timm", "-")
    close = suggest_names(name)
    hint = f"did you mean {', '.join(close)}?" if close else "run `stm-probe models` for the list"
    raise UsageError(f"unknown model '{name}': {hint}")


def suggest_names(name: str, limit: int = 3) -> list[str]:
    """Close matches for a misspelt model name, best first, one entry per model.

    A unified model appears once, by its canonical name, or as ``alias (canonical)`` when an
    alias is what the name resembles most; close timm architectures are ranked with them.
    """
    entries = [(score, 0, text) for score, text in unified_suggestions(name)]
    timm_names = [n for n in _timm().list_models() if n not in UNIFIED_SPECS]
    key = name.strip().lower()
    for match in difflib.get_close_matches(key, timm_names, n=limit, cutoff=SUGGEST_CUTOFF):
        entries.append((difflib.SequenceMatcher(None, key, match).ratio(), 1, match))
    entries.sort(key=lambda e: (-e[0], e[1]))  # unified first on ties
    return [text for _, _, text in entries[:limit]]


def expand_model_patterns(patterns: list[str]) -> list[str]:
    """Resolve names, aliases and globs (``unified_*_tiny``) to canonical names, in order, no repeats.

    A glob matching no unified model is matched against timm's architectures.
    """
    names: list[str] = []
    for pattern in patterns:
        if is_glob(pattern):
            resolved = match_unified(pattern) or _timm().list_models(pattern)
            if not resolved:
                raise UsageError(f"model pattern '{pattern}' matches no model: run `stm-probe models` for the list")
        else:
            resolved = [resolve_name(pattern).name]
        names.extend(n for n in resolved if n not in names)
    return names


def block_class(stm: str) -> type[nn.Module]:
    """The block class of an STM family (imported lazily from its record's ``"module:Class"``)."""
    module_name, class_name = STM_RECORDS[stm].block.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def default_cfg(spec: ModelSpec, num_classes: int = 1000) -> dict[str, Any]:
    """timm-style pretrained_cfg of a unified model (evaluation transform of the paper)."""
    return dict(
        architecture=spec.name, input_size=(3, 224, 224), crop_pct=0.875, interpolation="bicubic",
        mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, num_classes=num_classes,
        first_conv="downsample_layers.0.stem.0", classifier="head",
        file=f"{release_stem(spec)}.pth",
    )


def build_unified(name: str, **kwargs: Any) -> UnifiedNet:
    """Build a unified model (random init) by canonical name or alias; kwargs go to `UnifiedNet`."""
    spec = resolve_name(name)
    settings = STM_RECORDS[spec.stm].settings(spec.size)
    settings.update(kwargs)
    model = UnifiedNet(block=block_class(spec.stm), **settings)
    model.pretrained_cfg = default_cfg(spec, model.num_classes)
    model.default_cfg = model.pretrained_cfg
    return model


def _timm_entrypoint(name: str) -> Callable[..., nn.Module]:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(key, None)
        if pretrained:  # the release file, through stm-probe's cache
            return create_model(name, pretrained=True, **kwargs)
        return build_unified(name, **kwargs)

    entrypoint.__name__ = name
    entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"Unified backbone `{name}` (stm-probe)."
    return entrypoint


def register_with_timm() -> None:
    """Add the 20 unified models to timm's registry (idempotent); imports timm."""
    _timm()


def _timm() -> Any:
    """The timm module, imported on first use; the unified models are in its registry from then on."""
    import timm

    global _REGISTERED
    if not _REGISTERED:
        _REGISTERED = True
        register_new_models()
    return timm


def register_new_models() -> None:
    """Enter the unified models timm does not know yet in its registry, once timm is loaded
    (`stm_probe.models.stms.register_stm` calls this for a new STM)."""
    if not _REGISTERED:
        return
    import timm

    module = sys.modules[__name__]
    for name in UNIFIED_MODELS:
        if timm.is_model(name):
            continue
        fn = _timm_entrypoint(name)
        setattr(module, name, fn)
        timm.models.register_model(fn)


_REGISTERED = False


@functools.lru_cache(maxsize=None)
def _unified_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """State-dict shapes of a unified model (built once on the meta device), computed buffers left out."""
    with torch.device("meta"):
        state_dict = build_unified(name).state_dict()
    return {k: tuple(v.shape) for k, v in state_dict.items() if not is_computed_buffer(k)}


def guess_model(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """The unified model whose keys and shapes fit ``state_dict`` best, or None when none fits half of them."""
    shapes = {k: tuple(v.shape) for k, v in state_dict.items() if not is_computed_buffer(k)}
    best, best_score = None, 0.0
    for name in UNIFIED_MODELS:
        target = _unified_shapes(name)
        agree = sum(1 for k, s in target.items() if shapes.get(k) == s)
        score = agree / max(len(target), len(shapes))
        if score > best_score:
            best, best_score = name, score
    return best if best_score > 0.5 else None


def _create_timm(name: str, input_size: int | None, **kwargs: Any) -> nn.Module:
    """A timm model, random init; built for ``input_size`` when its constructor takes ``img_size``."""
    if input_size is not None and "img_size" not in kwargs:
        try:
            return _timm().create_model(name, pretrained=False, img_size=input_size, **kwargs)
        except TypeError as exc:  # the constructor has no img_size: the size is checked by a probe instead
            if "img_size" not in str(exc):
                raise
        except (ValueError, AssertionError, RuntimeError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise UsageError(f"{name} cannot be built for {input_size}x{input_size} images ({reason}): "
                             "use another --input-size") from None
    return _timm().create_model(name, pretrained=False, **kwargs)


def classifier_names(spec: ModelSpec) -> tuple[str, ...]:
    """Module names of a model's classifier, from its (pretrained) config: ``('head',)`` for the unified
    models, e.g. ``('fc',)`` or ``('head.fc',)`` for timm ones; () when timm has no config for it."""
    if spec.is_unified:
        return ("head",)
    cfg = _timm().models.get_pretrained_cfg(spec.name)
    classifier = getattr(cfg, "classifier", None) if cfg is not None else None
    if isinstance(classifier, str):
        return (classifier,)
    return tuple(c for c in classifier or () if isinstance(c, str))


def create_model(
    name: str,
    checkpoint: str | Path | None = None,
    checkpoint_key: str | None = None,
    strict: bool = True,
    min_loaded: float = 0.5,
    input_size: int | None = None,
    pretrained: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build a model by name (unified name, alias or any timm architecture), optionally load weights.

    Example: ``stm_probe.create_model("unified_tiny_attn", pretrained=True)`` (the released
    ``unified_pvt_tiny.pth``), ``stm_probe.create_model("unified_micro_conv", checkpoint="ckpt.pth")``.

    ``pretrained=True`` (unified models only) loads the model's released checkpoint, downloaded once into
    the cache (`stm_probe.models.release.fetch`; UsageError naming the URL and the manual path when it
    cannot be fetched). Nothing else is downloaded: timm models are built with ``pretrained=False``. With ``checkpoint``
    the weights are loaded safely (see `stm_probe.checkpoint.load_checkpoint`; ``strict=False``
    loads what fits, refusing files that hold less than ``min_loaded`` of the model's weights),
    and the model gets a ``stm_probe_weights`` attribute describing them (path, sha256, key used,
    loaded fraction); without, it is randomly initialised and ``stm_probe_weights`` says
    ``random-init``.

    ``input_size`` (pixels, square) is the size the model will see. A timm model whose
    constructor takes ``img_size`` (ViTs, ...) is built for it; a checkpoint made at another
    size then has position embeddings of another shape, which must be resized by the user (e.g.
    with ``timm.layers.resample_abs_pos_embed``) before loading. Unified models are always built
    at 224 (the released layout) and adapt in the forward to any multiple of 32. Either way the
    size is checked (`check_input_size`): UsageError naming the sizes the model takes.

    Without ``num_classes`` in ``kwargs``, a checkpoint's own class count is used (its
    ``'num_classes'`` entry, else the rows of its classifier weight; see
    `stm_probe.checkpoint.checkpoint_num_classes`), so a head trained for 8 classes loads as is;
    a given ``num_classes`` always wins.
    """
    spec = resolve_name(name)
    if pretrained:
        from .release import fetch

        if checkpoint is not None:
            raise UsageError(f"{name}: give pretrained=True or a checkpoint, not both")
        checkpoint = fetch(spec.name).path
    contents = None
    if checkpoint is not None:
        contents = read_checkpoint(checkpoint)
        if "num_classes" not in kwargs:
            classes = checkpoint_num_classes(contents, checkpoint, checkpoint_key, classifier_names(spec))
            if classes is not None:
                kwargs["num_classes"] = classes
    if spec.is_unified:
        model = build_unified(spec.name, **kwargs)
    else:
        model = _create_timm(spec.name, input_size, **kwargs)
    model.stm_probe_spec = spec
    model.stm_probe_weights = {"weights": "random-init"}
    if input_size is not None:
        check_input_size(model, input_size)
    if checkpoint is not None:
        model.stm_probe_weights = load_checkpoint(model, checkpoint, key=checkpoint_key, strict=strict,
                                                  min_loaded=min_loaded, guess=guess_model, contents=contents)
        trained = trained_summary(contents)  # a `stm-probe train` checkpoint says how it was trained
        names = checkpoint_class_names(contents)  # any checkpoint may name its classes
        if names is not None:
            model.stm_probe_weights["class_names"] = names
        if trained is not None:
            model.stm_probe_weights["trained"] = trained
            if model.stm_probe_weights["weights"] == "checkpoint":
                model.stm_probe_weights["weights"] = weights_label(trained)
    return model


def list_specs() -> list[ModelSpec]:
    """The 20 unified models in registry order."""
    return [UNIFIED_SPECS[n] for n in UNIFIED_MODELS]


if "timm" in sys.modules:  # the caller has timm loaded: the unified models enter its registry now
    register_with_timm()
