"""Image sources, the evaluation transform and the batch loader used by the analyses.

``--data PATH`` accepts

* an ImageFolder tree (``root/<class>/.../<image>``): labels from the class folder names. If
  every class folder is an ImageNet-1k synset (``n01440764`` ...), the label is the standard
  ImageNet-1k class index (timm's ``ImageNetInfo``), so a tree holding any subset of the
  classes is labelled correctly; if every class folder name is a non-negative integer
  (ImageNet-V2's ``0/ 1/ ... 999/``), the label is that integer; otherwise the label is the
  folder's rank among the sorted class folders (torchvision ``ImageFolder`` convention);
* a flat folder of images: unlabelled, every label is ``-1``; with ``labels=FILE`` (``--labels``)
  labelled from the ILSVRC2012 devkit ground truth, Kaggle's ``LOC_val_solution.csv`` or a
  ``filename,label`` CSV (:mod:`stm_probe.data.labels`);
* ``imagenet-v2:PATH``, ``imagenet-sketch:PATH``, ``imagenet-r:PATH``, ``imagenet-a:PATH``: the
  distribution-shift test sets with their label spaces (:mod:`stm_probe.data.shift`; R and A are
  scored on their 200 classes: the source's ``class_subset``);
* a text file list: one image per line, ``path`` or ``path label``; relative paths are
  relative to the list file (to the working directory when the list is a pipe, as with
  ``--data <(ls imgs/*.png)``); blank lines and lines starting with ``#`` are ignored;
* a single image file;
* ``synthetic[:<split>][?classes=K&size=S&seed=N&n=N]``: the procedural shapes-and-textures set
  of :mod:`stm_probe.data.synthetic`, rendered on the fly (labels = its classes; ``synthetic``
  while a ``./synthetic`` folder exists is refused as ambiguous: write ``synthetic:val`` or
  ``./synthetic``);
* nothing (``None``): the embedded sample set in the repository's ``data/images/`` folder (16
  public-domain / CC0 photographs, unlabelled; see ``data/README.md``), or whatever
  ``$STM_PROBE_DATA`` points to.

Folders are scanned recursively and symbolic links are followed, but every real directory is
entered once (the first path reaching it, walking in sorted name order; a link back to an
enclosing folder is not followed) and every real file is listed once per class folder (under
the first of its paths in sorted order). :meth:`ImageSource.restrict` keeps only the images
named in an id list (RobustBench's ImageNet test set); :meth:`ImageSource.take` with a seed
draws a class-balanced subset that depends on the seed and the image names only;
:meth:`ImageSource.check_labels` checks the labels against a model's number of classes.

Pixels stay in [0, 1]: the dataset applies **no** mean/std normalisation. Batches are
``float32`` ``(B, 3, H, W)`` in [0, 1] and the model wrapper normalises with the model's own
mean/std, so analyses that perturb pixels (adversarial attacks, invariance transforms) work
in the natural pixel range. :func:`to_rgb_tensor` turns every PIL mode into RGB in [0, 1]
(16-bit images keep their precision; transparent pixels are composited on white; EXIF
orientation is not applied, as in torchvision and timm).

Unreadable files are never fatal: ``__getitem__`` reads lazily and only regular files (a FIFO,
device or directory is never opened for reading), a failure is turned into a sentinel, the
collate drops it, and :class:`ImageLoader` counts it in the main process (this also works with
``num_workers > 0``). After a pass, ``loader.skipped`` lists the skipped files and
``loader.skip_summary()`` gives the one-line report that callers print; the loader itself only
logs at debug level.
"""
from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import re
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator, Literal, NamedTuple, Sequence, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from ..errors import UsageError
from .labels import MAX_LABEL, _printable, imagenet_index
from .shift import SHIFT_SETS, describe_space

if TYPE_CHECKING:
    from .synthetic import SyntheticSpec

__all__ = [
    "ALPHA_BACKGROUND",
    "IMAGE_FORMATS",
    "IMG_EXTENSIONS",
    "Batch",
    "EvalTransform",
    "ImageDataset",
    "ImageLoader",
    "ImageSource",
    "ShortSideResize",
    "SkippedFile",
    "default_data_dir",
    "eval_transform",
    "make_loader",
    "resize_size",
    "resolve_source",
    "to_rgb_tensor",
]

_logger = logging.getLogger(__name__)

#: File suffixes (lower case) recognised as images when scanning folders (torchvision's list).
IMG_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

#: Decoders PIL may use, whatever the file's suffix says (a ``.jpg`` holding a PNG is read).
#: JPEG includes multi-picture (MPO) camera files. Other formats are refused, so a renamed EPS
#: file never reaches Ghostscript.
IMAGE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "PPM", "BMP", "TIFF", "WEBP", "GIF")

#: Environment variable that replaces the embedded sample set as the default source.
DATA_ENV_VAR = "STM_PROBE_DATA"

DEFAULT_CROP_PCT = 0.875
_SYNSET_RE = re.compile(r"^n\d{8}$")
_INTEGER_RE = re.compile(r"^\d+$")

PathLike = Union[str, os.PathLike]
SourceKind = Literal["imagefolder", "folder", "list", "file", "synthetic"]
TransformMode = Literal["center", "warp"]


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


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


def default_data_dir() -> Path:
    """The embedded sample set: ``<repo>/data/images`` beside the ``stm_probe`` package."""
    return Path(__file__).resolve().parents[2] / "data" / "images"


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def _list_dir(folder: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Non-hidden subfolders and image entries of ``folder``, sorted by name.

    Subfolders are entries that are (or link to) directories. Image entries are every other
    image-named entry, regular file or not (FIFOs and broken links are listed; the loader
    skips them), as ``(path, real path)``. Raises ``OSError`` if the folder cannot be read.
    """
    real_folder = os.path.realpath(folder)
    subdirs: list[str] = []
    images: list[tuple[str, str]] = []
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if e.name.startswith("."):
            continue
        try:
            is_dir = e.is_dir()  # follows links
        except OSError:
            is_dir = False
        if is_dir:
            subdirs.append(e.path)
        elif _is_image(e.name):
            images.append((e.path, os.path.realpath(e.path) if e.is_symlink() else os.path.join(real_folder, e.name)))
    return subdirs, images


def _unique_files(found: list[tuple[str, str]]) -> list[str]:
    """Paths sorted, each real file kept once (its first path in sorted order)."""
    seen: set[str] = set()
    unique: list[str] = []
    for path, real in sorted(found):
        if real not in seen:
            seen.add(real)
            unique.append(path)
    return unique


def _scan_images(folder: Path, exclude: Sequence[str] = ()) -> list[str]:
    """Image files under ``folder`` (recursive, follows links, skips hidden), sorted.

    Each real directory is entered once, walking depth-first in sorted name order (so a link
    loop ends at once); directories whose real path is in ``exclude`` (the tree's root) are
    not entered. Each real file is listed once. Unreadable subfolders are passed over.
    """
    seen_dirs = {os.path.realpath(d) for d in exclude}
    found: list[tuple[str, str]] = []
    stack = [str(folder)]
    while stack:
        d = stack.pop()
        real = os.path.realpath(d)
        if real in seen_dirs:
            continue
        seen_dirs.add(real)
        try:
            subdirs, images = _list_dir(d)
        except OSError:
            continue
        found.extend(images)
        stack.extend(reversed(subdirs))
    return _unique_files(found)


def _class_index(names: list[str], all_dirs: list[str]) -> tuple[dict[str, int], str, tuple[str, ...]]:
    """Label of every class folder, the label space and notes (see the module docstring)."""
    if all(_SYNSET_RE.match(n) for n in names):
        synsets = imagenet_index()
        if all(n in synsets for n in names):
            return {n: synsets[n] for n in names}, "imagenet-1k", ()
        unknown = [n for n in names if n not in synsets]
        note = f"synset folders not in ImageNet-1k ({', '.join(unknown[:3])}); using sorted folder index"
        return {n: all_dirs.index(n) for n in names}, "folder-index", (note,)
    if all(_INTEGER_RE.match(n) for n in names):
        values = {n: int(n) for n in names}
        if len(set(values.values())) == len(values):
            return values, "folder-integer", ()
        note = "integer class folders name the same number twice; using sorted folder index"
        return {n: all_dirs.index(n) for n in names}, "folder-index", (note,)
    return {n: all_dirs.index(n) for n in names}, "folder-index", ()


def _folder_source(root: Path) -> ImageSource:
    try:
        subdirs, top = _list_dir(str(root))
    except OSError as e:
        raise UsageError(
            f"--data {_printable(root)}: cannot read the folder ({e.strerror}); check its permissions"
        ) from e
    top_images = _unique_files(top)
    for d in subdirs:  # a class folder that cannot be read would silently lose its class
        try:
            with os.scandir(d):
                pass
        except OSError as e:
            raise UsageError(f"--data {_printable(root)}: class folder {_printable(os.path.basename(d))} cannot be "
                             f"read ({e.strerror or type(e).__name__}); check its permissions") from None
    class_files = {os.path.basename(d): _scan_images(Path(d), exclude=(str(root),)) for d in subdirs}
    class_files = {k: v for k, v in class_files.items() if v}

    if class_files and top_images:
        raise UsageError(
            f"--data {_printable(root)}: holds both image files and class subfolders "
            f"({', '.join(_printable(n) for n in list(class_files)[:3])}); "
            "use a folder of class subfolders only (ImageFolder), images only, or a list file"
        )
    if top_images:
        return ImageSource(tuple(top_images), (-1,) * len(top_images), "folder", root)
    if not class_files:
        raise UsageError(
            f"--data {_printable(root)}: no images found ({', '.join(IMG_EXTENSIONS)}); "
            "pass a folder of images, an ImageFolder tree or a text file list"
        )

    names = sorted(class_files)
    class_index, space, notes = _class_index(names, sorted(os.path.basename(d) for d in subdirs))
    paths: list[str] = []
    labels: list[int] = []
    for n in names:
        paths.extend(class_files[n])
        labels.extend([class_index[n]] * len(class_files[n]))
    return ImageSource(tuple(paths), tuple(labels), "imagefolder", root, tuple(names), space, notes=notes)


def check_not_named_pipe(path: Path, flag: str) -> None:
    """Refuse a named pipe (FIFO) given as a file to read: opening it waits for a writer forever. A
    pipe from process substitution (``--data <(ls imgs/*.png)``, under /dev/fd or /proc) is read."""
    try:
        is_fifo = stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return
    if is_fifo and not str(path).startswith(("/dev/fd/", "/proc/")):
        raise UsageError(f"{flag} is a named pipe (FIFO), not a text file: reading it would wait for a writer; give a "
                         "regular file")


def _read_text_lines(path: Path, flag: str, what: str) -> list[str]:
    """Non-blank, non-comment lines of a UTF-8 text file (a BOM is ignored), stripped."""
    check_not_named_pipe(path, flag)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise UsageError(f"{flag}: cannot read it as a UTF-8 text list ({reason}); {what}") from e
    if "\x00" in text:
        raise UsageError(f"{flag}: cannot read it as a UTF-8 text list (it holds NUL bytes: a binary file); {what}")
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _read_id_list(path: Path, flag: str) -> list[str]:
    ids = _read_text_lines(path, flag, "pass a text file with one image id (path relative to --data) per line")
    if not ids:
        raise UsageError(f"{flag}: the list names no images; write one image path (relative to --data) per line")
    return ids


def _list_source(list_file: Path) -> ImageSource:
    lines = _read_text_lines(
        list_file,
        f"--data {_printable(list_file)}",
        "pass an image folder, an ImageFolder tree, or a text file with one 'path [label]' per line",
    )
    # a pipe (--data <(ls imgs/*.png)) lives in /dev/fd: its relative paths mean the cwd
    base = list_file.parent if list_file.is_file() else Path.cwd()
    paths: list[str] = []
    labels: list[int] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        label = -1
        parts = line.rsplit(maxsplit=1)
        if len(parts) == 2 and re.fullmatch(r"-?\d+", parts[1]):
            line, label = parts[0], int(parts[1])
            if label < 0:
                raise UsageError(f"--data {_printable(list_file)}: label {label} on line {number} is negative: labels "
                                 "are class indices 0, 1, ...; leave the label out for an unlabelled image")
            if label >= MAX_LABEL:
                raise UsageError(f"--data {_printable(list_file)}: label {parts[1][:30]} on line {number} is not a "
                                 f"class index (no model has {MAX_LABEL:,} classes); fix that line")
        p = Path(line).expanduser()
        path = os.path.normpath(p if p.is_absolute() else base / p)
        if path in seen:  # the same image twice would count as two independent images
            continue
        seen.add(path)
        paths.append(path)
        labels.append(label)
    if not paths:
        raise UsageError(
            f"--data {_printable(list_file)}: the list names no images; write one 'path [label]' per line"
        )
    space = "list" if any(lab >= 0 for lab in labels) else None
    dropped = sum(1 for _ in lines) - len(paths)
    notes = (f"{dropped} repeated entr{'y' if dropped == 1 else 'ies'} of the list dropped (each image counts once)",) \
        if dropped else ()
    return ImageSource(tuple(paths), tuple(labels), "list", list_file, label_space=space, notes=notes)


def resolve_source(path: PathLike | None = None, labels: PathLike | None = None) -> ImageSource:
    """Build an :class:`ImageSource` from a ``--data`` argument (see the module docstring).

    ``None`` means the default set: ``$STM_PROBE_DATA`` if set, else the embedded ``data/``.
    A string ``synthetic[:<split>][?options]`` gives the synthetic set
    (:func:`stm_probe.data.synthetic.synthetic_source`); ``imagenet-r:PATH`` and the other
    shift-set prefixes give :func:`stm_probe.data.shift.shift_source`, and a synset tree holding
    exactly the ImageNet-R or -A classes is recognised as that set. ``labels`` (``--labels``)
    labels a flat folder from a label file (:func:`stm_probe.data.labels.apply_label_file`).
    Raises :class:`~stm_probe.errors.UsageError` for a missing path, an unreadable list or an
    empty source. Image files are not opened here; unreadable images are skipped by the loader.
    An ``--image-list`` is applied afterwards with :meth:`ImageSource.restrict`.
    """
    from . import shift, synthetic

    if labels is not None:
        from .labels import apply_label_file

        return apply_label_file(resolve_source(path), labels)
    if synthetic.is_synthetic(path):
        return synthetic.synthetic_source(str(path))
    if shift.split_prefix(path) is not None:
        return shift.shift_source(*shift.split_prefix(path))
    is_default = path is None
    if path is None:
        env = os.environ.get(DATA_ENV_VAR)
        path = env if env else default_data_dir()
        if not Path(path).exists():
            where = f"${DATA_ENV_VAR}={env}" if env else str(path)
            raise UsageError(
                f"default image set not found at {_printable(where)}; pass --data PATH or set {DATA_ENV_VAR}"
            )
    p = Path(path).expanduser().absolute()
    if not p.exists():
        raise UsageError(
            f"--data {_printable(path)}: no such file or directory; "
            "pass an image folder, an ImageFolder tree or a text file list"
        )
    if p.is_dir():
        from .imagenet_c import imagenet_c_source, is_imagenet_c

        if is_imagenet_c(p):
            return imagenet_c_source(p)
        src = shift.recognise(_folder_source(p))
    elif p.suffix.lower() in IMG_EXTENSIONS:
        src = ImageSource((str(p),), (-1,), "file", p)
    else:
        src = _list_source(p)
    return replace(src, is_default=is_default) if is_default else src


# --------------------------------------------------------------------------------------------
# Pixels: any PIL mode -> RGB in [0, 1]
# --------------------------------------------------------------------------------------------

#: Colour behind transparent pixels (RGBA, LA, PA, palette or colour-key transparency).
ALPHA_BACKGROUND: tuple[int, int, int] = (255, 255, 255)

_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _integer_range(img: Image.Image) -> float:
    """Largest value of an integer-mode image's sample format.

    Pillow reads 16-bit PNG / TIFF as ``I;16*`` and 16-bit PGM/PPM as ``I`` (scaled to
    0..65535), so the range is 65535 unless a TIFF declares another bit depth
    (``BitsPerSample``; signed when ``SampleFormat`` is 2).
    """
    tags = getattr(img, "tag_v2", None)
    if img.mode != "I" or tags is None or 258 not in tags:
        return 65535.0
    bits, sample_format = tags[258], tags.get(339, 1)
    bits = int(bits[0] if isinstance(bits, tuple) else bits)
    signed = (sample_format[0] if isinstance(sample_format, tuple) else sample_format) == 2
    return float(2 ** (bits - 1) - 1 if signed else 2 ** bits - 1)


def _rgb_planes(img: Image.Image) -> tuple[Image.Image, ...]:
    """``img`` as one 8-bit ``RGB`` image, or as float ``F`` planes in [0, 1].

    Pillow's high-bit-depth modes are single-channel (it decodes a 16-bit colour PNG to 8-bit
    RGB), so they give one grey plane, which :func:`to_rgb_tensor` repeats three times.

    * ``I;16*``: divided by 65535; ``I``: divided by its sample range (:func:`_integer_range`),
      negatives clip to 0; ``F``: taken as intensities, clipped to [0, 1] (NaN -> 0).
      Transparency of a 16-bit grey image is ignored.
    * ``RGBA``/``LA``/``PA`` and any image with a ``transparency`` entry (palette index or
      colour key): composited on :data:`ALPHA_BACKGROUND` (white).
    * everything else (``L``, ``1``, ``P``, ``CMYK``, ``YCbCr``, ``RGBX``, ...): PIL's
      ``convert("RGB")`` (CMYK without colour profile: ``(255 - c)(255 - k) / 255``).
    """
    mode = img.mode
    if mode in _HIGH_BIT_MODES:
        arr = np.asarray(img).astype(np.float32 if mode == "F" else np.float64)
        if mode != "F":
            arr = arr / _integer_range(img)
        arr = np.clip(np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
        return (Image.fromarray(arr.astype(np.float32)),)
    if mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("LA").convert("RGBA") if mode == "La" else img.convert("RGBA")
        background = Image.new("RGBA", img.size, ALPHA_BACKGROUND + (255,))
        return (Image.alpha_composite(background, rgba).convert("RGB"),)
    return (img if mode == "RGB" else img.convert("RGB"),)


def to_rgb_tensor(
    img: Image.Image,
    size: tuple[int, int] | None = None,
    crop: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """PIL image of any mode -> ``float32`` tensor ``(3, H, W)`` in [0, 1].

    ``size=(width, height)`` resizes first (PIL bicubic, antialiased), then ``crop=(left,
    top, right, bottom)`` cuts a box out of the resized image. 8-bit images are resized as
    8-bit RGB, exactly as torchvision's ``Resize`` + ``ToTensor``; 16-bit and float images
    are resized as float planes (PIL mode ``F``) and keep their precision. Mode conversions
    are described in :func:`_rgb_planes`. Raises ``ValueError`` if the resized image would
    exceed PIL's decompression-bomb pixel limit (an extreme aspect ratio).
    """
    planes = _rgb_planes(img)
    if size is not None and tuple(size) != img.size:
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and size[0] * size[1] > limit:
            raise ValueError(f"resizing {img.size[0]}x{img.size[1]} to {size[0]}x{size[1]} pixels is over "
                             f"PIL's limit of {limit} pixels (extreme aspect ratio)")
        planes = tuple(p.resize(tuple(size), Image.BICUBIC) for p in planes)
    if crop is not None:
        planes = tuple(p.crop(crop) for p in planes)
    if planes[0].mode == "RGB":
        arr = np.asarray(planes[0], dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255)
    arr = np.stack([np.asarray(p, dtype=np.float32) for p in planes])
    x = torch.from_numpy(np.clip(arr, 0.0, 1.0))  # bicubic overshoot
    return x.expand(3, -1, -1).contiguous() if x.shape[0] == 1 else x


# --------------------------------------------------------------------------------------------
# Transform
# --------------------------------------------------------------------------------------------


def resize_size(input_size: int, crop_pct: float = DEFAULT_CROP_PCT) -> int:
    """Short side before the centre crop: ``int(input_size / crop_pct)`` (224 -> 256)."""
    return int(input_size / crop_pct)


def _short_side_size(w: int, h: int, r: int) -> tuple[int, int]:
    """``(width, height)`` with short side ``r``; long side ``int(r * long / short)`` (torchvision)."""
    return (r, int(r * h / w)) if w <= h else (int(r * w / h), r)


class EvalTransform:
    """PIL image -> ``float32`` tensor ``(3, S, S)`` in [0, 1], ``S = input_size``.

    ``mode="center"``: short side to ``resize_size(S)`` (bicubic, antialiased), then centre
    crop ``S x S``; identical to torchvision's ``Resize(R, BICUBIC) + CenterCrop(S) +
    ToTensor()`` for RGB images. ``mode="warp"``: resize straight to ``S x S`` (bicubic, aspect
    ratio not kept, nothing cropped), used by the ERF analysis. No mean/std normalisation.
    Any PIL mode is accepted (see :func:`to_rgb_tensor`).
    """

    def __init__(self, input_size: int = 224, mode: TransformMode = "center", crop_pct: float = DEFAULT_CROP_PCT):
        if mode not in ("center", "warp"):
            raise UsageError(f"unknown transform mode {mode!r}; use 'center' or 'warp'")
        if input_size < 1 or not 0 < crop_pct <= 1:
            raise UsageError(f"bad input size {input_size} / crop fraction {crop_pct}")
        self.input_size = int(input_size)
        self.mode = mode
        self.crop_pct = crop_pct
        self.resize = resize_size(self.input_size, crop_pct)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        s = self.input_size
        if self.mode == "warp":
            return to_rgb_tensor(img, (s, s))
        nw, nh = _short_side_size(*img.size, self.resize)
        # crop offset rounded as torchvision's CenterCrop
        top, left = int(round((nh - s) / 2.0)), int(round((nw - s) / 2.0))
        return to_rgb_tensor(img, (nw, nh), (left, top, left + s, top + s))

    def __repr__(self) -> str:
        if self.mode == "warp":
            return f"EvalTransform(warp to {self.input_size}x{self.input_size}, bicubic, [0,1])"
        return f"EvalTransform(resize {self.resize} bicubic, center crop {self.input_size}, [0,1])"


def eval_transform(
    input_size: int = 224, mode: TransformMode = "center", crop_pct: float = DEFAULT_CROP_PCT
) -> EvalTransform:
    """The standard evaluation transform (see :class:`EvalTransform`)."""
    return EvalTransform(input_size, mode, crop_pct)


class ShortSideResize:
    """PIL image -> ``float32`` tensor ``(3, h, w)`` in [0, 1]: short side resized, nothing cropped.

    The short side becomes ``short_side`` (bicubic, antialiased) and the long side
    ``int(short_side * long / short)``, the rounding of :class:`EvalTransform`, so
    ``EvalTransform(S)(img)`` is the centre ``S x S`` crop of ``ShortSideResize(resize_size(S))(img)``.
    With ``max_short_side`` (>= ``short_side``), an image whose short side lies in
    ``[short_side, max_short_side]`` keeps its native size and a larger one is reduced to
    ``max_short_side``: a higher-resolution base for views that zoom in (the invariance analysis).
    Sizes differ between images, so load these with ``batch_size=1``. Any PIL mode is accepted
    (see :func:`to_rgb_tensor`).
    """

    def __init__(self, short_side: int, max_short_side: int | None = None):
        if short_side < 1 or (max_short_side is not None and max_short_side < short_side):
            raise UsageError(f"bad short side {short_side} / maximum {max_short_side}")
        self.short_side = int(short_side)
        self.max_short_side = int(max_short_side) if max_short_side is not None else self.short_side

    def __call__(self, img: Image.Image) -> torch.Tensor:
        w, h = img.size
        r = min(max(min(w, h), self.short_side), self.max_short_side)
        return to_rgb_tensor(img, _short_side_size(w, h, r))

    def __repr__(self) -> str:
        if self.max_short_side == self.short_side:
            return f"ShortSideResize(short side {self.short_side} bicubic, no crop, [0,1])"
        return (f"ShortSideResize(short side clamped to [{self.short_side}, {self.max_short_side}] bicubic, "
                "no crop, [0,1])")


# --------------------------------------------------------------------------------------------
# Dataset and loader
# --------------------------------------------------------------------------------------------


class SkippedFile(NamedTuple):
    """An image that could not be read: its path and a one-line reason."""

    path: str
    reason: str


class _Failed(NamedTuple):
    index: int
    path: str
    reason: str


class Batch(NamedTuple):
    """One batch of images.

    images:  ``float32`` ``(B, 3, S, S)`` in [0, 1], not normalised
    labels:  ``int64`` ``(B,)``, ``-1`` where unknown
    indices: ``int64`` ``(B,)``, position of each image in ``loader.source.paths``
    paths:   the B file paths
    """

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    paths: tuple[str, ...]


class _Unreadable(Exception):
    """A file the loader will not decode; the message is the one-line skip reason."""


_FILE_KINDS = (
    (stat.S_ISFIFO, "named pipe"),
    (stat.S_ISDIR, "directory"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
)


def _check_regular(st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _FILE_KINDS if test(st.st_mode)), "special file")
        raise _Unreadable(f"not a regular file ({kind})")
    if st.st_size == 0:
        raise _Unreadable("empty file (0 bytes)")


def _open_regular_file(path: str) -> BinaryIO:
    """``path`` opened for binary reading if it is a non-empty regular file (links followed).

    A FIFO, device, socket or directory is refused before it is opened, so reading never
    blocks; the open itself is non-blocking and re-checked, in case the path changed between
    the two. Raises :class:`_Unreadable` or ``OSError``.
    """
    _check_regular(os.stat(path))
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        _check_regular(os.fstat(fd))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _skip_reason(e: Exception) -> str:
    """One line saying why a file could not be read."""
    if isinstance(e, _Unreadable):
        return str(e)
    if isinstance(e, UnidentifiedImageError):
        return f"not an image in a readable format ({', '.join(IMAGE_FORMATS)})"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return " ".join(f"{type(e).__name__}: {e}".split())


def _decode(path: str, transform: Callable[[Image.Image], torch.Tensor]) -> torch.Tensor:
    """Read one regular image file and apply ``transform`` (EXIF orientation is not applied)."""
    with _open_regular_file(path) as f, Image.open(f, formats=IMAGE_FORMATS) as img:
        img.load()
        return transform(img)


class ImageDataset(Dataset):
    """Decodes ``source.paths[i]`` lazily (renders it, for a synthetic source); returns
    ``(image, label, i, path)`` or a failure sentinel."""

    def __init__(self, source: ImageSource, transform: Callable[[Image.Image], torch.Tensor]):
        self.paths = list(source.paths)
        self.labels = list(source.labels)
        self.transform = transform
        self.synthetic = source.synthetic

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, path: str) -> torch.Tensor:
        if self.synthetic is not None:
            return self.transform(self.synthetic.image(self.synthetic.index_of(path)))
        return _decode(path, self.transform)

    def __getitem__(self, i: int):
        path = self.paths[i]
        try:
            x = self._read(path)
        except Exception as e:  # noqa: BLE001 - any unreadable file is skipped, never fatal
            return _Failed(i, path, _skip_reason(e))
        return x, self.labels[i], i, path


def _collate(items: Sequence) -> tuple[Batch | None, list[_Failed]]:
    """Stack decoded items; hand failures back separately (runs in the worker process)."""
    failed = [it for it in items if isinstance(it, _Failed)]
    ok = [it for it in items if not isinstance(it, _Failed)]
    if not ok:
        return None, failed
    images = torch.stack([it[0] for it in ok])
    labels = torch.tensor([it[1] for it in ok], dtype=torch.int64)
    indices = torch.tensor([it[2] for it in ok], dtype=torch.int64)
    return Batch(images, labels, indices, tuple(it[3] for it in ok)), failed


class ImageLoader:
    """Iterable of :class:`Batch`; counts the files it had to skip.

    Batches hold up to ``batch_size`` images: an unreadable file makes its batch smaller (a
    batch where every file failed is not yielded). ``skipped`` / ``num_loaded`` describe the
    most recent pass and are reset when a new pass starts.
    """

    def __init__(self, source: ImageSource, loader: DataLoader):
        self.source = source
        self.loader = loader
        self.skipped: list[SkippedFile] = []
        self.num_loaded = 0

    def __len__(self) -> int:
        """Number of batches in a pass (before any all-failed batch is dropped)."""
        return len(self.loader)

    @property
    def num_images(self) -> int:
        """Images the loader will try to read in a pass."""
        return len(self.source)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def __iter__(self) -> Iterator[Batch]:
        self.skipped = []
        self.num_loaded = 0
        for batch, failed in self.loader:
            for f in failed:
                _logger.debug("skipped unreadable image %s: %s", f.path, f.reason)
                self.skipped.append(SkippedFile(f.path, f.reason))
            if batch is not None:
                self.num_loaded += len(batch.paths)
                yield batch

    def skip_summary(self, max_paths: int = 3) -> str:
        """One line, e.g. ``skipped 2 of 16 images that could not be read: a.jpg (...), ...``.

        The count is of list entries (a file listed twice and unreadable counts twice); each
        path is shown once. This is the one report of skipped files: the loader only logs
        them at debug level.
        """
        if not self.skipped:
            return f"all {self.num_loaded} images read"
        reasons: dict[str, str] = {}
        times: dict[str, int] = {}
        for s in self.skipped:
            reasons.setdefault(s.path, s.reason)
            times[s.path] = times.get(s.path, 0) + 1
        shown = ", ".join(
            f"{_printable(p)} ({reasons[p]}{f', listed {times[p]} times' if times[p] > 1 else ''})"
            for p in list(reasons)[:max_paths]
        )
        rest = len(reasons) - max_paths
        more = f", and {rest} more file{'s' if rest > 1 else ''}" if rest > 0 else ""
        return f"skipped {self.num_skipped} of {self.num_images} images that could not be read: {shown}{more}"


def make_loader(
    source: ImageSource | PathLike | None = None,
    batch_size: int = 32,
    num_images: int | None = None,
    transform: Callable[[Image.Image], torch.Tensor] | None = None,
    num_workers: int = 0,
    *,
    spread_classes: bool = False,
    pin_memory: bool = False,
) -> ImageLoader:
    """A deterministic (unshuffled) loader over the first ``num_images`` images of ``source``.

    ``source`` is an :class:`ImageSource` or anything :func:`resolve_source` accepts (``None``
    = the embedded sample set). ``transform`` defaults to ``eval_transform(224)``. Yields
    :class:`Batch` tuples ``(images (B,3,S,S) float32 in [0,1], labels (B,) int64, indices
    (B,) int64, paths)``; read ``loader.skipped`` / ``loader.skip_summary()`` after the loop.
    """
    if not isinstance(source, ImageSource):
        source = resolve_source(source)
    if batch_size < 1:
        raise UsageError(f"batch size must be a positive integer, got {batch_size}")
    if num_workers < 0:
        raise UsageError(f"number of loader workers must be 0 or more, got {num_workers}")
    source = source.take(num_images, spread_classes=spread_classes)
    dataset = ImageDataset(source, transform if transform is not None else eval_transform())
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=pin_memory,
        drop_last=False,
        generator=torch.Generator(),  # its worker seeds come from here, not from the caller's global generator
    )
    return ImageLoader(source, loader)
