"""`cue-conflict`: shape vs texture decisions on cue-conflict images (Geirhos et al., ICLR 2019,
"ImageNet-trained CNNs are biased towards texture"; the model-vs-human benchmark, NeurIPS 2021).

Each image carries the shape of one of 16 categories and the texture of another, named
``<shape>/<shape><k>-<texture><m>.<ext>``. The model's softmax over its classes is aggregated
to the 16 categories by the MEAN probability of each category's class indices (the ImageNet-1k
indices in ``stm_probe/resources/cue_conflict_categories.json``, or ``--category-map``) and
the decision is the argmax. Images whose shape and texture categories agree are left out.

The same method runs on the synthetic set's ``cue-conflict`` split (``--data synthetic:cue-conflict``,
shape ``i`` filled with texture ``j != i``): the categories are its K shape classes, each the model's
own class index (a model trained on the synthetic set by `stm-probe train`), so the decision is the
argmax over the K logits, the shape cue the shape's class and the texture cue the texture's class.
Per image: ``shape_hit`` / ``texture_hit`` (1 if the decision is the shape / texture category).
Per model, overall (variant ``all``) and per shape category (variant = the category):

* ``shape_bias`` = shape hits / (shape hits + texture hits), a fraction in [0, 1], with the Wilson
  score interval over the decisions (`stm_probe.core.shape_bias`; never a point, also at 0 or all
  shape decisions); no row when no decision was the shape or the texture category (undefined);
* ``shape_hits`` / ``texture_hits``: the shape and texture hit rates over the cue-conflict images,
  in percent, with Wilson intervals.

``n_images`` counts the cue-conflict images; ``n_skipped`` on the ``all`` rows the images left
out because their shape and texture agree.
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ...core.shape_bias import shape_bias, shape_bias_interval
from ...data.synthetic.shapes import SHAPES
from ...errors import UsageError
from ..base import Extra, require_finite
from . import CUE_CONFLICT_NAME
from .base import BiasMethod, Key

RESOURCE = "cue_conflict_categories.json"
OVERALL = "all"
SHAPE = Extra("shape")  # the shape category per image (per-category rows); NaN where the hits are


@lru_cache(maxsize=1)
def imagenet_categories() -> dict[str, tuple[int, ...]]:
    """The 16 categories (alphabetical) -> their ImageNet-1k class indices (the shipped facts)."""
    text = (resources.files("stm_probe") / "resources" / RESOURCE).read_text(encoding="utf-8")
    return {name: tuple(indices) for name, indices in json.loads(text)["categories"].items()}


def categories() -> tuple[str, ...]:
    """The 16 category names in alphabetical order (the order of every 16-way vector)."""
    return tuple(imagenet_categories())


def read_category_map(path: str | Path) -> dict[str, tuple[int, ...]]:
    """``--category-map FILE``: a JSON object {category: [class index, ...]} naming exactly the 16
    categories, each with distinct non-negative integer indices. One-line UsageError otherwise."""
    flag = f"--category-map {path}"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{flag}: no such file; give a JSON file mapping the 16 categories to class indices") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = "is not valid JSON" if isinstance(exc, ValueError) else f"cannot be read ({type(exc).__name__})"
        raise UsageError(f"{flag} {reason}: write a JSON object {{category: [class indices]}}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{flag} holds a JSON {type(data).__name__}, not an object {{category: [class indices]}}")
    names = categories()
    missing, extra = [n for n in names if n not in data], sorted(set(data) - set(names))
    if missing or extra:
        what = f"lacks {', '.join(missing)}" if missing else f"has unknown categories {', '.join(extra)}"
        raise UsageError(f"{flag} {what}: map exactly the 16 categories {', '.join(names)}")
    mapping = {}
    for name in names:
        indices = data[name]
        if (not isinstance(indices, list) or not indices
                or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in indices)):
            raise UsageError(f"{flag}: '{name}' must map to a non-empty list of non-negative class indices, "
                             f"not {json.dumps(indices)[:40]}")
        if len(set(indices)) != len(indices):
            raise UsageError(f"{flag}: '{name}' lists a class index twice; list each index once")
        mapping[name] = tuple(indices)
    return mapping


def check_indices(mapping: dict[str, tuple[int, ...]], num_classes: int, model: str, source: str) -> None:
    """Every class index of ``mapping`` lies in 0..num_classes-1 (one-line UsageError otherwise)."""
    for name, indices in mapping.items():
        bad = [i for i in indices if i >= num_classes]
        if bad:
            raise UsageError(f"{source}: '{name}' lists class {bad[0]}, out of range for {model} ({num_classes} "
                             f"classes, 0..{num_classes - 1}): map the categories to this model's classes")


def category_matrix(mapping: dict[str, tuple[int, ...]], num_classes: int) -> torch.Tensor:
    """(num_classes, 16) float64 averaging matrix: column c holds 1/|indices of c| at c's indices,
    so ``probs @ matrix`` is each category's mean probability."""
    matrix = torch.zeros(num_classes, len(mapping), dtype=torch.float64)
    for column, indices in enumerate(mapping.values()):
        matrix[list(indices), column] = 1.0 / len(indices)
    return matrix


def category_probabilities(logits: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Logits (B, K) -> mean softmax probability of each category (B, 16), float64."""
    return logits.double().softmax(-1) @ matrix.to(logits.device)


def parse_name(path: str) -> tuple[str, str] | None:
    """(shape, texture) categories of ``<shape><k>-<texture><m>.<ext>``, lower case; None otherwise."""
    match = CUE_CONFLICT_NAME.match(Path(path).name)
    return (match.group(1).lower(), match.group(2).lower()) if match else None


def cue_indices(paths: tuple[str, ...] | list[str], names: tuple[str, ...] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Shape and texture category indices (B,) float64 of each path among ``names`` (default: the 16
    ImageNet categories); NaN where the name does not parse, names an unknown category, or shape ==
    texture (no cue conflict: left out)."""
    position = {name: float(i) for i, name in enumerate(names or categories())}
    shape = np.full(len(paths), np.nan)
    texture = np.full(len(paths), np.nan)
    for i, path in enumerate(paths):  # file names only; no tensor work
        parsed = parse_name(path)
        if parsed and parsed[0] != parsed[1] and parsed[0] in position and parsed[1] in position:
            shape[i], texture[i] = position[parsed[0]], position[parsed[1]]
    return shape, texture


def hits(decision: np.ndarray, shape: np.ndarray, texture: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """shape_hit, texture_hit (B,) float64: 1 / 0 where the 16-way ``decision`` is the shape / texture
    category, NaN where the image is left out (``shape`` NaN)."""
    keep = ~np.isnan(shape)
    shape_hit = np.where(keep, (decision == shape).astype(np.float64), np.nan)
    texture_hit = np.where(keep, (decision == texture).astype(np.float64), np.nan)
    return shape_hit, texture_hit


class CueConflict(BiasMethod):
    """Shape bias from 16-way decisions on cue-conflict images (see module docstring)."""

    name: ClassVar[str] = "cue-conflict"
    statistics: ClassVar[dict[str, str]] = {"shape_hit": "rate", "texture_hit": "rate"}
    figure: ClassVar[str | None] = "stm_probe.plots.bias_cue_conflict:plot_cue_conflict"
    skip_reason: ClassVar[str] = ("no image is a cue conflict (every name is <c><k>-<c><m> with the same category c, "
                                  "or not <shape><k>-<texture><m> with the 16 categories)")

    def __init__(self, config: Any, session: Any) -> None:
        super().__init__(config, session)
        self._custom: dict[str, tuple[int, ...]] | None = None
        self._matrices: dict[int, torch.Tensor] = {}

    def mapping(self) -> dict[str, tuple[int, ...]]:
        """--category-map when given (read once); on the synthetic set its K shape classes, each its own
        class index (the subjects `stm-probe train` makes); else the 16 categories' ImageNet-1k indices."""
        synthetic = self.synthetic()
        if synthetic is not None and self.config.category_map is None:
            return {name: (k,) for k, name in enumerate(SHAPES[:synthetic.classes])}
        if self.config.category_map is None:
            return imagenet_categories()
        if self._custom is None:
            self._custom = read_category_map(self.config.category_map)
        return self._custom

    def synthetic(self) -> Any:
        """The synthetic set's spec when the data is ``synthetic:cue-conflict``, else None."""
        spec = getattr(getattr(self.session, "source", None), "synthetic", None)
        return spec if spec is not None and spec.split == "cue-conflict" else None

    def names(self) -> tuple[str, ...]:
        """The categories of the decision, in the order of its vector."""
        return tuple(self.mapping())

    def check(self) -> list[str]:
        if self.config.category_map is not None:
            self.mapping()
        return []

    def check_model(self, model: Any) -> list[str]:
        self.matrix(model.num_classes, model.name)
        return []

    def matrix(self, num_classes: int, model: str) -> torch.Tensor:
        """The (num_classes, 16) averaging matrix for a model, validated once per class count."""
        if num_classes not in self._matrices:
            synthetic = self.synthetic()
            if synthetic is not None and self.config.category_map is None and num_classes != synthetic.classes:
                raise UsageError(f"cue-conflict: {model} has {num_classes} classes, not the {synthetic.classes} shape "
                                 f"classes of --data {self.session.source.location}: pass the --checkpoint of a model "
                                 f"trained on the synthetic set with {synthetic.classes} classes (stm-probe train)")
            if synthetic is None and self.config.category_map is None and num_classes != 1000:
                raise UsageError(f"cue-conflict: {model} has {num_classes} classes, not the 1000 ImageNet-1k classes "
                                 "the 16 categories refer to: pass --category-map FILE mapping them to its classes")
            source = ("synthetic shape classes" if synthetic is not None else "ImageNet-1k categories") \
                if self.config.category_map is None else f"--category-map {self.config.category_map}"
            check_indices(self.mapping(), num_classes, model, source)
            self._matrices[num_classes] = category_matrix(self.mapping(), num_classes)
        return self._matrices[num_classes]

    def measure(self, model: Any, batch: Any, repeat: int) -> dict[Key, np.ndarray]:
        shape, texture = cue_indices(batch.paths, self.names())
        with torch.no_grad():
            logits = model.net(batch.images.to(self.session.device))
        require_finite(logits, model.name)
        probs = category_probabilities(logits, self.matrix(logits.shape[-1], model.name))  # (B, 16)
        decision = probs.argmax(-1).cpu().numpy().astype(np.float64)
        shape_hit, texture_hit = hits(decision, shape, texture)
        # SHAPE (the shape category, for the per-category rows) is NaN wherever the hits are: an image left
        # out leaves no finite value, so a batch of such images only counts as not measured
        return {(OVERALL, None, None, "shape_hit"): shape_hit, (OVERALL, None, None, "texture_hit"): texture_hit,
                (OVERALL, None, None, SHAPE): shape}

    def summarise(self, values: dict[Key, np.ndarray], seed: int, n_boot: int) -> dict[Key, tuple]:
        from ...core.stats import summarise_values

        shape_hit = values[(OVERALL, None, None, "shape_hit")]
        texture_hit = values[(OVERALL, None, None, "texture_hit")]
        shape = values[(OVERALL, None, None, SHAPE)]
        kept = ~np.isnan(shape_hit)
        groups = [(OVERALL, kept, int((~kept).sum()))]
        groups += [(name, kept & (shape == i), 0) for i, name in enumerate(self.names()) if (shape == i).any()]
        out: dict[Key, tuple] = {}
        for variant, mask, skipped in groups:
            s, t = shape_hit[mask], texture_hit[mask]
            bias = shape_bias(s, t)
            if not np.isnan(bias):
                low, high = shape_bias_interval(s, t)
                out[(variant, None, None, "shape_bias")] = (bias, low, high, int(mask.sum()), skipped)
            for metric, per_image in (("shape_hits", s), ("texture_hits", t)):
                value, low, high, n = summarise_values(per_image, "rate")
                out[(variant, None, None, metric)] = (value, low, high, n, skipped)
        return out
