"""The released checkpoints of the 20 unified models: file names, URLs, a local cache and a safe download.

The authors publish one file per model, ``<base>/<release stem>.pth`` with ``<base>`` =
`DEFAULT_BASE_URL` (``$STM_PROBE_RELEASE_URL`` overrides it: a mirror, a test server) and the release
stems of `stm_probe.models.checkpoint_dir` (``unified_halonet_tiny.pth`` for unified_halo_tiny).
`fetch` returns a model's file from the cache folder (`cache_dir`: ``$STM_PROBE_CACHE/checkpoints``,
default ``~/.cache/stm-probe/checkpoints``), downloading it first when it is not there:

* a progress bar on stderr (tqdm; none when quiet), HTTP ``Range`` requests to resume a partial
  download (``<file>.part``, kept across calls) after a cut connection, and an atomic rename once
  the file is complete; a second process fetching the same file waits for the first (a lock file
  beside it) and then uses its file;
* an HTML page (an error or login page served with status 200), a file shorter than its
  ``Content-Length`` and a truncated zip archive are refused in one line;
* every file's sha256 is remembered in ``sha256.json`` in the cache, so a later file with the
  same name but other bytes (a changed release, a mirror, a hand-placed file) is reported.

Any network error is one line naming the URL and where the file can be put by hand (the cache path,
or ``--checkpoint-dir`` / ``--checkpoint``). Only the standard library speaks HTTP; nothing here
imports torch, so ``stm-probe weights`` is instant.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from ..errors import UsageError
from .checkpoint_dir import candidate_names
from .names import release_stem, unified_spec

DEFAULT_BASE_URL = "https://github.com/OpenGVLab/STM-Evaluation/releases/download/cls-ckpt"
URL_ENV = "STM_PROBE_RELEASE_URL"
CACHE_ENV = "STM_PROBE_CACHE"
RECORD_NAME = "sha256.json"  # {file name: {sha256, size, mtime_ns, url, recorded_at}} in the cache folder
TIMEOUT_S = 30  # seconds without a byte before a connection counts as cut
TRIES = 3  # connections per download (the later ones resume with a Range request)
CHUNK = 1 << 20


@dataclass
class Fetched:
    """A model's release file on disk: where it lies, where it came from, its sha256, and what was said."""

    model: str
    path: Path
    url: str
    sha256: str
    downloaded: bool
    notes: list[str] = field(default_factory=list)

    def manifest_entry(self) -> dict[str, Any]:
        return {"file": str(self.path), "url": self.url, "sha256": self.sha256, "downloaded": self.downloaded}


def base_url() -> str:
    """The release folder URL (``$STM_PROBE_RELEASE_URL`` or `DEFAULT_BASE_URL`), without a trailing slash."""
    return (os.environ.get(URL_ENV) or DEFAULT_BASE_URL).rstrip("/")


def release_file(model: str) -> str:
    """The release file name of a unified model, e.g. ``unified_pvt_tiny.pth``; UsageError for any other model."""
    spec = unified_spec(model)
    if spec is None:
        raise UsageError(f"--pretrained: {model} is not one of the 20 unified models, whose release files stm-probe "
                         "fetches; pass its weights with --checkpoint PATH instead")
    return f"{release_stem(spec)}.pth"


def release_url(model: str) -> str:
    return f"{base_url()}/{release_file(model)}"


def cache_dir() -> Path:
    """Folder of the downloaded files: ``$STM_PROBE_CACHE/checkpoints``, else the user's cache folder
    (``$XDG_CACHE_HOME`` or ``~/.cache``) ``/stm-probe/checkpoints``."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
                            "stm-probe")
    return Path(root).expanduser() / "checkpoints"


def manual_hint(model: str) -> str:
    """Where a file can be put by hand, for messages."""
    return (f"download it by hand to {cache_dir() / release_file(model)}, or pass --checkpoint-dir DIR holding "
            f"{release_file(model)} (or --checkpoint PATH)")


def cached_file(model: str) -> Path | None:
    """The model's file in the cache: the release name or any name ``--checkpoint-dir`` accepts (a hand-placed
    ``-ema`` file follows the ``--checkpoint-key`` rule when loaded); None when there is none. UsageError when
    several fit."""
    folder = cache_dir()
    if not folder.is_dir():
        return None
    entries = {p.name.lower(): p for p in folder.iterdir() if p.is_file()}
    hits = list(dict.fromkeys(entries[n.lower()] for n in candidate_names(model) if n.lower() in entries))
    if len(hits) > 1:
        raise UsageError(f"the cache {folder} holds {len(hits)} files for {model} ({', '.join(h.name for h in hits)}): "
                         "keep one, or pass --checkpoint PATH")
    return hits[0] if hits else None


def fetch(model: str, quiet: bool = False, download: bool = True) -> Fetched:
    """``model``'s release file from the cache, downloaded first when missing (see module docstring).

    Lines worth telling (where the file came from, a sha256 that differs from the remembered one) are
    printed on stderr unless ``quiet`` and kept in ``notes``. ``download=False``: UsageError when the file
    is not cached (used under torchrun, where ranks must not download side by side).
    """
    url = release_url(model)
    path = cached_file(model)
    downloaded = path is None
    if path is None:
        if not download:
            raise UsageError(f"--pretrained under torchrun reads the cache only and {release_file(model)} is not in "
                             f"{cache_dir()}: run `stm-probe weights --download {model}` first")
        path = cache_dir() / release_file(model)
        with _download_lock(path):  # another process fetching the same file: wait, then use its file
            downloaded = not path.is_file()
            if downloaded:
                download_file(url, path, quiet=quiet, hint=manual_hint(model))
    sha, changed = remember(path, url)
    notes = [f"{model}: {path} ({'downloaded from ' + url if downloaded else 'cached'}; --pretrained, sha256 "
             f"{sha[:12]})"]
    if changed:
        notes.append(f"{path.name}: its sha256 is now {sha[:12]}..., not the {changed[:12]}... remembered in "
                     f"{cache_dir() / RECORD_NAME}: the file changed since it was first fetched, so results made with "
                     "the earlier file differ")
    if not quiet:
        for line in notes:
            print(f"stm-probe: {line}", file=sys.stderr)
    return Fetched(model, path, url, sha, downloaded, notes)


# --- the download ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def _download_lock(dest: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``.<file>.lock`` beside ``dest`` (released by the OS if the process dies), so
    two processes never append to one ``.part`` file. Without fcntl (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        handle = open(dest.with_name(f".{dest.name}.lock"), "a")
    except OSError as exc:
        raise UsageError(f"cannot write into the cache folder {dest.parent} ({exc.strerror}): set {CACHE_ENV} to a "
                         "writable folder") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def download_file(url: str, dest: Path, quiet: bool = False, hint: str = "") -> None:
    """Download ``url`` to ``dest`` through ``dest.part`` (resumed with Range requests after a cut
    connection, up to `TRIES` connections), check it is no HTML page and not truncated, then rename it.
    UsageError (one line naming the URL and ``hint``) on any failure; a partial file is kept for the next call."""
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the cache folder {dest.parent} ({exc.strerror}): set {CACHE_ENV} to a "
                         "writable folder") from None
    expected = None
    for _ in range(TRIES):
        have = part.stat().st_size if part.is_file() else 0
        done, expected = _transfer(url, part, have, quiet, hint)
        if done:
            break
    else:
        got = part.stat().st_size if part.is_file() else 0
        raise UsageError(f"the download of {url} stopped at {got} of {expected or '?'} bytes {TRIES} times: rerun to "
                         f"resume it ({part} is kept), or {hint}")
    problem = _content_problem(part)
    if problem:
        part.unlink()
        raise UsageError(f"{url} {problem}, not a checkpoint (nothing kept): check {URL_ENV} / the URL, or {hint}")
    os.replace(part, dest)


def _transfer(url: str, part: Path, have: int, quiet: bool, hint: str) -> tuple[bool, int | None]:
    """One connection: append to ``part`` from byte ``have``. Returns (complete, expected total size or None)."""
    from .. import __version__

    headers = {"User-Agent": f"stm-probe/{__version__}"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the partial file is not a prefix of this file: start again
            part.unlink()
            return False, None
        raise UsageError(f"cannot download {url} (HTTP {exc.code} {_line(exc.reason)}): {hint}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise UsageError(f"cannot download {url} ({_line(reason) or type(exc).__name__}; offline?): {hint}") from None
    with response:
        if response.headers.get_content_type() == "text/html":
            raise UsageError(f"{url} returned an HTML page, not a checkpoint (an error or login page?): check "
                             f"{URL_ENV} / the URL, or {hint}")
        if response.status == 206 and _range_start(response.headers.get("Content-Range")) != have:
            part.unlink()  # another range than asked for: start again
            return False, None
        if response.status != 206:  # the server sent the whole file: write it from its first byte
            have = 0
        length = response.headers.get("Content-Length")
        expected = have + int(length) if length and length.isdigit() else None
        from tqdm.auto import tqdm

        with open(part, "ab" if have else "wb") as sink, tqdm(
                total=expected, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=part.name[:-5],
                disable=quiet, leave=False, dynamic_ncols=True, file=sys.stderr) as bar:
            try:
                while chunk := response.read(CHUNK):
                    sink.write(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException):  # a cut connection: the caller resumes
                return False, expected
    size = part.stat().st_size
    return expected is None or size >= expected, expected


def _range_start(content_range: str | None) -> int | None:
    """First byte of ``Content-Range: bytes a-b/n``, or None."""
    try:
        return int((content_range or "").split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _content_problem(path: Path) -> str | None:
    """Why a complete download is no checkpoint ('is an HTML page', 'is a truncated zip archive'), or None."""
    with open(path, "rb") as handle:
        head = handle.read(512)
        size = path.stat().st_size
        handle.seek(max(0, size - 65_557))  # a zip's end record lies in its last 64 KiB + 22 bytes
        tail = handle.read()
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")):
        return "is an HTML page"
    if not size:
        return "is empty"
    if head.startswith(b"PK\x03\x04") and b"PK\x05\x06" not in tail:
        return "is a truncated zip archive (the download was cut)"
    return None


def _line(reason: Any) -> str:
    return " ".join(str(reason).split())


# --- the remembered sha256 --------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def read_record() -> dict[str, dict[str, Any]]:
    """The cache's ``sha256.json`` ({} when missing or unreadable: it is rebuilt as files are seen)."""
    try:
        data = json.loads((cache_dir() / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def known_sha256(path: Path, record: dict[str, dict[str, Any]] | None = None) -> str | None:
    """The remembered sha256 of a cached file when its size and modification time are unchanged, else None."""
    entry = (read_record() if record is None else record).get(path.name)
    stat = path.stat()
    if isinstance(entry, dict) and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return entry.get("sha256")
    return None


def remember(path: Path, url: str) -> tuple[str, str | None]:
    """(sha256 of ``path``, the different sha256 remembered for its name before, or None); the record is
    updated (atomically), so a change is reported once."""
    from ..files import write_json

    record = read_record()
    sha = known_sha256(path, record)
    if sha is not None:
        return sha, None
    sha = sha256_file(path)
    before = record.get(path.name, {}).get("sha256") if isinstance(record.get(path.name), dict) else None
    stat = path.stat()
    record[path.name] = {"sha256": sha, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "url": url,
                         "recorded_at": datetime.now().astimezone().isoformat(timespec="seconds")}
    try:
        write_json(cache_dir() / RECORD_NAME, record)
    except OSError:
        pass  # a read-only cache still serves its files; the change check needs a writable one
    return sha, before if before not in (None, sha) else None


# --- the table of `stm-probe weights` ---------------------------------------------------------------------
def weights_table(patterns: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per unified model matching ``patterns`` (all 20 for None): model, file, url, published_top1,
    cached (bool), path, size (bytes), sha256 (remembered, or computed for a file not seen before)."""
    from .facts import published_top1
    from .names import select_unified

    top1 = published_top1()
    rows = []
    for spec in select_unified(patterns):
        path = cached_file(spec.name)
        sha = None
        if path is not None:
            sha, _ = remember(path, release_url(spec.name))
        rows.append(dict(model=spec.name, file=release_file(spec.name), url=release_url(spec.name),
                         published_top1=top1.get(spec.name), cached=path is not None,
                         path=str(path) if path else "", size=path.stat().st_size if path else "", sha256=sha or ""))
    return rows


def format_weights(rows: list[dict[str, Any]]) -> str:
    """Rows of `weights_table` as aligned columns (sizes in MiB, sha256 shortened to 12 digits)."""
    headers = ("model", "release file", "top-1 (paper)", "cached", "sha256", "URL")
    cells = [(r["model"], r["file"], "" if r["published_top1"] is None else f"{r['published_top1']:.1f}",
              f"{r['size'] / 2**20:.1f} MiB" if r["cached"] else "no", r["sha256"][:12], r["url"]) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip() for c in cells]
    return "\n".join(lines)
