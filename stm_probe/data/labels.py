"""Label files for a flat folder of images (``--data ILSVRC2012_img_val --labels FILE``).

Three formats are read, recognised from their content:

* **devkit**: the ILSVRC2012 devkit's ``ILSVRC2012_validation_ground_truth.txt``: one ILSVRC2012
  class id (1..1000) per line, line *i* labelling ``ILSVRC2012_val_%08d`` (*i*). The ids follow
  the devkit's own class order (``meta.mat``, ``map_clsloc.txt``: id 1 = n02119789 kit fox), not
  the sorted-synset order models use: each id is mapped to its WordNet id with the table shipped
  in ``stm_probe/resources/ilsvrc2012_ids.json`` and then to the standard ImageNet-1k index (the
  rank of the synset among the 1000 sorted synsets; id 490 = n01751748 sea snake = index 65).
* **kaggle**: the ImageNet localisation challenge's ``LOC_val_solution.csv`` (header
  ``ImageId,PredictionString``); the first token of ``PredictionString`` is the image's synset.
* **csv**: ``filename,label`` rows (a header row is allowed). Labels are all integers (class
  indices of the model, taken as they are) or all ImageNet-1k synsets (mapped to the standard
  index). A file name is the image's path relative to the folder (or its bare name); a name
  without an image extension matches the image with that stem, whatever its extension.

The devkit and Kaggle files name images by stem (``ILSVRC2012_val_00000001``), so a folder
re-encoded as PNG is labelled too. The label file and the folder must describe the same images:
a label for an image the folder lacks, an image without a label, an id out of range, an unknown
synset or one name labelled twice with different labels is refused with one line
(:class:`~stm_probe.errors.UsageError`), so an image is never scored against a wrong or missing
label. (A subset of the validation set is chosen with ``--image-list`` or ``--num-images``, not by
copying part of the folder.)
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    from .source import ImageSource

__all__ = ["LabelTable", "apply_label_file", "ilsvrc2012_wnids", "imagenet_index", "read_label_file"]

ILSVRC2012_RESOURCE = "ilsvrc2012_ids.json"
_VAL_NAME = "ILSVRC2012_val_{:08d}"
_SYNSET_RE = re.compile(r"^n\d{8}$")
_INT_RE = re.compile(r"^\d+$")
_SIGNED_RE = re.compile(r"^-?\d+$")
#: no classifier has this many classes: a larger integer label is a mistake, refused before it overflows
MAX_LABEL = 10**7


def _printable(text: str | os.PathLike) -> str:
    """``text`` (or a path) as text that stays on one line (control characters escaped)."""
    text = os.fspath(text)
    return text if text.isprintable() else ascii(text)[1:-1]


def load_resource(name: str) -> dict:
    """A JSON file shipped in ``stm_probe/resources``."""
    return json.loads((resources.files("stm_probe") / "resources" / name).read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def ilsvrc2012_wnids() -> tuple[str, ...]:
    """The 1000 synsets in ILSVRC2012 id order: entry ``i - 1`` has ILSVRC2012_ID ``i``."""
    wnids = tuple(load_resource(ILSVRC2012_RESOURCE)["wnids"])
    if len(wnids) != 1000 or len(set(wnids)) != 1000:
        raise RuntimeError(f"{ILSVRC2012_RESOURCE} is damaged: {len(set(wnids))} distinct synsets, not 1000")
    return wnids


@lru_cache(maxsize=1)
@lru_cache(maxsize=1)
def imagenet_index() -> dict[str, int]:
    """ImageNet-1k synset -> standard class index 0..999 (sorted synsets, timm's ``ImageNetInfo``)."""
    from timm.data import ImageNetInfo

    return {s: i for i, s in enumerate(ImageNetInfo("imagenet-1k").label_names())}


@dataclass(frozen=True)
class LabelTable:
    """Labels read from a label file.

    ``by_name`` maps a file name (path relative to the folder, ``/`` separators) and ``by_stem``
    a name without extension to a label; ``space`` is ``"imagenet-1k"`` (standard indices) or
    ``"list"`` (integer labels taken as given); ``kind`` names the format for notes.
    """

    by_name: dict[str, int]
    by_stem: dict[str, int]
    space: str
    kind: str
    file: Path

    def __len__(self) -> int:
        return len(self.by_name) + len(self.by_stem)


def _read_lines(path: Path, flag: str) -> list[str]:
    from .textfiles import check_not_named_pipe

    check_not_named_pipe(path, flag)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise UsageError(f"{flag}: cannot read it as UTF-8 text ({reason}); pass the devkit's "
                         "ILSVRC2012_validation_ground_truth.txt, LOC_val_solution.csv or a filename,label CSV") from e
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not any(line and not line.startswith("#") for line in lines):
        raise UsageError(f"{flag}: the file holds no labels")
    return lines


def _content(lines: list[str]) -> list[str]:
    """Lines without blanks and ``#`` comments."""
    return [line for line in lines if line and not line.startswith("#")]


class _Collector:
    """Gathers ``key -> label`` pairs, refusing a key labelled twice with different labels."""

    def __init__(self, flag: str) -> None:
        self.flag = flag
        self.by_name: dict[str, int] = {}
        self.by_stem: dict[str, int] = {}

    def add(self, key: str, label: int, number: int, stem: bool) -> None:
        table = self.by_stem if stem else self.by_name
        old = table.setdefault(key, label)
        if old != label:
            raise UsageError(f"{self.flag}: '{_printable(key)}' is labelled twice ({old}, then {label} on line "
                             f"{number}); keep one label per image")


def _devkit(lines: list[str], flag: str) -> _Collector:
    wnids, index = ilsvrc2012_wnids(), imagenet_index()
    out = _Collector(flag)
    for number, line in enumerate(lines, 1):
        class_id = int(line)
        if not 1 <= class_id <= 1000:
            raise UsageError(f"{flag}: ILSVRC2012 id {class_id} on line {number} is out of range 1..1000: "
                             "pass the ILSVRC2012 devkit's ILSVRC2012_validation_ground_truth.txt")
        out.add(_VAL_NAME.format(number), index[wnids[class_id - 1]], number, stem=True)
    return out


def _synset_label(wnid: str, flag: str, number: int) -> int:
    index = imagenet_index()
    if wnid not in index:
        raise UsageError(f"{flag}: '{_printable(wnid)}' on line {number} is not an ImageNet-1k synset; "
                         "labels are ImageNet-1k synsets (n01440764 ...) or integer class indices")
    return index[wnid]


def _kaggle(lines: list[str], flag: str) -> _Collector:
    out = _Collector(flag)
    for number, row in enumerate(csv.reader(io.StringIO("\n".join(lines[1:]))), 2):
        if len(row) < 2 or not row[0].strip() or not row[1].split():
            raise UsageError(f"{flag}: line {number} is not 'ImageId,PredictionString' with a synset first")
        image_id, wnid = row[0].strip(), row[1].split()[0]
        stem, ext = os.path.splitext(image_id)
        if ext.lower() in (".jpeg", ".jpg", ".png"):  # an id written with its file's extension
            image_id = stem
        out.add(image_id, _synset_label(wnid, flag, number), number, stem=True)
    return out


def _is_header(row: list[str]) -> bool:
    label = row[1].strip() if len(row) > 1 else ""
    return not (_INT_RE.match(label) or _SYNSET_RE.match(label) or label.startswith("-"))


def _plain_csv(lines: list[str], flag: str) -> tuple[_Collector, str]:
    from .folders import IMG_EXTENSIONS

    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    start = 1 if rows and _is_header(rows[0]) else 0
    if start == len(rows):
        raise UsageError(f"{flag}: the file holds a header but no labels")
    labels = [(number, row) for number, row in enumerate(rows[start:], start + 1)]
    kinds = set()
    for number, row in labels:
        if len(row) != 2 or not row[0].strip():
            raise UsageError(f"{flag}: line {number} is not 'filename,label' (2 fields, got {len(row)}); "
                             "write one filename,label per line")
        value = row[1].strip()
        if _INT_RE.match(value):
            kinds.add("int")
        elif _SYNSET_RE.match(value):
            kinds.add("synset")
        else:
            raise UsageError(f"{flag}: label '{_printable(value)}' on line {number} is neither a class index "
                             "(0, 1, ...) nor an ImageNet-1k synset (n01440764)")
    if len(kinds) > 1:
        raise UsageError(f"{flag}: mixes integer labels and synsets; use one kind of label in the file")
    out = _Collector(flag)
    for number, row in labels:
        name, value = row[0].strip().replace("\\", "/"), row[1].strip()
        label = int(value) if "int" in kinds else _synset_label(value, flag, number)
        if label >= MAX_LABEL:
            raise UsageError(f"{flag}: label {value[:30]} on line {number} is not a class index (no model has "
                             f"{MAX_LABEL:,} classes); fix that line")
        out.add(name, label, number, stem=not name.lower().endswith(IMG_EXTENSIONS))
    return out, ("list" if "int" in kinds else "imagenet-1k")


def read_label_file(path: str | os.PathLike) -> LabelTable:
    """Read a label file in any of the three formats (see the module docstring)."""
    path = Path(path).expanduser()
    flag = f"--labels {_printable(os.fspath(path))}"
    if not path.is_file():
        raise UsageError(f"{flag}: no such file; pass the devkit's ILSVRC2012_validation_ground_truth.txt, "
                         "LOC_val_solution.csv or a filename,label CSV")
    raw = _read_lines(path, flag)
    lines = _content(raw)
    head = lines[0].replace(" ", "").lower()
    if head.startswith("imageid,predictionstring"):
        found, space, kind = _kaggle(lines, flag), "imagenet-1k", "Kaggle LOC_val_solution"
    elif all(_SIGNED_RE.match(line) for line in lines):
        if len(lines) != len(raw):  # line i labels image i: nothing may be skipped
            number = next(i for i, line in enumerate(raw, 1) if not _SIGNED_RE.match(line))
            raise UsageError(f"{flag}: line {number} of an ILSVRC2012 ground-truth file is not an id (line i labels "
                             "ILSVRC2012_val_i); pass the devkit's file unchanged")
        found, space = _devkit(lines, flag), "imagenet-1k"
        kind = "ILSVRC2012 devkit ids mapped to sorted-synset indices"
    else:
        (found, space), kind = _plain_csv(lines, flag), "filename,label CSV"
    return LabelTable(found.by_name, found.by_stem, space, kind, path)


def _relative_names(source: ImageSource) -> list[str]:
    root = os.path.abspath(source.root)
    return [os.path.relpath(p, root).replace(os.sep, "/") for p in source.paths]


def apply_label_file(source: ImageSource, labels_file: str | os.PathLike) -> ImageSource:
    """``source`` (a flat image folder) labelled from ``labels_file``; refuses any mismatch."""
    flag = f"--labels {_printable(os.fspath(labels_file))}"
    where = _printable(str(source.location))
    if source.kind == "imagefolder":
        raise UsageError(f"{flag}: --data {where} is labelled by its class folders already; drop --labels")
    if source.kind != "folder":
        raise UsageError(f"{flag}: --labels labels a flat folder of images (e.g. ILSVRC2012_img_val), "
                         f"not a {source.kind} source; pass the folder as --data")
    table = read_label_file(labels_file)
    names = _relative_names(source)
    stems: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        stems.setdefault(os.path.splitext(name)[0], []).append(i)
    lookup_name = {n: i for i, n in enumerate(names)}
    lookup_base = {}
    for i, name in enumerate(names):
        lookup_base.setdefault(name.rsplit("/", 1)[-1], []).append(i)

    labels = [-1] * len(names)
    missing: list[str] = []

    def assign(indices: list[int], key: str, label: int) -> None:
        if not indices:
            missing.append(key)
            return
        if len(indices) > 1:
            shown = ", ".join(_printable(names[j]) for j in indices[:2])
            raise UsageError(f"{flag}: '{_printable(key)}' matches {len(indices)} images ({shown}); "
                             "name each image with its extension in the label file")
        previous = labels[indices[0]]
        if previous >= 0 and previous != label:
            raise UsageError(f"{flag}: '{_printable(names[indices[0]])}' is labelled twice, {previous} and {label}; "
                             "keep one label per image in the label file")
        labels[indices[0]] = label

    root = os.path.abspath(source.root)
    for key, label in table.by_name.items():
        name = key
        if os.path.isabs(key):  # an absolute path names an image of --data by where it lies
            if os.path.commonpath([root, os.path.abspath(key)]) != root:
                raise UsageError(f"{flag}: '{_printable(key)}' lies outside --data {where}; write the paths relative "
                                 "to that folder (or the bare file names)")
            name = os.path.relpath(key, root).replace(os.sep, "/")
        assign([lookup_name[name]] if name in lookup_name else lookup_base.get(name, []), key, label)
    for key, label in table.by_stem.items():
        assign(stems.get(key, []), key, label)
    if missing:
        raise UsageError(f"{flag}: {len(missing)} of {len(table)} labelled images are not in {where} "
                         f"(first: {_printable(missing[0])}); pass the complete folder the labels belong to and "
                         "choose images with --image-list or --num-images, or label exactly the images you have")
    unlabelled = [names[i] for i, lab in enumerate(labels) if lab < 0]
    if unlabelled:
        raise UsageError(f"{flag}: {len(unlabelled)} of {len(names)} images in {where} have no label "
                         f"(first: {_printable(unlabelled[0])}); label every image or move the others out of "
                         "the folder")
    note = f"labels from {_printable(table.file.name)} ({table.kind})"
    return replace(source, labels=tuple(labels), label_space=table.space, notes=source.notes + (note,))
