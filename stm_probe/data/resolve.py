"""``--data`` -> :class:`~stm_probe.data.source.ImageSource`: folders, trees, lists, files, shift sets,
ImageNet-C and the synthetic set (the forms are listed in :mod:`stm_probe.data`).
"""
from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

from ..errors import UsageError
from .folders import IMG_EXTENSIONS, _folder_source
from .labels import MAX_LABEL, _printable
from .source import ImageSource, PathLike
from .textfiles import _read_text_lines

#: Environment variable that replaces the embedded sample set as the default source.
DATA_ENV_VAR = "STM_PROBE_DATA"


def default_data_dir() -> Path:
    """The embedded sample set: ``<repo>/data/images`` beside the ``stm_probe`` package."""
    return Path(__file__).resolve().parents[2] / "data" / "images"


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
