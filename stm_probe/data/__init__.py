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

Rooms of the package (``import stm_probe.data`` loads none of them, nor torch: the names below load
from their room on first use): :mod:`~stm_probe.data.source` (:class:`ImageSource`),
:mod:`~stm_probe.data.resolve` (``--data`` -> source), :mod:`~stm_probe.data.folders` (folder trees),
:mod:`~stm_probe.data.textfiles` (text lists), :mod:`~stm_probe.data.labels` (label files),
:mod:`~stm_probe.data.shift` (shift sets), :mod:`~stm_probe.data.imagenet_c` (ImageNet-C folders),
:mod:`~stm_probe.data.synthetic` (the synthetic set), :mod:`~stm_probe.data.reading` (safe file
reading), :mod:`~stm_probe.data.pixels` (any PIL mode -> RGB tensor),
:mod:`~stm_probe.data.transforms` (evaluation transforms), :mod:`~stm_probe.data.loader` (dataset
and batch loader).
"""
from __future__ import annotations

import importlib
from typing import Any

#: Module (relative to this package) of every name it re-exports, loaded on first use.
_HOMES: dict[str, str] = {
    **dict.fromkeys(("ImageSource", "PathLike", "SourceKind", "_SYNSET_RE", "_hash_key"), ".source"),
    **dict.fromkeys(("IMG_EXTENSIONS", "_INTEGER_RE", "_is_image", "_list_dir", "_unique_files", "_scan_images",
                     "_class_index", "_folder_source"), ".folders"),
    **dict.fromkeys(("check_not_named_pipe", "_read_text_lines", "_read_id_list"), ".textfiles"),
    **dict.fromkeys(("DATA_ENV_VAR", "default_data_dir", "_list_source", "resolve_source"), ".resolve"),
    **dict.fromkeys(("ALPHA_BACKGROUND", "_HIGH_BIT_MODES", "_ALPHA_MODES", "_integer_range", "_rgb_planes",
                     "to_rgb_tensor"), ".pixels"),
    **dict.fromkeys(("DEFAULT_CROP_PCT", "TransformMode", "resize_size", "_short_side_size", "EvalTransform",
                     "eval_transform", "ShortSideResize"), ".transforms"),
    **dict.fromkeys(("IMAGE_FORMATS", "_Unreadable", "_FILE_KINDS", "_check_regular", "_open_regular_file",
                     "_skip_reason", "_decode"), ".reading"),
    **dict.fromkeys(("SkippedFile", "_Failed", "Batch", "ImageDataset", "_collate", "ImageLoader", "make_loader"),
                    ".loader"),
    **dict.fromkeys(("MAX_LABEL", "_printable", "imagenet_index"), ".labels"),
    **dict.fromkeys(("SHIFT_SETS", "describe_space"), ".shift"),
    "UsageError": "..errors",
}

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


def __getattr__(name: str) -> Any:
    """Load a re-exported name from its room on first use (``import stm_probe.data`` stays torch-free)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
