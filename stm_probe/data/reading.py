"""Reading one image file safely: only non-empty regular files, only known decoders, one-line reasons.

A FIFO, device, socket or directory is never opened for reading; a failure becomes the
one-line reason the loader reports for a skipped file.
"""
from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING, BinaryIO, Callable

from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:
    import torch

#: Decoders PIL may use, whatever the file's suffix says (a ``.jpg`` holding a PNG is read).
#: JPEG includes multi-picture (MPO) camera files. Other formats are refused, so a renamed EPS
#: file never reaches Ghostscript.
IMAGE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "PPM", "BMP", "TIFF", "WEBP", "GIF")


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

