"""Files written safely and identified by content: atomic writes (a temporary name renamed into place)
and cached sha256 hashes. The lowest layer: the models, checkpoints, runs and figures all write through here."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

TEMP_PATTERN = ".*.tmp*"  # glob of the temporary files atomic_path creates


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    Readers never see a half-written file: on error the temporary file is removed. The file gets
    the permissions a plain ``open`` would give (0666 less the process's umask at the time of
    writing, applied by the operating system), not mkstemp's 0600.
    Temporary names start with ``.`` and contain ``.tmp`` (`TEMP_PATTERN`), so a later run into the
    folder can remove those a killed run left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp_file(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _new_temp_file(path: Path) -> Path:
    """Create an empty, unused ``.<name>.<random>.tmp<suffix>`` beside ``path``, mode 0666 less the umask."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{os.urandom(4).hex()}.tmp{path.suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name beside {path}")


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks; computed once per process while the file's
    size and mtime stay the same (a run hashes its checkpoints and data files more than once)."""
    stat = os.stat(path)
    return _sha256_of(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)


@lru_cache(maxsize=1024)
def _sha256_of(path: str, size: int, mtime_ns: int, inode: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
