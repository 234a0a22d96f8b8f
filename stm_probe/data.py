"""Image sources, the evaluation transform and the batch loader used by the analyses.

``--data PATH`` accepts

* an ImageFolder tree (``root/<class>/.../<image>``): labels from the class folder names. If
  every class folder is an ImageNet-1k synset (``n01440764`` ...), the label is the standard
  ImageNet-1k class index (timm's ``ImageNetInfo``), so a tree holding any subset of the
  classes is labelled correctly; otherwise the label is the folder's rank among the sorted
  class folders (torchvision ``ImageFolder`` convention);
* a flat folder of images: unlabelled, every label is ``-1``;
* a text file list: one image per line, ``path`` or ``path label``; relative paths are
  relative to the list file; blank lines and lines starting with ``#`` are ignored;
* a single image file;
* nothing (``None``): the embedded sample set in the repository's ``data/`` folder (16
  public-domain / CC0 photographs, unlabelled; see ``data/README.md``), or whatever
  ``$STM_PROBE_DATA`` points to.

Pixels stay in [0, 1]: the dataset applies **no** mean/std normalisation. Batches are
``float32`` ``(B, 3, H, W)`` in [0, 1] and the model wrapper normalises with the model's own
mean/std, so analyses that perturb pixels (adversarial attacks, invariance transforms) work
in the natural pixel range.

Unreadable or corrupt files are never fatal: ``__getitem__`` decodes lazily, a failure is
turned into a sentinel, the collate drops it, and :class:`ImageLoader` counts it in the main
process (this also works with ``num_workers > 0``). After a pass, ``loader.skipped`` lists
the skipped files and ``loader.skip_summary()`` gives a one-line report.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator, Literal, NamedTuple, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .errors import UsageError

__all__ = [
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
]

_logger = logging.getLogger(__name__)

#: File suffixes (lower case) recognised as images when scanning folders (torchvision's list).
IMG_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

#: Environment variable that replaces the embedded sample set as the default source.
DATA_ENV_VAR = "STM_PROBE_DATA"

DEFAULT_CROP_PCT = 0.875
_SYNSET_RE = re.compile(r"^n\d{8}$")

PathLike = Union[str, os.PathLike]
SourceKind = Literal["imagefolder", "folder", "list", "file"]
TransformMode = Literal["center", "warp"]


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSource:
    """An ordered list of image paths with integer labels (``-1`` = unknown).

    ``paths`` are absolute path strings; ``labels[i]`` belongs to ``paths[i]``. Folders are
    listed in sorted path order; a list file keeps its own line order.
    """

    paths: tuple[str, ...]
    labels: tuple[int, ...]
    kind: SourceKind
    location: Path
    class_names: tuple[str, ...] = ()
    label_space: str | None = None  # "imagenet-1k", "folder-index", "list" or None (unlabelled)
    is_default: bool = False
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def has_labels(self) -> bool:
        """True if at least one image has a known label (``>= 0``)."""
        return any(lab >= 0 for lab in self.labels)

    def take(self, num_images: int | None, spread_classes: bool = False) -> "ImageSource":
        """The first ``num_images`` images (all if ``None`` or larger than the source).

        With ``spread_classes=True`` the order is first interleaved round-robin over labels
        (1st image of every class, then the 2nd, ...), so a small ``num_images`` taken from
        an ImageFolder tree covers many classes instead of only the first one.
        """
        if num_images is not None and num_images < 1:
            raise UsageError(f"number of images must be a positive integer, got {num_images}")
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
        return replace(
            self,
            paths=tuple(self.paths[i] for i in order),
            labels=tuple(self.labels[i] for i in order),
        )

    def describe(self) -> str:
        """One line naming the source, its layout, size and label space."""
        what = {
            "imagefolder": "ImageFolder tree",
            "folder": "image folder",
            "list": "image list",
            "file": "image file",
        }[self.kind]
        if self.is_default:
            what = "embedded sample images"
        extra = []
        if self.kind == "imagefolder":
            extra.append(f"{len(self.class_names)} classes")
        extra.append(
            {
                "imagenet-1k": "ImageNet-1k labels from synset folders",
                "folder-index": "labels = sorted class-folder index",
                "list": "labels from the list",
                None: "unlabelled",
            }.get(self.label_space, str(self.label_space))
        )
        extra.extend(self.notes)
        return f"{what} {self.location} ({len(self)} images, {'; '.join(extra)})"


def default_data_dir() -> Path:
    """The embedded sample set: ``<repo>/data`` next to the ``stm_probe`` package."""
    return Path(__file__).resolve().parent.parent / "data"


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def _scan_images(folder: Path) -> list[str]:
    """Image files under ``folder`` (recursive, follows links, skips hidden), sorted."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(os.path.join(dirpath, f) for f in filenames if _is_image(f))
    return sorted(found)


@lru_cache(maxsize=1)
def _imagenet_synset_to_index() -> dict[str, int]:
    """ImageNet-1k synset -> class index (0..999), from timm's bundled class info."""
    from timm.data import ImageNetInfo

    return {s: i for i, s in enumerate(ImageNetInfo("imagenet-1k").label_names())}


def _folder_source(root: Path) -> ImageSource:
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as e:
        raise UsageError(f"--data {root}: cannot read the folder ({e.strerror}); check its permissions") from e
    subdirs = [e for e in entries if not e.name.startswith(".") and e.is_dir()]
    top_images = [os.path.join(root, e.name) for e in entries if _is_image(e.name) and e.is_file()]
    class_files = {d.name: _scan_images(Path(d.path)) for d in subdirs}
    class_files = {k: v for k, v in class_files.items() if v}

    if class_files and top_images:
        raise UsageError(
            f"--data {root}: holds both image files and class subfolders ({', '.join(list(class_files)[:3])}); "
            "use a folder of class subfolders only (ImageFolder), images only, or a list file"
        )
    if top_images:
        return ImageSource(tuple(top_images), (-1,) * len(top_images), "folder", root)
    if not class_files:
        raise UsageError(
            f"--data {root}: no images found ({', '.join(IMG_EXTENSIONS)}); "
            "pass a folder of images, an ImageFolder tree or a text file list"
        )

    # Class index: ImageNet-1k index if every class folder is a 1k synset, else rank among
    # the sorted non-hidden subfolders (as torchvision's ImageFolder does).
    names = sorted(class_files)
    notes: tuple[str, ...] = ()
    if all(_SYNSET_RE.match(n) for n in names):
        synsets = _imagenet_synset_to_index()
        if all(n in synsets for n in names):
            class_index, space = {n: synsets[n] for n in names}, "imagenet-1k"
        else:
            unknown = [n for n in names if n not in synsets]
            notes = (f"synset folders not in ImageNet-1k ({', '.join(unknown[:3])}); using sorted folder index",)
            class_index, space = None, "folder-index"
    else:
        class_index, space = None, "folder-index"
    if class_index is None:
        all_dirs = sorted(d.name for d in subdirs)
        class_index = {n: all_dirs.index(n) for n in names}

    paths: list[str] = []
    labels: list[int] = []
    for n in names:
        paths.extend(class_files[n])
        labels.extend([class_index[n]] * len(class_files[n]))
    return ImageSource(tuple(paths), tuple(labels), "imagefolder", root, tuple(names), space, notes=notes)


def _list_source(list_file: Path) -> ImageSource:
    try:
        text = list_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise UsageError(
            f"--data {list_file}: cannot read it as a UTF-8 text list ({reason}); "
            "pass an image folder, an ImageFolder tree, or a text file with one 'path [label]' per line"
        ) from e
    base = list_file.parent
    paths: list[str] = []
    labels: list[int] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        label = -1
        parts = line.rsplit(maxsplit=1)
        if len(parts) == 2 and re.fullmatch(r"-?\d+", parts[1]):
            line, label = parts[0], int(parts[1])
        p = Path(line).expanduser()
        paths.append(os.path.normpath(p if p.is_absolute() else base / p))
        labels.append(label)
    if not paths:
        raise UsageError(f"--data {list_file}: the list names no images; write one 'path [label]' per line")
    space = "list" if any(lab >= 0 for lab in labels) else None
    return ImageSource(tuple(paths), tuple(labels), "list", list_file, label_space=space)


def resolve_source(path: PathLike | None = None) -> ImageSource:
    """Build an :class:`ImageSource` from a ``--data`` argument (see the module docstring).

    ``None`` means the default set: ``$STM_PROBE_DATA`` if set, else the embedded ``data/``.
    Raises :class:`~stm_probe.errors.UsageError` for a missing path, an unreadable list or an
    empty source. Files are not opened here; unreadable images are skipped by the loader.
    """
    is_default = path is None
    if path is None:
        env = os.environ.get(DATA_ENV_VAR)
        path = env if env else default_data_dir()
        if not Path(path).exists():
            where = f"${DATA_ENV_VAR}={env}" if env else str(path)
            raise UsageError(f"default image set not found at {where}; pass --data PATH or set {DATA_ENV_VAR}")
    p = Path(path).expanduser().absolute()
    if not p.exists():
        raise UsageError(
            f"--data {path}: no such file or directory; pass an image folder, an ImageFolder tree or a text file list"
        )
    if p.is_dir():
        src = _folder_source(p)
    elif p.suffix.lower() in IMG_EXTENSIONS:
        src = ImageSource((str(p),), (-1,), "file", p)
    else:
        src = _list_source(p)
    return replace(src, is_default=is_default) if is_default else src


# --------------------------------------------------------------------------------------------
# Transform
# --------------------------------------------------------------------------------------------


def resize_size(input_size: int, crop_pct: float = DEFAULT_CROP_PCT) -> int:
    """Short side before the centre crop: ``int(input_size / crop_pct)`` (224 -> 256)."""
    return int(input_size / crop_pct)


class EvalTransform:
    """PIL image -> ``float32`` tensor ``(3, S, S)`` in [0, 1], ``S = input_size``.

    ``mode="center"``: short side to ``resize_size(S)`` (bicubic, antialiased), then centre
    crop ``S x S``; identical to torchvision's ``Resize(R, BICUBIC) + CenterCrop(S) +
    ToTensor()``. ``mode="warp"``: resize straight to ``S x S`` (bicubic, aspect ratio not
    kept, nothing cropped), used by the ERF analysis. No mean/std normalisation.
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
        img = img.convert("RGB")
        s = self.input_size
        if self.mode == "warp":
            img = img.resize((s, s), Image.BICUBIC)
        else:
            w, h = img.size
            r = self.resize
            # same rounding as torchvision: long side = int(r * long / short), crop offset = round
            nw, nh = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)
            if (nw, nh) != (w, h):
                img = img.resize((nw, nh), Image.BICUBIC)
            top, left = int(round((nh - s) / 2.0)), int(round((nw - s) / 2.0))
            img = img.crop((left, top, left + s, top + s))
        arr = np.asarray(img, dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255)

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
    Sizes differ between images, so load these with ``batch_size=1``.
    """

    def __init__(self, short_side: int, max_short_side: int | None = None):
        if short_side < 1 or (max_short_side is not None and max_short_side < short_side):
            raise UsageError(f"bad short side {short_side} / maximum {max_short_side}")
        self.short_side = int(short_side)
        self.max_short_side = int(max_short_side) if max_short_side is not None else self.short_side

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = img.convert("RGB")
        w, h = img.size
        r = min(max(min(w, h), self.short_side), self.max_short_side)
        nw, nh = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), Image.BICUBIC)
        arr = np.asarray(img, dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255)

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


class ImageDataset(Dataset):
    """Decodes ``source.paths[i]`` lazily; returns ``(image, label, i, path)`` or a failure sentinel."""

    def __init__(self, source: ImageSource, transform: Callable[[Image.Image], torch.Tensor]):
        self.paths = list(source.paths)
        self.labels = list(source.labels)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.paths[i]
        try:
            with Image.open(path) as img:
                img.load()
                x = self.transform(img)
        except Exception as e:  # noqa: BLE001 - any unreadable file is skipped, never fatal
            reason = " ".join(f"{type(e).__name__}: {e}".split())
            return _Failed(i, path, reason)
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
        if self.skipped:
            _logger.warning(self.skip_summary())

    def skip_summary(self, max_paths: int = 3) -> str:
        """One line, e.g. ``skipped 2 of 16 images that could not be read: a.jpg (...), ...``."""
        if not self.skipped:
            return f"all {self.num_loaded} images read"
        shown = ", ".join(f"{s.path} ({s.reason})" for s in self.skipped[:max_paths])
        more = f", and {self.num_skipped - max_paths} more" if self.num_skipped > max_paths else ""
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
    )
    return ImageLoader(source, loader)
