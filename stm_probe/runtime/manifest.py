"""Run folders, atomic file writes and the run manifest (manifest.json)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import sys
import time
from datetime import datetime
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import torch

TEMP_PATTERN = ".*.tmp*"  # glob of the temporary files atomic_path creates


TRACKED_PACKAGES = ("torch", "torchvision", "timm", "numpy", "pandas", "captum", "torchattacks", "safetensors")


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


def default_out_dir(analysis: str, root: str | Path = "runs") -> Path:
    """``runs/<analysis>-<YYYYmmdd-HHMMSS>`` (a suffix is added if it exists)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{analysis}-{stamp}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def device_description(device: "torch.device") -> str:
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


class RunRecord:
    """Collects what a run did and writes ``manifest.json`` into its output folder at the end."""

    def __init__(self, analysis: str, out_dir: Path, call: dict[str, Any] | None = None) -> None:
        from .. import __version__

        self.out_dir = out_dir
        self.started = time.perf_counter()
        self.data: dict[str, Any] = {
            "tool": "stm-probe", "version": __version__, "analysis": analysis,
            "call": call if call is not None else {"argv": list(sys.argv)},
            "started_at": datetime.now().astimezone().isoformat(timespec="seconds"),
            "packages": package_versions(), "models": [], "outputs": [],
        }

    def update(self, **fields: Any) -> None:
        self.data.update(fields)

    def add_model(self, entry: dict[str, Any]) -> None:
        self.data["models"].append(entry)

    def add_output(self, path: Path) -> None:
        self.data["outputs"].append(str(Path(path).relative_to(self.out_dir)))

    def write(self) -> Path:
        self.data["wall_time_s"] = round(time.perf_counter() - self.started, 3)
        path = self.out_dir / "manifest.json"
        write_json(path, self.data)
        return path
