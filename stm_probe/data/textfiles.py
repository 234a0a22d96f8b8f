"""Text list files (``--data`` lists, ``--image-list``, ``--labels``): read safely, lines stripped.

A named pipe is refused (reading would wait for a writer), a file that is not UTF-8 text is a
:class:`~stm_probe.errors.UsageError`; blank lines and ``#`` comments are dropped.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import UsageError


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

