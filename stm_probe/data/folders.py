"""Folder trees: scanning a folder for images and labelling an ImageFolder tree.

Folders are scanned recursively, links followed, every real directory entered once and every
real file listed once per class folder (see :mod:`stm_probe.data`). Class folders are labelled
as ImageNet-1k synsets, integers, or by their sorted rank.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from ..errors import UsageError
from .labels import _printable, imagenet_index
from .source import _SYNSET_RE, ImageSource

#: File suffixes (lower case) recognised as images when scanning folders (torchvision's list).
IMG_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

_INTEGER_RE = re.compile(r"^\d+$")


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

