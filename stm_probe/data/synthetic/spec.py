"""A split of the synthetic set (:class:`SyntheticSpec`), its ``--data`` text and its image source."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np
from PIL import Image

from ...errors import UsageError
from .defaults import (DEFAULT_CLASSES, DEFAULT_NUM_IMAGES, DEFAULT_SIZE, MAX_CLASSES, MAX_NUM_IMAGES, MAX_SIZE,
                       MIN_CLASSES, MIN_SIZE, PREFIX, SPLITS, render_side)
from .rendering import ImageParams, draw_params, render_params
from .shapes import SHAPES
from .textures import TEXTURES

_FILE_INDEX = re.compile(r"(\d+)")


@dataclass(frozen=True)
class SyntheticSpec:
    """One split of the synthetic set: ``num_images`` images, ``index`` 0 .. num_images - 1."""

    split: str = "val"
    classes: int = DEFAULT_CLASSES
    size: int = DEFAULT_SIZE
    seed: int = 0
    num_images: int = DEFAULT_NUM_IMAGES

    def __post_init__(self) -> None:
        where = f"--data {self.location}"
        if self.split not in SPLITS:
            raise UsageError(f"--data synthetic:{self.split}: unknown split; use one of {', '.join(SPLITS)}")
        if not MIN_CLASSES <= self.classes <= MAX_CLASSES:
            raise UsageError(f"{where}: classes={self.classes} is out of range; use {MIN_CLASSES}..{MAX_CLASSES}")
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise UsageError(f"{where}: size={self.size} is out of range; use {MIN_SIZE}..{MAX_SIZE} px")
        if self.seed < 0:
            raise UsageError(f"{where}: seed={self.seed} is negative; use a seed >= 0")
        if not 1 <= self.num_images <= MAX_NUM_IMAGES:
            raise UsageError(f"{where}: n={self.num_images} is out of range; use 1..{MAX_NUM_IMAGES}")

    @property
    def location(self) -> str:
        """The canonical ``--data`` text of the set (without ``n``, which only sets how many)."""
        return f"{PREFIX}:{self.split}?classes={self.classes}&size={self.size}&seed={self.seed}"

    @property
    def side(self) -> int:
        """Side in px of the rendered images (:func:`render_side`)."""
        return render_side(self.size)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The folder of each label: ``<k>-<shape>`` (``<k>-<texture>`` in texture-only), k two digits;
        sorted, they give the labels back (an exported ImageFolder reads with the same labels)."""
        names = [t.name for t in TEXTURES] if self.split == "texture-only" else list(SHAPES)
        return tuple(f"{k:02d}-{names[k]}" for k in range(self.classes))

    def with_split(self, split: str) -> "SyntheticSpec":
        """The same set (classes, size, seed, n) in another split."""
        return replace(self, split=split)

    def _check(self, index: int) -> int:
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} is outside 0..{self.num_images - 1} of {self.location}")
        return int(index)

    def label(self, index: int) -> int:
        """The label of image ``index``: its shape class (its texture class in ``texture-only``)."""
        return self._check(index) % self.classes

    def shape_label(self, index: int) -> int | None:
        """Shape class of image ``index`` (``None`` in ``texture-only``)."""
        return None if self.split == "texture-only" else self.label(index)

    def texture_label(self, index: int) -> int | None:
        """Texture class of image ``index`` (``None`` in ``shape-only``); differs from the shape in cue-conflict."""
        k = self.label(index)
        if self.split == "shape-only":
            return None
        if self.split == "cue-conflict":
            return (k + 1 + (index // self.classes) % (self.classes - 1)) % self.classes
        return k

    def params(self, index: int) -> ImageParams:
        """The generating parameters of image ``index``."""
        return draw_params(self.seed, self.split, self._check(index), self.size, self.shape_label(index),
                           self.texture_label(index))

    def render(self, index: int) -> np.ndarray:
        """Image ``index`` as ``uint8`` RGB (side, side, 3), side = ``int(size / 0.875)``."""
        return render_params(self.params(index), self.side)

    def image(self, index: int) -> Image.Image:
        """Image ``index`` as a PIL RGB image."""
        return Image.fromarray(self.render(index), "RGB")

    def relpath(self, index: int) -> str:
        """``<class folder>/<index>.png``; in cue-conflict ``<shape>/<shape><index>-<texture class><index>.png``,
        the texture class named by its class's shape (the cue-conflict probe's layout)."""
        if self.split == "cue-conflict":
            shape, texture = SHAPES[self.label(index)], SHAPES[self.texture_label(index)]
            return f"{shape}/{shape}{index:06d}-{texture}{index:06d}.png"
        return f"{self.class_names[self.label(index)]}/{index:06d}.png"

    def path(self, index: int) -> str:
        """The pseudo path of image ``index``: ``<location>/<relpath>``."""
        return f"{self.location}/{self.relpath(index)}"

    def index_of(self, path: str) -> int:
        """The image index in a pseudo path or exported file name (its first number)."""
        match = _FILE_INDEX.search(os.path.basename(path))
        if match is None:
            raise ValueError(f"{path} is not a synthetic image path")
        return self._check(int(match.group(1)))

    def notes(self) -> tuple[str, ...]:
        """What the labels mean, for the source description."""
        if self.split == "cue-conflict":
            return ("label = shape class; texture class in the file name (<shape><i>-<texture class><i>.png)",)
        if self.split == "texture-only":
            return ("label = texture class (the texture of that class in train)",)
        return ()


def is_synthetic(data: object) -> bool:
    """True if a ``--data`` value names the synthetic set (a string ``synthetic``, ``synthetic:...``
    or ``synthetic?...``). ``synthetic`` or ``synthetic?...`` while a file or folder ``./synthetic``
    exists is ambiguous: UsageError (``synthetic:val`` names the set, ``./synthetic`` the folder)."""
    if not (isinstance(data, str) and (data == PREFIX or data.startswith((PREFIX + ":", PREFIX + "?")))):
        return False
    if not data.startswith(PREFIX + ":") and os.path.lexists(PREFIX):
        raise UsageError(f"--data {data}: ambiguous, the working directory holds a '{PREFIX}' folder or file too; "
                         f"write {PREFIX}:val{data[len(PREFIX):]} for the synthetic set or ./{PREFIX} for the folder")
    return True


_OPTION_FIELDS = {"classes": "classes", "size": "size", "seed": "seed", "n": "num_images"}


def parse_spec(text: str) -> SyntheticSpec:
    """``synthetic[:<split>][?classes=K&size=S&seed=N&n=N]`` -> :class:`SyntheticSpec` (split default ``val``)."""
    if not is_synthetic(text):
        raise UsageError(f"--data {text}: not a synthetic set; write synthetic:<split>[?classes=K&size=S&seed=N&n=N]")
    head, _, query = text.partition("?")
    split = head[len(PREFIX) + 1:] if head != PREFIX else "val"
    if split not in SPLITS:
        raise UsageError(f"--data {text}: unknown split '{split}'; use one of {', '.join(SPLITS)}")
    values: dict[str, int] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in _OPTION_FIELDS:
            raise UsageError(f"--data {text}: unknown option '{key}'; use {', '.join(_OPTION_FIELDS)}")
        if not re.fullmatch(r"\d+", value):
            raise UsageError(f"--data {text}: {key}={value} is not a non-negative integer")
        values[_OPTION_FIELDS[key]] = int(value)
    return SyntheticSpec(split=split, **values)


def synthetic_source(spec: SyntheticSpec | str):
    """The :class:`~stm_probe.data.ImageSource` of a split: every image, labelled, rendered on the fly."""
    from ..source import ImageSource

    if isinstance(spec, str):
        spec = parse_spec(spec)
    n, k = spec.num_images, spec.classes
    # spec.path(i) without the per-image checks: a million paths in about a second
    if spec.split == "cue-conflict":
        names = SHAPES[:k]
        paths = tuple(f"{spec.location}/{names[i % k]}/{names[i % k]}{i:06d}-"
                      f"{names[(i % k + 1 + (i // k) % (k - 1)) % k]}{i:06d}.png" for i in range(n))
    else:
        folders = [f"{spec.location}/{name}/" for name in spec.class_names]
        paths = tuple(f"{folders[i % k]}{i:06d}.png" for i in range(n))
    return ImageSource(
        paths=paths,
        labels=tuple(i % k for i in range(n)),
        kind="synthetic",
        location=Path(spec.location),
        class_names=spec.class_names,
        label_space="synthetic",
        notes=spec.notes(),
        synthetic=spec,
    )
