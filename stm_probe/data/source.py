"""The image source: an ordered list of image paths with labels, and what can be done to it.

:class:`ImageSource` (paths, labels, kind, label space) with its selections: the first ``N``
images (``take``), a seeded class-balanced subset (``balanced_subset``), the images of an id list
(``restrict``), and the label check against a model's number of classes. Building a source from
``--data`` lives in :mod:`stm_probe.data.resolve`.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Sequence, Union

from ..errors import UsageError
from .labels import _printable
from .shift import SHIFT_SETS, describe_space
from .textfiles import _read_id_list

if TYPE_CHECKING:
    from .synthetic import SyntheticSpec

_SYNSET_RE = re.compile(r"^n\d{8}$")

PathLike = Union[str, os.PathLike]
SourceKind = Literal["imagefolder", "folder", "list", "file", "synthetic"]


@dataclass(frozen=True)
class ImageSource:
    """An ordered list of image paths with integer labels (``-1`` = unknown).

    ``paths`` are absolute path strings; ``labels[i]`` belongs to ``paths[i]``. Folders are
    listed in sorted path order; a list file keeps its own line order. A synthetic source
    (``kind="synthetic"``) holds pseudo paths ``<location>/<class>/<index>.png`` and the
    ``synthetic`` split that renders them. ``class_subset`` (sorted ImageNet-1k indices, e.g. the
    200 ImageNet-R classes) means a model's logits are restricted to those classes and the
    labels are positions in the subset.
    """

    paths: tuple[str, ...]
    labels: tuple[int, ...]
    kind: SourceKind
    location: Path
    class_names: tuple[str, ...] = ()
    # "imagenet-1k", "folder-integer", "folder-index", "list", "synthetic" or None (unlabelled)
    label_space: str | None = None
    is_default: bool = False
    notes: tuple[str, ...] = field(default=())
    synthetic: SyntheticSpec | None = None
    class_subset: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def has_labels(self) -> bool:
        """True if at least one image has a known label (``>= 0``)."""
        return any(lab >= 0 for lab in self.labels)

    @property
    def root(self) -> Path:
        """The folder relative paths refer to: the folder itself, or the list file's folder."""
        return self.location if self.kind in ("imagefolder", "folder", "synthetic") else self.location.parent

    def take(self, num_images: int | None, spread_classes: bool = False, seed: int | None = None) -> "ImageSource":
        """The first ``num_images`` images (all if ``None`` or larger than the source).

        With ``spread_classes=True`` the order is first interleaved round-robin over labels
        (1st image of every class, then the 2nd, ...), so a small ``num_images`` taken from
        an ImageFolder tree covers many classes instead of only the first one. With ``seed``
        (``--subset-seed``) the ``num_images`` images are a seeded class-balanced subset instead
        (see :meth:`balanced_subset`).
        """
        if num_images is not None and num_images < 1:
            raise UsageError(f"number of images must be a positive integer, got {num_images}")
        if seed is not None and num_images is not None and num_images < len(self.paths):
            return self.balanced_subset(num_images, seed)
        order = list(range(len(self.paths)))
        if spread_classes:
            per_label: dict[int, list[int]] = {}
            for i, lab in enumerate(self.labels):
                per_label.setdefault(lab, []).append(i)
            groups = [per_label[k] for k in sorted(per_label)]
            order = [g[r] for r in range(max(map(len, groups), default=0)) for g in groups if r < len(g)]
        if num_images is not None:
            order = order[:num_images]
        if order == list(range(len(self.paths))):
            return self
        return self._select(order)

    def image_ids(self) -> list[str]:
        """Each image's path relative to :attr:`root` with ``/`` separators (its id in id lists)."""
        root = str(self.location) if self.kind == "synthetic" else os.path.abspath(self.root)
        prefix = root.rstrip(os.sep) + os.sep
        return [(p[len(prefix):] if p.startswith(prefix) else os.path.relpath(p, root)).replace(os.sep, "/")
                for p in self.paths]

    def balanced_subset(self, num_images: int, seed: int) -> "ImageSource":
        """``num_images`` images drawn class-balanced with ``seed`` (``--num-images N --subset-seed S``).

        Every image gets a key hashed from (seed, its id relative to :attr:`root`), and every label
        one from (seed, label); within a class images are taken in key order, and classes take
        turns in key order (the r-th image of every class before any class gives its (r+1)-th).
        So class counts differ by at most one (unless a class runs out), and the subset depends
        on the seed, the image ids and the labels only: not on the listing order, the folder's
        location or the model. Unlabelled images (``-1``) form one group (a seeded random
        subset). The result is in that round-robin order and records a note.
        """
        ids = self.image_ids()
        per_label: dict[int, list[int]] = {}
        for i, lab in enumerate(self.labels):
            per_label.setdefault(lab, []).append(i)
        for members in per_label.values():
            members.sort(key=lambda i: (_hash_key(seed, "image", ids[i]), ids[i]))
        classes = sorted(per_label, key=lambda lab: (_hash_key(seed, "class", lab), lab))
        order: list[int] = []
        for r in range(max(map(len, per_label.values()), default=0)):
            order.extend(per_label[c][r] for c in classes if r < len(per_label[c]))
            if len(order) >= num_images:
                break
        order = order[:num_images]
        counts = sorted({sum(1 for i in order if self.labels[i] == c) for c in classes} - {0})
        spread = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        used = len({self.labels[i] for i in order})
        note = (f"seeded class-balanced subset (--subset-seed {seed}): {len(order)} of {len(self)} images, "
                f"{used} classes, {spread} per class") if self.has_labels else \
            f"seeded random subset (--subset-seed {seed}): {len(order)} of {len(self)} unlabelled images"
        return self._select(order, note)

    def _select(self, order: Sequence[int], note: str | None = None) -> "ImageSource":
        notes = self.notes + ((note,) if note else ())
        return replace(
            self,
            paths=tuple(self.paths[i] for i in order),
            labels=tuple(self.labels[i] for i in order),
            notes=notes,
        )

    def restrict(self, ids_file: PathLike) -> "ImageSource":
        """Exactly the images named in ``ids_file``, in the file's order (``--image-list``).

        ``ids_file`` holds one image id per line (blank lines and ``#`` comments ignored), a
        path relative to :attr:`root` with forward slashes, as in RobustBench's ImageNet
        test-set list (``n01440764/ILSVRC2012_val_00000293.JPEG``); a bare file name is
        accepted when exactly one image of the source has it, and an absolute path matches
        itself. On a flat folder (``ILSVRC2012_img_val``) a ``<synset>/<name>`` id matches the
        image ``<name>``, and with ImageNet-1k labels from ``--labels`` the synset must agree with
        the image's label. An id listed twice is kept once (the same image twice would count as two
        independent images). Raises :class:`UsageError` when an id
        matches no image (naming how many and the first) or several. Labels are kept; the
        source records a note, nothing else is stored.
        """
        ids_path = Path(ids_file).expanduser()
        flag = f"--image-list {_printable(ids_file)}"
        ids = _read_id_list(ids_path, flag)
        root = str(self.location) if self.kind == "synthetic" else os.path.abspath(self.root)
        by_rel: dict[str, int] = {}
        by_name: dict[str, list[int]] = {}
        for i, (p, rel) in enumerate(zip(self.paths, self.image_ids())):
            by_rel.setdefault(rel, i)
            by_name.setdefault(os.path.basename(p), []).append(i)
        by_abs = {os.path.normpath(p): i for i, p in reversed(list(enumerate(self.paths)))}

        order: list[int] = []
        missing: list[str] = []
        for id_ in ids:
            key = id_.replace("\\", "/")
            if os.path.isabs(id_):
                found = [by_abs[os.path.normpath(id_)]] if os.path.normpath(id_) in by_abs else []
            elif posixpath.normpath(key) in by_rel:
                found = [by_rel[posixpath.normpath(key)]]
            elif "/" not in key:
                found = by_name.get(key, [])
            elif self.kind == "folder" and _SYNSET_RE.match(key.split("/")[0]) and key.count("/") == 1:
                # RobustBench's 'n01440764/ILSVRC2012_val_00000293.JPEG' on the flat val folder
                found = by_name.get(key.split("/")[1], [])
                if len(found) == 1:
                    self._check_synset(key.split("/")[0], found[0], flag, id_)
            else:
                found = []
            if len(found) > 1:
                shown = ", ".join(_printable(self.paths[j]) for j in found[:2])
                raise UsageError(f"{flag}: '{_printable(id_)}' matches {len(found)} images ({shown}); "
                                 f"write its path relative to {_printable(root)}")
            if found:
                if found[0] not in order:
                    order.append(found[0])
            else:
                missing.append(id_)
        if missing:
            raise UsageError(
                f"{flag}: {len(missing)} of {len(ids)} listed images are not in {_printable(self.location)} "
                f"(first: {_printable(missing[0])}); pass the --data folder the ids are relative to"
            )
        repeated = len(ids) - len(order)
        note = f"restricted to the {len(order)} images listed in {_printable(ids_path.name)}" + (
            f" ({repeated} repeated id(s) dropped)" if repeated else "")
        return self._select(order, note)

    def _check_synset(self, wnid: str, i: int, flag: str, id_: str) -> None:
        """An id's synset folder must agree with the label image ``i`` got from ``--labels``."""
        if self.label_space != "imagenet-1k":
            return
        from .labels import imagenet_index

        if imagenet_index().get(wnid) != self.labels[i]:
            raise UsageError(f"{flag}: '{_printable(id_)}' names synset {wnid}, but its label is ImageNet-1k class "
                             f"{self.labels[i]}: the --labels file and the image list disagree; check both")

    def check_labels(self, num_classes: int, model: str) -> None:
        """Raise :class:`UsageError` if a label does not fit a model with ``num_classes`` outputs.

        Known labels must lie in ``0 .. num_classes - 1``; ``-1`` (unknown) is always allowed,
        anything below it is not. ``num_classes`` must be positive (a model without a
        classifier has no labels to check).
        """
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        bad = [i for i, lab in enumerate(self.labels) if lab >= num_classes or lab < -1]
        if not bad:
            return
        i = bad[0]
        more = f", and {len(bad) - 1} more" if len(bad) > 1 else ""
        fix = {"list": "list file", "imagefolder": "class folders", "folder": "--labels file",
               "synthetic": "classes= option of --data"}.get(self.kind, "--data")
        raise UsageError(
            f"label {self.labels[i]} in {_printable(self.location)} (image {_printable(self.paths[i])}{more}) "
            f"is out of range for {model} ({num_classes} classes, labels 0..{num_classes - 1}): fix the {fix}"
        )

    def describe(self) -> str:
        """One line naming the source, its layout, size and label space."""
        what = {
            "imagefolder": "ImageFolder tree",
            "folder": "image folder",
            "list": "image list",
            "file": "image file",
            "synthetic": "synthetic images",
        }[self.kind]
        if self.is_default:
            what = "embedded sample images"
        extra = []
        if self.kind in ("imagefolder", "synthetic"):
            extra.append(f"{len(self.class_names)} classes")
        if self.label_space in SHIFT_SETS:
            space = describe_space(self.label_space)
        else:
            space = {
                "imagenet-1k": "ImageNet-1k labels" + (" from synset folders" if self.kind == "imagefolder" else ""),
                "folder-integer": "labels = integer class-folder names",
                "folder-index": "labels = sorted class-folder index",
                "list": "labels from the list" if self.kind == "list" else "labels from a label file",
                "synthetic": "labels = synthetic classes",
                "mapped": "labels from --label-map",
                None: "unlabelled",
            }.get(self.label_space, str(self.label_space))
        extra.append(space)
        extra.extend(self.notes)
        return f"{what} {_printable(self.location)} ({len(self)} images, {'; '.join(extra)})"


def _hash_key(seed: int, *parts: object) -> int:
    """A 64-bit key from (seed, parts): the same on every machine and Python version."""
    text = "|".join(str(p) for p in (int(seed), "subset", *parts))
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")

