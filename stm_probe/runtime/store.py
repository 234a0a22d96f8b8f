"""The run folder: lock, in-progress marker, per-unit results (resume) and stale temp files.

Layout of ``--out``::

    .lock                 held while a run writes here (pid, host); a second run is refused
    run.json              written when the run starts; says "incomplete" until manifest.json exists
    units/<key>.npz       per-image results of one unit (model x probe setting), saved as it completes
    <probe>.csv, per_image.csv, figures, manifest.json (written last)

A run folder is always either complete (manifest.json present, run.json says complete) or
marked incomplete and resumable with ``--resume``. Unit keys hash everything that changes a
unit's numbers (probe settings, model, checkpoint sha256, image list, input size, seed,
repeat), so a resumed run reuses exactly the units an uninterrupted run would compute.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..files import TEMP_PATTERN, atomic_path, write_json

LOCK_NAME = ".lock"
MARKER_NAME = "run.json"
UNITS_DIR = "units"


def unit_key(parts: dict[str, Any]) -> str:
    """Stable 20-hex-digit key of a unit's defining parts (JSON, sorted keys)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunFolder:
    """One run's output folder (see module docstring). Use as a context manager around the run."""

    def __init__(self, path: Path, probe: str, resume: bool, auto_named: bool = False) -> None:
        self.path = Path(path)
        self.probe = probe
        self.resume = resume
        self.auto_named = auto_named  # a default runs/<probe>-<time> name: take the next free one on a clash
        self.created: Path | None = None  # the outermost folder this run made (removed if it saves nothing)
        self.saved_units = 0
        self._locked = False

    # --- opening and closing -------------------------------------------------------------------
    def open(self, describe: dict[str, Any]) -> None:
        """Check the folder, take the lock, remove a dead run's temp files, write the marker.

        ``describe``: what defines the run's numbers (settings, models, images, ...); ``--resume``
        is refused when it differs from the interrupted run's.
        """
        if self.auto_named:
            self._make_fresh_folder()
        existing = [p.name for p in self.path.iterdir()] if self.path.is_dir() else []
        if self.resume:
            marker = self.path / MARKER_NAME
            if not marker.is_file():
                raise UsageError(f"--resume: {self.path} holds no stm-probe run to continue (no {MARKER_NAME}); "
                                 "drop --resume or give the --out of an interrupted run")
            previous = _read_json(marker)
            if previous.get("probe") != self.probe:
                raise UsageError(f"--resume: {self.path} holds a '{previous.get('probe')}' run, not '{self.probe}': "
                                 "give the matching command or another --out")
            changed = [k for k in describe if json.dumps(previous.get(k), sort_keys=True, default=str)
                       != json.dumps(describe[k], sort_keys=True, default=str)]
            if changed:
                raise UsageError(f"--resume: the run in {self.path} was made with other {', '.join(changed)}: rerun "
                                 "the interrupted command unchanged, or choose a new --out")
        elif [n for n in existing if n != LOCK_NAME]:
            raise UsageError(f"--out {self.path} already holds files (another run?): pass --resume to continue an "
                             "interrupted run there, or choose a new folder")
        if not self.path.exists():
            self.created = next(p for p in [*reversed(self.path.parents), self.path] if not p.exists())
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                self.created = None
                raise UsageError(f"--out {self.path}: cannot create the folder ({exc.strerror}); choose a folder you "
                                 "can write to") from None
        self._lock()
        self._remove_stale_temp_files()
        write_json(self.path / MARKER_NAME, {"probe": self.probe, "status": "incomplete",
                                             "resume": "rerun the same command with --resume", **describe})

    def _make_fresh_folder(self) -> None:
        """Create an unused default folder atomically (runs started in the same second get -2, -3, ...)."""
        base, n = self.path, 1
        outer = next(p for p in [*reversed(self.path.parents), self.path] if not p.exists())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                self.path.mkdir()
                self.created = outer if outer != base else self.path
                return
            except FileExistsError:
                n += 1
                self.path = base.with_name(f"{base.name}-{n}")

    def _lock(self) -> None:
        lock = self.path / LOCK_NAME
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = _read_json(lock)
                pid, host = int(owner.get("pid", -1) or -1), owner.get("host")
                if host == socket.gethostname() and pid > 0 and not _pid_alive(pid):
                    lock.unlink(missing_ok=True)  # a dead run's lock: take it over
                    continue
                raise UsageError(f"--out {self.path} is in use by another run (pid {pid} on {host}); wait for it to "
                                 f"finish or choose another folder (remove {lock} if that run is gone)") from None
            with os.fdopen(fd, "w") as handle:
                json.dump({"pid": os.getpid(), "host": socket.gethostname()}, handle)
            self._locked = True
            return
        raise UsageError(f"--out {self.path}: could not take the lock {lock}")

    def _remove_stale_temp_files(self) -> None:
        """Temp files of a killed run (we hold the lock, so none is being written)."""
        for stale in self.path.rglob(TEMP_PATTERN):
            if stale.is_file():
                stale.unlink(missing_ok=True)

    def complete(self) -> None:
        """Mark the run complete (after manifest.json is written)."""
        marker = self.path / MARKER_NAME
        data = _read_json(marker)
        data.update(status="complete")
        data.pop("resume", None)
        write_json(marker, data)

    def close(self, failed_before_saving: bool = False) -> None:
        """Release the lock; remove the folder again if this run created it and saved nothing."""
        if self._locked:
            (self.path / LOCK_NAME).unlink(missing_ok=True)
            self._locked = False
        if failed_before_saving and self.created is not None and self.saved_units == 0:
            for item in sorted(self.path.rglob("*"), reverse=True):  # only what this run wrote
                item.rmdir() if item.is_dir() else item.unlink(missing_ok=True)
            for folder in [self.path, *self.path.parents]:  # then the folders it made, while empty
                try:
                    folder.rmdir()
                except OSError:
                    break
                if folder == self.created:
                    break

    # --- units ---------------------------------------------------------------------------------
    def unit_path(self, key: str) -> Path:
        return self.path / UNITS_DIR / f"{key}.npz"

    def has_unit(self, key: str) -> bool:
        return self.unit_path(key).is_file()

    def save_unit(self, key: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Save one unit's arrays (numeric only) and JSON meta, atomically."""
        payload = {name: np.asarray(a) for name, a in arrays.items()}
        payload["__meta__"] = np.frombuffer(json.dumps(meta, default=str).encode("utf-8"), dtype=np.uint8)
        with atomic_path(self.unit_path(key)) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, **payload)
        self.saved_units += 1

    def load_unit(self, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays and meta of a saved unit (never unpickles)."""
        with np.load(self.unit_path(key), allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files if name != "__meta__"}
            meta = json.loads(bytes(data["__meta__"]).decode("utf-8"))
        return arrays, meta


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
