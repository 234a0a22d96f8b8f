"""ImageNet-C folders as users have them: ``<root>/<corruption>/<severity 1-5>/<wnid>/<image>.JPEG``.

Also accepted: the download's family level (``<root>/<noise|blur|weather|digital|extra>/<corruption>/...``)
and a single corruption's folder (``<root>/gaussian_noise`` holding ``1/ ... 5/``). Every variant
(corruption, severity) must hold the same images (the same ``<wnid>/<image>`` relative paths).

The source's ``paths`` are the images of one reference variant (the first present, in the
benchmark's order), so the loop's loader reads real files; `ImageNetCSource.variant_paths` gives
the same images in another variant. Labels come from the wnid folders (the standard ImageNet-1k
indices, as for any synset-folder tree).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import UsageError
from .folders import _folder_source
from .labels import _printable
from .source import ImageSource

SEVERITY_NAMES = ("1", "2", "3", "4", "5")
FAMILY_NAMES = ("noise", "blur", "weather", "digital", "extra")
_SYNSET = re.compile(r"^n\d{8}$")


def _corruption_names() -> tuple[str, ...]:
    from .corruption_names import benchmark_corruptions, extra_corruptions

    return benchmark_corruptions() + extra_corruptions()


def _subdirs(folder: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []


def _severities(folder: Path) -> list[int]:
    """Severity folders (1-5) of a corruption folder; [] if any other folder is there."""
    names = _subdirs(folder)
    return [int(n) for n in names] if names and all(n in SEVERITY_NAMES for n in names) else []


def _corruption_folders(path: Path) -> tuple[dict[str, Path], list[str]]:
    """{corruption: its folder} found at ``path`` (or its family folders, or ``path`` itself), and the
    names of other folders there (ignored, reported)."""
    known = _corruption_names()
    if path.name in known and _severities(path):
        return {path.name: path}, []
    found: dict[str, Path] = {}
    ignored: list[str] = []
    for name in _subdirs(path):
        if name in known and _severities(path / name):
            found[name] = path / name
        elif name in FAMILY_NAMES:
            inner = {n: path / name / n for n in _subdirs(path / name) if n in known and _severities(path / name / n)}
            found.update(inner)
            if not inner:
                ignored.append(name)
        else:
            ignored.append(name)
    return found, ignored


def _has_shape(folder: Path) -> bool:
    """A corruption-shaped folder: its subfolders are all numbers, and one holds a synset folder."""
    names = _subdirs(folder)
    if not names or not all(n.isdigit() for n in names):
        return False
    return any(_SYNSET.match(n) for d in names for n in _subdirs(folder / d))


def is_imagenet_c(path: Path) -> bool:
    """True for a folder with the ImageNet-C shape (see the module docstring): at least one folder
    (named as one of the 19 corruptions or not) of number folders holding synset folders, at the top,
    under a family folder, or the folder itself. `imagenet_c_source` then validates it or refuses it;
    such a tree is never read as a plain ImageFolder."""
    path = Path(path)
    if not path.is_dir():
        return False
    if _has_shape(path) or bool(_corruption_folders(path)[0]):
        return True
    for name in _subdirs(path):
        if _has_shape(path / name) or (name in FAMILY_NAMES and any(_has_shape(path / name / n)
                                                                     for n in _subdirs(path / name))):
            return True
    return False


def _validate_shape(path: Path) -> None:
    """Refuse (one line) what is shaped like ImageNet-C but is not: an unknown corruption name (with
    did-you-mean), a severity folder outside 1-5."""
    from ..options import did_you_mean

    known = _corruption_names()
    where = f"--data {_printable(path)}"
    candidates = [(path.name, path)] if _has_shape(path) else []
    for name in _subdirs(path):
        if name in FAMILY_NAMES:
            candidates += [(n, path / name / n) for n in _subdirs(path / name) if _has_shape(path / name / n)
                           or n in known]
        elif _has_shape(path / name) or name in known:
            candidates.append((name, path / name))
    for name, folder in candidates:
        if name not in known:
            raise UsageError(f"{where} is shaped like ImageNet-C, but '{_printable(name)}' is not an ImageNet-C "
                             f"corruption{did_you_mean(name, known)}: rename or remove that folder")
        bad = [n for n in _subdirs(folder) if n not in SEVERITY_NAMES]
        if bad or not _subdirs(folder):
            what = f"folder '{_printable(bad[0])}', not a severity 1-5" if bad else "no severity folders"
            raise UsageError(f"{where}: {_printable(name)}/ holds {what}: an ImageNet-C corruption holds the "
                             "severity folders 1/ .. 5/ only; remove or rename it")


def _image_ids(root: str) -> set[str]:
    """``<wnid>/<file>`` of every image under a variant folder (links followed)."""
    from .folders import _is_image

    found: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = os.path.relpath(folder, root)
        found.update((name if rel == "." else f"{rel}/{name}").replace(os.sep, "/") for name in files
                     if _is_image(name))
    return found


def _check_same_images(path: Path, variants: list[tuple[str, int]], roots: list[str]) -> None:
    """Every variant must hold images, and the same ones (as ``<wnid>/<file>``, extension included)."""
    where = f"--data {_printable(path)}"
    reference: set[str] | None = None
    for (name, severity), root in zip(variants, roots):
        ids = _image_ids(root)
        if not ids:
            raise UsageError(f"{where}: {name}/{severity} holds no images: every ImageNet-C variant holds the same "
                             "images; complete it or remove that folder")
        if reference is None:
            reference, first = ids, (name, severity)
            continue
        if ids != reference:
            extra, lacking = sorted(ids - reference), sorted(reference - ids)
            what = (f"lacks {len(lacking)} image(s) of {first[0]}/{first[1]} (first: {_printable(lacking[0])})"
                    if lacking else f"holds {len(extra)} image(s) that {first[0]}/{first[1]} lacks (first: "
                    f"{_printable(extra[0])})")
            raise UsageError(f"{where}: {name}/{severity} {what}: every variant must hold the same images; "
                             "complete the tree or pass the variants that agree")


@dataclass(frozen=True)
class ImageNetCSource(ImageSource):
    """An ImageNet-C folder: ``paths``/``labels`` of the reference variant, and every variant present.

    ``variants``: the (corruption, severity) pairs present, in the benchmark's order;
    ``variant_roots``: the folder of each variant, in the same order; ``reference``: the variant
    whose files ``paths`` name.
    """

    variants: tuple[tuple[str, int], ...] = ()
    variant_roots: tuple[str, ...] = ()
    reference: tuple[str, int] = ("", 0)
    ignored: tuple[str, ...] = field(default=())

    @property
    def root(self) -> Path:
        """``--image-list`` ids are relative to a variant folder (``<wnid>/<image>``), as in ImageNet."""
        return Path(self.variant_root(*self.reference))

    def variant_root(self, corruption: str, severity: int) -> str:
        try:
            return self.variant_roots[self.variants.index((corruption, int(severity)))]
        except ValueError:
            raise UsageError(f"--data {_printable(self.location)} holds no {corruption}/{severity} folder") from None

    def relative_paths(self, indices: Sequence[int] | None = None) -> list[str]:
        """Paths of images ``indices`` (default all) relative to their variant folder."""
        root = self.variant_root(*self.reference)
        chosen = range(len(self.paths)) if indices is None else indices
        return [os.path.relpath(self.paths[int(i)], root) for i in chosen]

    def variant_paths(self, corruption: str, severity: int, indices: Sequence[int] | None = None) -> list[str]:
        """The files of images ``indices`` (default all) in variant (corruption, severity)."""
        root = self.variant_root(corruption, severity)
        return [os.path.join(root, rel) for rel in self.relative_paths(indices)]

    def severities_of(self, corruption: str) -> tuple[int, ...]:
        return tuple(s for c, s in self.variants if c == corruption)

    @property
    def corruptions(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c for c, _ in self.variants))

    def describe(self) -> str:
        severities = sorted({s for _, s in self.variants})
        extra = [f"{len(self.corruptions)} corruptions x severities {','.join(map(str, severities))}",
                 f"{len(self.class_names)} classes", "ImageNet-1k labels from synset folders", *self.notes]
        return f"ImageNet-C folder {_printable(self.location)} ({len(self)} images per variant, {'; '.join(extra)})"


def imagenet_c_source(path: Path) -> ImageNetCSource:
    """The `ImageNetCSource` of an ImageNet-C folder (UsageError, one line, for a folder that is not
    one, or whose reference variant is not a synset-folder tree)."""
    path = Path(path).expanduser().absolute()
    _validate_shape(path)
    folders, ignored = _corruption_folders(path)
    if not folders:
        raise UsageError(f"--data {_printable(path)} is not an ImageNet-C folder: expected "
                         "<corruption>/<severity 1-5>/<wnid>/<image>.JPEG")
    variants, roots = [], []
    for name in _corruption_names():
        if name in folders:
            for severity in _severities(folders[name]):
                variants.append((name, severity))
                roots.append(str(folders[name] / str(severity)))
    reference = variants[0]
    _check_same_images(path, variants, roots)
    base = _folder_source(Path(roots[0]))
    if base.label_space != "imagenet-1k":
        raise UsageError(f"--data {_printable(path)}: {_printable(roots[0])} does not hold ImageNet synset folders "
                         "(n01440764/ ...): an ImageNet-C variant is <wnid>/<image>.JPEG")
    notes = base.notes
    if ignored:
        notes += (f"folders that are not ImageNet-C corruptions ignored: {', '.join(_printable(n) for n in ignored[:3])}"
                  + (f" and {len(ignored) - 3} more" if len(ignored) > 3 else ""),)
    return ImageNetCSource(base.paths, base.labels, "imagefolder", path, base.class_names, base.label_space,
                           notes=notes, variants=tuple(variants), variant_roots=tuple(roots), reference=reference,
                           ignored=tuple(ignored))


class StoredView:
    """PIL image -> ``float32`` tensor ``(3, S, S)`` in [0, 1]: an ImageNet-C file as stored (already the
    224 x 224 centre crop), resized (bicubic) only when ``S`` or the file's size differs."""

    def __init__(self, input_size: int) -> None:
        self.input_size = int(input_size)

    def __call__(self, img: Any) -> Any:
        from .pixels import to_rgb_tensor

        return to_rgb_tensor(img, (self.input_size, self.input_size))

    def __repr__(self) -> str:
        return f"StoredView(as stored, bicubic to {self.input_size}x{self.input_size} if the size differs, [0,1])"
