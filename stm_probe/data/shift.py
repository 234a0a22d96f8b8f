"""Distribution-shift test sets as ``--data`` sources that know their label spaces.

``--data NAME:PATH`` with NAME one of

* ``imagenet-v2``: ImageNet-V2 (Recht et al., ICML 2019) as distributed: integer class folders
  ``0/ .. 999/`` holding the standard ImageNet-1k index of their images;
* ``imagenet-sketch``: ImageNet-Sketch (Wang et al., NeurIPS 2019): one folder per ImageNet-1k
  synset (1000 classes);
* ``imagenet-r``: ImageNet-R (Hendrycks et al., ICCV 2021) and ``imagenet-a``: ImageNet-A
  (Hendrycks et al., CVPR 2021): synset folders of a 200-class subset of ImageNet-1k.

For R and A the model's 1000 logits are restricted to the 200 classes before the argmax, as the
datasets' authors evaluate them: the source carries ``class_subset`` (the sorted ImageNet-1k
indices of the 200 classes), its labels are positions in that subset (0..199), and the session
wraps every model with :class:`stm_probe.models.label_space.ClassSubset`, so a model has 200
outputs and every probe scores within the subset. The class lists are facts from the datasets'
repositories, shipped in ``stm_probe/resources/imagenet_{r,a}_classes.json``.

Without a prefix, an ImageFolder tree whose synset folders are exactly the ImageNet-R (or -A)
classes is recognised as that set (the two lists differ, so this is unambiguous) and noted in
the manifest; every other tree keeps its plain ImageNet-1k labels.
"""
from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError
from .labels import _printable, imagenet_index, load_resource

if TYPE_CHECKING:
    from .source import ImageSource

__all__ = ["SHIFT_SETS", "class_subset", "recognise", "shift_source", "split_prefix"]

#: prefix -> (display name, class-list resource or None for the 1000 ImageNet-1k classes)
SHIFT_SETS: dict[str, tuple[str, str | None]] = {
    "imagenet-v2": ("ImageNet-V2", None),
    "imagenet-sketch": ("ImageNet-Sketch", None),
    "imagenet-r": ("ImageNet-R", "imagenet_r_classes.json"),
    "imagenet-a": ("ImageNet-A", "imagenet_a_classes.json"),
}


def split_prefix(data: object) -> tuple[str, str] | None:
    """``'imagenet-r:/data/r'`` -> ``('imagenet-r', '/data/r')``; None without a known prefix."""
    if not isinstance(data, str) or ":" not in data:
        return None
    name, path = data.split(":", 1)
    return (name.lower(), path) if name.lower() in SHIFT_SETS else None


@lru_cache(maxsize=None)
def class_wnids(name: str) -> tuple[str, ...]:
    """The sorted synsets of a 200-class set (``imagenet-r`` / ``imagenet-a``)."""
    resource = SHIFT_SETS[name][1]
    if resource is None:
        raise ValueError(f"{name} uses all 1000 ImageNet-1k classes")
    wnids = tuple(load_resource(resource)["wnids"])
    index = imagenet_index()
    if len(set(wnids)) != 200 or list(wnids) != sorted(wnids) or any(w not in index for w in wnids):
        raise RuntimeError(f"{resource} is damaged: expected 200 sorted ImageNet-1k synsets")
    return wnids


def class_subset(name: str) -> tuple[int, ...]:
    """Sorted ImageNet-1k indices of a 200-class set: logits ``[:, class_subset]`` are its outputs."""
    index = imagenet_index()
    return tuple(index[w] for w in class_wnids(name))


def _subset_source(tree: ImageSource, name: str, note: str | None = None) -> ImageSource:
    """A synset-folder tree relabelled to positions in the 200-class subset of ``name``."""
    title = SHIFT_SETS[name][0]
    wnids = class_wnids(name)
    position = {w: i for i, w in enumerate(wnids)}
    outside = [c for c in tree.class_names if c not in position]
    if outside:
        raise UsageError(f"--data {name}:{_printable(str(tree.location))}: class folder '{_printable(outside[0])}' "
                         f"({len(outside)} in all) is not one of the 200 {title} classes; pass the {title} folder")
    index = imagenet_index()
    by_index = {index[w]: position[w] for w in wnids}
    labels = tuple(by_index[lab] for lab in tree.labels)
    notes = tree.notes + ((note,) if note else ()) + (
        f"logits restricted to the {len(wnids)} {title} classes before the argmax; labels 0..{len(wnids) - 1} "
        "are positions in that sorted list",)
    return replace(tree, labels=labels, label_space=name, notes=notes, class_subset=class_subset(name))


def _tree(name: str, path: str) -> ImageSource:
    from .folders import _folder_source

    title = SHIFT_SETS[name][0]
    root = Path(path).expanduser().absolute()
    if not root.is_dir():
        raise UsageError(f"--data {name}:{_printable(path)}: no such folder; pass the {title} folder")
    tree = _folder_source(root)
    if tree.kind != "imagefolder":
        raise UsageError(f"--data {name}:{_printable(path)}: holds no class folders; pass the {title} folder "
                         "(one subfolder per class)")
    return tree


def shift_source(name: str, path: str) -> ImageSource:
    """The source for ``--data NAME:PATH`` (see the module docstring)."""
    tree = _tree(name, path)
    title = SHIFT_SETS[name][0]
    where = f"--data {name}:{_printable(path)}"
    if name == "imagenet-v2":
        bad = [c for c in tree.class_names if not (c.isdigit() and int(c) < 1000)]
        if bad:
            raise UsageError(f"{where}: class folder '{_printable(bad[0])}' is not an integer 0..999; pass the folder "
                             "holding ImageNet-V2's 0/ 1/ ... 999/ folders")
        if tree.label_space != "folder-integer":  # e.g. 1/ and 01/: the folder number is no longer the label
            raise UsageError(f"{where}: two class folders name the same class number; keep one folder per class")
        return replace(tree, label_space=name)
    if tree.label_space != "imagenet-1k":
        raise UsageError(f"{where}: its class folders are not ImageNet-1k synsets (n01440764 ...); "
                         f"pass the {title} folder")
    if name == "imagenet-sketch":
        return replace(tree, label_space=name)
    return _subset_source(tree, name)


def recognise(source: ImageSource) -> ImageSource:
    """A synset tree whose folders are exactly the ImageNet-R or -A classes becomes that set."""
    if source.kind != "imagefolder" or source.label_space != "imagenet-1k":
        return source
    folders = set(source.class_names)
    for name in ("imagenet-r", "imagenet-a"):
        if folders == set(class_wnids(name)):
            title = SHIFT_SETS[name][0]
            note = (f"recognised as {title}: its class folders are exactly the 200 {title} classes "
                    f"(pass --data {name}:PATH to say so)")
            return _subset_source(source, name, note)
    return source


def describe_space(name: str) -> str:
    """The label-space phrase of :meth:`ImageSource.describe` for a shift set."""
    title = SHIFT_SETS[name][0]
    if name == "imagenet-v2":
        return f"{title}: labels = integer class folders (ImageNet-1k indices)"
    if name == "imagenet-sketch":
        return f"{title}: ImageNet-1k labels from synset folders"
    return f"{title}: 200-class subset of ImageNet-1k"

