"""Hostile and careless input: cases that must be refused with one line, skipped and counted, or
handled correctly, never crash, hang or silently give wrong numbers.

Grouped by class under ``# --- <area>: <what> ---`` headers; append new sections at the end.
"""
from __future__ import annotations

import io
import logging
import os
import signal
import struct
import threading
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from stm_probe.data import EvalTransform, ShortSideResize, make_loader, resolve_source, to_rgb_tensor
from stm_probe.errors import UsageError


class Hung(BaseException):
    """Raised by :func:`_deadline`; a BaseException, so code that skips failures cannot swallow it."""


@contextmanager
def _deadline(seconds: int):
    """Fail (instead of hanging) if the block runs longer than ``seconds`` (main thread, POSIX)."""
    if not hasattr(signal, "SIGALRM"):
        pytest.skip("needs SIGALRM")

    def _fail(signum, frame):
        raise Hung(f"blocked for more than {seconds} s")

    old = signal.signal(signal.SIGALRM, _fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _load_all(loader) -> tuple[torch.Tensor | None, list[str]]:
    batches = list(loader)
    images = torch.cat([b.images for b in batches]) if batches else None
    return images, [p for b in batches for p in b.paths]


# --- data: image files, folders and lists ---


def _png(path: Path, size: tuple[int, int] = (8, 6), value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)
    return path


def _raw_png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes) -> bytes:
    """A PNG file written chunk by chunk (for headers PIL would refuse to write)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


# image modes: numbers against numpy


def test_16bit_png_keeps_its_precision(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 65536, (24, 40), dtype=np.uint16)  # (H, W)
    arr[0, :3] = (0, 65535, 40000)  # 40000 would clip to white in a plain convert("RGB")
    Image.fromarray(arr).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as img:
        assert img.mode.startswith("I;16")
        img.load()
        got = ShortSideResize(24)(img)  # short side already 24: no resize
    expected = torch.from_numpy(arr.astype(np.float64) / 65535).float().expand(3, -1, -1)
    assert got.shape == (3, 24, 40) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1 / 65535, rtol=0)
    # the centre transform with crop_pct 1 on the (24, 24) centre equals the same array slice
    with Image.open(tmp_path / "g16.png") as img:
        img.load()
        centre = EvalTransform(24, crop_pct=1.0)(img.crop((8, 0, 32, 24)))
    torch.testing.assert_close(centre, expected[:, :, 8:32], atol=1 / 65535, rtol=0)


def test_16bit_big_endian_and_mode_i_pgm():
    arr = (np.arange(6 * 10, dtype=np.uint32).reshape(6, 10) * 1111).astype(np.uint16)
    big = Image.frombytes("I;16B", (10, 6), arr.astype(">u2").tobytes())
    expected = torch.from_numpy(arr / 65535).float().expand(3, -1, -1)
    torch.testing.assert_close(to_rgb_tensor(big), expected, atol=1 / 65535, rtol=0)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PPM")  # 16-bit PGM (maxval 65535): Pillow reads it as mode I
    buf.seek(0)
    with Image.open(buf) as pgm:
        assert pgm.mode == "I"
        torch.testing.assert_close(to_rgb_tensor(pgm), expected, atol=1 / 65535, rtol=0)


def test_32bit_tiff_uses_its_signed_range(tmp_path):
    arr = np.array([[0, 2**30, 2**31 - 1, -5]], dtype=np.int32)
    Image.fromarray(arr).save(tmp_path / "i32.tif")
    with Image.open(tmp_path / "i32.tif") as img:
        assert img.mode == "I"
        got = to_rgb_tensor(img)
    expected = np.clip(arr / (2**31 - 1), 0, 1)
    torch.testing.assert_close(got[0], torch.from_numpy(expected).float(), atol=1e-6, rtol=0)


def test_float_image_is_clipped_to_unit_range():
    arr = np.array([[-0.5, 0.25, 0.75, 1.5, np.nan]], dtype=np.float32)
    got = to_rgb_tensor(Image.fromarray(arr))
    assert got.shape == (3, 1, 5)
    torch.testing.assert_close(got[1], torch.tensor([[0.0, 0.25, 0.75, 1.0, 0.0]]))


def test_16bit_resize_happens_in_float():
    # a shallow 16-bit ramp (30000..30255 of 65535): 8-bit resizing would keep about one level
    ramp = (30000 + np.round(np.linspace(0, 255, 64))).astype(np.uint16)
    arr = np.tile(ramp, (48, 1))  # (48, 64)
    got = ShortSideResize(24)(Image.fromarray(arr))  # -> (24, 32)
    assert got.shape == (3, 24, 32)
    # independent: torch's antialiased bicubic (a = -0.5, as PIL) on the exact float values
    x = torch.from_numpy(arr / 65535).float()[None, None]
    expected = F.interpolate(x, size=(24, 32), mode="bicubic", antialias=True, align_corners=False)[0, 0]
    torch.testing.assert_close(got[0], expected, atol=2e-6, rtol=0)
    assert len(torch.unique(got[0, 0])) == 32  # every output column distinct (8 bit: 1-2 levels)


def test_8bit_modes_against_numpy():
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    alpha = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    a = alpha[..., None] / 255.0

    def check(img: Image.Image, expected: np.ndarray, atol: float = 1 / 255) -> None:
        got = to_rgb_tensor(img)
        assert got.shape == (3, 5, 7) and got.dtype == torch.float32
        torch.testing.assert_close(got, torch.from_numpy(expected).permute(2, 0, 1).float(), atol=atol, rtol=0)

    check(Image.fromarray(grey), np.repeat(grey[..., None], 3, axis=2) / 255, atol=1e-7)
    check(Image.fromarray(grey > 127).convert("1"), np.repeat((grey > 127)[..., None], 3, axis=2) * 1.0, atol=0)
    check(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), rgb / 255 * a + (1 - a))  # on white
    check(Image.fromarray(np.dstack([grey, alpha]), "LA"), np.repeat(grey[..., None] / 255, 3, axis=2) * a + (1 - a))
    cmyk = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    k = cmyk[..., 3:] / 255.0
    check(Image.fromarray(cmyk, "CMYK"), (1 - cmyk[..., :3] / 255.0) * (1 - k))
    ycc = rng.integers(16, 240, (5, 7, 3), dtype=np.uint8).astype(np.float64)
    y, cb, cr = ycc[..., 0], ycc[..., 1] - 128, ycc[..., 2] - 128  # JPEG / BT.601 full range
    bt601 = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=2)
    check(Image.fromarray(ycc.astype(np.uint8), "YCbCr"), np.clip(bt601, 0, 255) / 255, atol=2 / 255)


def test_palette_with_transparency_goes_through_rgba(tmp_path):
    palette = np.array([[255, 0, 0], [0, 0, 255], [10, 200, 30]], dtype=np.uint8)
    index = np.array([[0, 1, 2, 1], [2, 2, 0, 1]], dtype=np.uint8)
    img = Image.fromarray(index, "P")
    img.putpalette(palette.ravel().tolist())
    img.save(tmp_path / "opaque.png")
    img.save(tmp_path / "keyed.png", transparency=1)  # palette entry 1 is fully transparent
    with Image.open(tmp_path / "opaque.png") as im:
        got = to_rgb_tensor(im)
    torch.testing.assert_close(got, torch.from_numpy(palette[index] / 255).permute(2, 0, 1).float())
    keyed = palette[index].astype(np.float64) / 255
    keyed[index == 1] = 1.0  # white background
    with Image.open(tmp_path / "keyed.png") as im:
        assert im.mode == "P" and "transparency" in im.info
        got = to_rgb_tensor(im)
    torch.testing.assert_close(got, torch.from_numpy(keyed).permute(2, 0, 1).float())


def test_exif_orientation_is_not_applied(tmp_path):
    arr = np.random.default_rng(2).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(arr).save(tmp_path / "rot.png", exif=exif)
    with Image.open(tmp_path / "rot.png") as im:
        assert im.getexif().get(0x0112) == 6
    images, _ = _load_all(make_loader(tmp_path, batch_size=1, transform=ShortSideResize(6)))
    torch.testing.assert_close(images[0], torch.from_numpy(arr).permute(2, 0, 1).float() / 255)  # stored pixels


# folders: links, loops, integer class names


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_symlink_loop_and_duplicate_link_list_each_file_once(tmp_path):
    root = tmp_path / "tree"
    for name in ["x.png", "y.png", "sub/w.png"]:
        _png(root / "a" / name)
    _png(root / "b" / "z.png")
    os.symlink(root / "a", root / "a" / "loop")  # a/loop -> a
    os.symlink(root / "a" / "x.png", root / "a" / "dup.png")  # a second name for x.png
    os.symlink(root, root / "b" / "up")  # a link back to the tree root is not followed
    with _deadline(10):
        src = resolve_source(root)
    rel = [Path(p).relative_to(root).as_posix() for p in src.paths]
    # each real file once, under its first path in sorted order (dup.png < x.png)
    assert rel == ["a/dup.png", "a/sub/w.png", "a/y.png", "b/z.png"]
    assert src.labels == (0, 0, 0, 1)
    real_files = {os.path.realpath(p) for p in root.rglob("*.png") if "loop" not in p.parts and "up" not in p.parts}
    assert {os.path.realpath(p) for p in src.paths} == real_files and len(src) == len(real_files)


def test_integer_class_folders_are_their_own_labels(tmp_path):
    for name in ["0", "1", "2", "10", "100"]:
        _png(tmp_path / name / "img.png")
    src = resolve_source(tmp_path)
    assert src.label_space == "folder-integer"
    assert [int(Path(p).parent.name) for p in src.paths] == list(src.labels)
    assert sorted(src.labels) == [0, 1, 2, 10, 100]  # string rank would give 0, 1, 3, 4, 2
    assert "integer class-folder names" in src.describe()


# non-regular files: skipped, never opened for reading


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_fifos_are_skipped_not_opened(tmp_path):
    good = _png(tmp_path / "flat" / "a.png", value=200)
    os.mkfifo(tmp_path / "flat" / "b.png")
    (tmp_path / "flat" / "c.jpg").mkdir()  # a directory named like an image: not listed in a folder
    lst = tmp_path / "list.txt"
    lst.write_text(f"{good} 3\nflat/b.png 4\nflat/c.jpg 5\n")
    with _deadline(10):
        flat = make_loader(tmp_path / "flat", batch_size=2)
        images, paths = _load_all(flat)
        listed = make_loader(lst, batch_size=2)
        _, listed_paths = _load_all(listed)
    assert paths == [str(good)] and listed_paths == [str(good)]
    torch.testing.assert_close(images, torch.full((1, 3, 224, 224), 200 / 255))
    assert [(Path(s.path).name, s.reason) for s in flat.skipped] == [("b.png", "not a regular file (named pipe)")]
    assert [(Path(s.path).name, s.reason) for s in listed.skipped] == [
        ("b.png", "not a regular file (named pipe)"),
        ("c.jpg", "not a regular file (directory)"),
    ]
    assert flat.skip_summary().startswith("skipped 1 of 2 images")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_list_read_from_a_pipe_is_relative_to_the_cwd(tmp_path, monkeypatch):
    _png(tmp_path / "imgs" / "a.png")
    read_end, write_end = os.pipe()  # as `--data <(ls imgs/*.png)` gives: /dev/fd/N
    writer = threading.Thread(target=lambda: (os.write(write_end, b"imgs/a.png 2\n"), os.close(write_end)),
                              daemon=True)
    monkeypatch.chdir(tmp_path)
    writer.start()
    try:
        with _deadline(10):
            src = resolve_source(f"/dev/fd/{read_end}")
    finally:
        os.close(read_end)
    writer.join(5)
    assert src.paths == (str(tmp_path / "imgs" / "a.png"),) and src.labels == (2,)


# unreadable files: skipped and counted once, with a reason


def test_careless_files_are_skipped_with_reasons(tmp_path):
    good = _png(tmp_path / "good.png", value=50)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.png").write_text("this is a text file, not a picture\n")
    (tmp_path / "vector.jpg").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    (tmp_path / "bomb.png").write_bytes(_raw_png(100_000, 100_000, 8, 0, b""))  # 10^10 pixels declared
    if hasattr(os, "symlink"):
        os.symlink(tmp_path / "gone.png", tmp_path / "broken.png")
    loader = make_loader(tmp_path, batch_size=4)
    with _deadline(10):
        images, paths = _load_all(loader)
    assert paths == [str(good)]
    torch.testing.assert_close(images, torch.full((1, 3, 224, 224), 50 / 255))
    reasons = {Path(s.path).name: s.reason for s in loader.skipped}
    assert reasons["empty.jpg"] == "empty file (0 bytes)"
    assert reasons["notes.png"].startswith("not an image in a readable format")
    assert reasons["vector.jpg"].startswith("not an image in a readable format")  # EPS never reaches Ghostscript
    assert reasons["bomb.png"].startswith("DecompressionBombError")
    if hasattr(os, "symlink"):
        assert reasons["broken.png"] == "No such file or directory"
    assert loader.num_loaded == 1 and loader.num_skipped == len(reasons) == (5 if hasattr(os, "symlink") else 4)
    assert all("\n" not in r for r in reasons.values())


def test_extreme_aspect_ratio_is_skipped_not_blown_up(tmp_path, monkeypatch):
    _png(tmp_path / "strip.png", size=(1, 300))
    _png(tmp_path / "square.png", size=(40, 40))
    # centre transform at 32: short side 36, so the strip would become 36 x 10800 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)
    loader = make_loader(tmp_path, batch_size=2, transform=EvalTransform(32))
    _, paths = _load_all(loader)
    assert [Path(p).name for p in paths] == ["square.png"]
    assert [Path(s.path).name for s in loader.skipped] == ["strip.png"]
    assert "36x10800" in loader.skipped[0].reason


def test_skipped_files_are_reported_once(tmp_path, caplog):
    _png(tmp_path / "a.png")
    lst = tmp_path / "l.txt"
    lst.write_text("a.png 1\nmissing.png 2\nmissing.png 2\nother.png\n")
    loader = make_loader(lst, batch_size=1)
    with caplog.at_level(logging.INFO, logger="stm_probe.data"):
        _load_all(loader)
        _load_all(loader)  # a second pass logs nothing either
    assert caplog.records == []
    summary = loader.skip_summary()
    assert loader.num_skipped == 2  # a repeated entry of a list is dropped: each image counts once
    assert summary.startswith("skipped 2 of 3 images") and "\n" not in summary
    assert summary.count("missing.png") == 1 and summary.count("other.png") == 1
    assert loader.skip_summary(max_paths=1).endswith(", and 1 more file")
    assert any("1 repeated entry" in note for note in loader.source.notes)


def test_repeated_ids_and_negative_labels(tmp_path):
    from stm_probe.errors import UsageError

    for name in ("a.png", "b.png"):
        _png(tmp_path / name)
    lst = tmp_path / "l.txt"
    lst.write_text("a.png 3\nb.png -1\n")
    with pytest.raises(UsageError, match="label -1 on line 2 is negative"):
        resolve_source(lst)
    ids = tmp_path / "ids.txt"
    ids.write_text("b.png\na.png\nb.png\n")
    folder = tmp_path / "f"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        _png(folder / name)
    src = resolve_source(folder).restrict(ids)
    assert [Path(p).name for p in src.paths] == ["b.png", "a.png"]


# list files and --image-list


def test_list_file_with_bom_crlf_and_nul(tmp_path):
    _png(tmp_path / "a.png")
    lst = tmp_path / "windows.txt"
    lst.write_bytes("\ufeffa.png 7\r\n\r\n# note\r\na.png\r\n".encode("utf-8"))
    src = resolve_source(lst)
    assert src.paths == (str(tmp_path / "a.png"),) and src.labels == (7,)  # the repeat is dropped
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b"a.png\x00\x00\x01")  # valid UTF-8, but binary
    with pytest.raises(UsageError, match="cannot read it as a UTF-8 text list"):
        resolve_source(binary)


def test_check_labels_against_the_number_of_classes(tmp_path):
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png")
    lst = tmp_path / "l.txt"
    lst.write_text("a.png 999\nb.png\n")
    resolve_source(lst).check_labels(1000, "resnet")  # fits: nothing raised
    lst.write_text("a.png 3\nb.png 1000\n")
    src = resolve_source(lst)
    with pytest.raises(UsageError) as e:
        src.check_labels(1000, "unified_pvt_tiny")
    msg = str(e.value)
    assert msg.startswith("label 1000 in ") and "\n" not in msg
    assert "out of range for unified_pvt_tiny (1000 classes, labels 0..999): fix the list file" in msg
    src.check_labels(1001, "big")
    lst.write_text("a.png -2\n")
    with pytest.raises(UsageError, match="label -2 on line 1 is negative"):
        resolve_source(lst)
    for name in ["0", "5"]:  # integer class folders are labels too
        _png(tmp_path / "tree" / name / "x.png")
    with pytest.raises(UsageError, match="label 5 .* fix the class folders"):
        resolve_source(tmp_path / "tree").check_labels(5, "m")


def test_restrict_to_an_image_list(tmp_path):
    root = tmp_path / "val"
    for synset, names in {"n01440764": ["v1.JPEG", "v2.JPEG"], "n01443537": ["v3.JPEG", "v4.JPEG"]}.items():
        for n in names:
            _png(root / synset / n)  # PNG data in .JPEG files: decoded by content
    ids = tmp_path / "imagenet_test_image_ids.txt"
    ids.write_text("# RobustBench style\nn01443537/v4.JPEG\nn01440764/v1.JPEG\n\nv3.JPEG\nn01443537/v4.JPEG\n")
    full = resolve_source(root)
    src = full.restrict(ids)
    assert [Path(p).relative_to(root).as_posix() for p in src.paths] == [
        "n01443537/v4.JPEG", "n01440764/v1.JPEG", "n01443537/v3.JPEG"]  # the repeated id counts once
    assert src.labels == (1, 0, 1)  # tench = 0, goldfish = 1
    assert "restricted to the 3 images" in src.describe() and "1 repeated id(s) dropped" in src.describe()
    assert len(full) == 4  # the original source is unchanged
    _, paths = _load_all(make_loader(src, batch_size=3, transform=EvalTransform(32)))
    assert paths == list(src.paths)

    ids.write_text("n01440764/v1.JPEG\nn01440764/nope.JPEG\nn99999999/x.JPEG\n")
    with pytest.raises(UsageError, match=r"2 of 3 listed images are not in .*first: n01440764/nope\.JPEG"):
        full.restrict(ids)
    _png(root / "n01440764" / "v3.JPEG")
    ids.write_text("v3.JPEG\n")
    with pytest.raises(UsageError, match="matches 2 images"):
        resolve_source(root).restrict(ids)
    ids.write_text("# nothing\n")
    with pytest.raises(UsageError, match="names no images"):
        full.restrict(ids)


def test_data_errors_are_one_line(tmp_path):
    with pytest.raises(UsageError) as e:
        resolve_source(tmp_path / "no\nsuch")
    assert "\n" not in str(e.value) and "no such file" in str(e.value)
    weird = tmp_path / "bad\nname"
    _png(weird / "top.png")
    _png(weird / "cls\tx" / "a.png")
    with pytest.raises(UsageError) as e:
        resolve_source(weird)
    assert "\n" not in str(e.value) and "both image files and class subfolders" in str(e.value)


# --- runs: numbers that cannot be trusted, out-of-range options, damaged run folders ---
import json as _json  # noqa: E402
import re  # noqa: E402

import pandas as _pd  # noqa: E402
import torch as _torch  # noqa: E402

import stm_probe as _stm_probe  # noqa: E402
from stm_probe.cli import main as _main

_MICRO = "unified_convnext_micro"
_QUICK = {"erf": ["--stages", "1", "--thresholds", "0.5"], "invariance": ["--kind", "translation", "--levels", "0,8"],
          "adversarial": ["--attack", "fgsm", "--eps", "4"]}


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("stm-probe: error:"), err
    return err


def _probe_argv(probe: str, out: Path, *extra: str) -> list[str]:
    """The probe's quick settings, with those that ``extra`` gives again left out (a list option may be
    given only once)."""
    quick, given = list(_QUICK[probe]), {a for a in extra if a.startswith("--")}
    kept = [a for i, a in enumerate(quick) if a not in given and not (i and quick[i - 1] in given)]
    return [probe, "--model", _MICRO, "--input-size", "32", "--num-images", "2", "--bootstrap", "10", "--quiet",
            "--out", str(out), *kept, *extra]


@pytest.mark.parametrize("probe", sorted(_QUICK))
def test_non_finite_weights_stop_every_probe(probe, tmp_path, capsys):
    from stm_probe.models import create_model

    state = create_model(_MICRO).state_dict()
    state["head.weight"] = _torch.full_like(state["head.weight"], float("nan"))
    ckpt = tmp_path / "nan.pth"
    _torch.save({"model": state}, ckpt)
    assert _main(_probe_argv(probe, tmp_path / "out", "--checkpoint", str(ckpt))) == 2
    assert "NaN" in _one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_non_finite_logits_stop_the_run(tmp_path, monkeypatch, capsys):
    """Finite weights can still overflow: a model whose logits are Inf reports nothing."""
    from stm_probe.models.features import Normalized

    original = Normalized.forward
    monkeypatch.setattr(Normalized, "forward", lambda self, x: original(self, x) * float("inf"))
    for probe in ("invariance", "adversarial"):
        assert _main(_probe_argv(probe, tmp_path / probe)) == 2
        err = _one_line_error(capsys)
        assert _MICRO in err and "non-finite" in err


def test_labels_out_of_range_are_refused_in_every_probe(tmp_path, capsys):
    from stm_probe.data import default_data_dir

    listing = tmp_path / "list.txt"
    listing.write_text(f"{default_data_dir() / 'camera.jpg'} 1000\n{default_data_dir() / 'coins.jpg'} 3\n")
    for probe in sorted(_QUICK):
        assert _main(_probe_argv(probe, tmp_path / probe, "--data", str(listing))) == 2
        assert "label 1000" in _one_line_error(capsys)
        assert not (tmp_path / probe).exists()


def test_partial_checkpoint_is_labelled_and_refused_below_the_threshold(tmp_path, capsys):
    from stm_probe.models import create_model

    state = {k: v for k, v in create_model(_MICRO).state_dict().items() if k.startswith(("downsample", "stages.0"))}
    ckpt = tmp_path / "part.pth"
    _torch.save(state, ckpt)
    assert _main(_probe_argv("erf", tmp_path / "o", "--checkpoint", str(ckpt), "--non-strict")) == 2
    assert "--min-loaded" in _one_line_error(capsys)
    frame = _stm_probe.run("erf", models=[_MICRO], checkpoint=[str(ckpt)], non_strict=True, min_loaded=0.0,
                           input_size=32, num_images=1, stages=[1], thresholds=[0.5], quiet=True)
    total = sum(v.numel() for v in create_model(_MICRO).state_dict().values() if v.is_floating_point())
    fraction = sum(v.numel() for v in state.values() if v.is_floating_point()) / total
    assert 0.01 < fraction < 0.99  # rounded down, so a partial file never reads as 100%
    assert set(frame["weights"]) == {f"checkpoint (non-strict, {int(fraction * 100)}% loaded)"}


@pytest.mark.parametrize("argv, expected", [
    (["--seed", str(2**70)], "--seed"),
    (["--seed", "-1"], "--seed"),
    (["--bootstrap", "1000000000"], "--bootstrap"),
    (["--input-size", "100000"], "--input-size"),
    (["--num-images", "0"], "--num-images"),
    (["--resize", "wrap"], "did you mean warp"),
    (["--thresholds", "nan"], "not a finite number"),
])
def test_out_of_range_options_are_one_line(argv, expected, tmp_path, capsys):
    assert _main(_probe_argv("erf", tmp_path / "o", *argv)) == 2
    assert expected in _one_line_error(capsys)
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def _finished_erf_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("erf") / "run"
    _stm_probe.run("erf", models=[_MICRO], out=out, input_size=32, num_images=2, stages=[1, 2],
                   thresholds=[0.5], quiet=True, bootstrap=10)
    return out


def _damaged_copy(source: Path, target: Path, damage) -> Path:
    import shutil

    shutil.copytree(source, target)
    damage(target)
    return target


@pytest.mark.parametrize("damage, expected", [
    (lambda d: (d / "erf.csv").write_text((d / "erf.csv").read_text()[:40]), "lacks the column"),
    (lambda d: (d / "erf.csv").write_bytes(bytes(range(256)) * 8), "erf.csv"),
    (lambda d: (d / "erf.csv").write_text(""), "empty"),
    (lambda d: (d / "erf.csv").write_text((d / "erf.csv").read_text().splitlines()[0] + "\n"), "no rows"),
    (lambda d: (d / "erf.csv").write_text((d / "erf.csv").read_text().replace(",area_ratio,0.", ",area_ratio,x0.", 1)),
     "not a number"),
    (lambda d: (d / "erf.csv").write_text(re.sub(r",area_ratio,[^,]*,", ",area_ratio,inf,", (d / "erf.csv").read_text(),
                                                  count=1)), "infinite"),
    (lambda d: (d / "erf" / "unified_convnext_micro_stage2_norm.npy").unlink(), "not found"),
    (lambda d: np.save(d / "erf" / "unified_convnext_micro_stage1_norm.npy", np.array([{"a": 1}], dtype=object),
                       allow_pickle=True), "not a numeric .npy"),
    (lambda d: (d / "erf.csv").write_text("\n".join(
        line for line in (d / "erf.csv").read_text().splitlines() if ",area_ratio," not in line) + "\n"),
     "no rows"),
])
def test_plot_refuses_damaged_run_folders(damage, expected, _finished_erf_run, tmp_path, capsys):
    # with its manifest, any change to a data file is caught by its sha256
    folder = _damaged_copy(_finished_erf_run, tmp_path / "run", damage)
    assert _main(["plot", "erf", str(folder)]) == 2
    err = _one_line_error(capsys)
    assert ("changed after its run wrote it" in err or "not found" in err) and str(folder) in err
    # without one (a folder put together by hand), the files themselves are checked
    (folder / "manifest.json").unlink()
    (folder / "run.json").unlink()
    assert _main(["plot", "erf", str(folder)]) == 2
    err = _one_line_error(capsys)
    assert expected in err and str(folder) in err


@pytest.mark.parametrize("damage, expected", [
    (lambda f: f.loc[0, "value"] if f.__setitem__("value", f["value"].where(f.index != 0, float("nan"))) else None,
     "empty value"),
    (lambda f: f.__setitem__("value", f["value"].where(~f["metric"].eq("area_ratio"), 5.0)), "out of its metric's range"),
    (lambda f: f.__setitem__("ci_low", f["ci_low"].where(~f["metric"].eq("area_ratio"), 0.999)), "does not hold"),
    (lambda f: f.__setitem__("model", f["model"].where(f.index != 3, "")), "empty model name"),
    (lambda f: f.__setitem__("stage", f["stage"].astype(str).where(f.index != 2, "x")), "not a number"),
])
def test_plot_checks_values_of_hand_made_folders(damage, expected, _finished_erf_run, tmp_path, capsys):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(_finished_erf_run, folder)
    (folder / "manifest.json").unlink()
    (folder / "run.json").unlink()
    frame = _pd.read_csv(folder / "erf.csv")
    damage(frame)
    frame.to_csv(folder / "erf.csv", index=False)
    assert _main(["plot", "erf", str(folder)]) == 2
    assert expected in _one_line_error(capsys)


def test_plot_refuses_an_unfinished_run(_finished_erf_run, tmp_path, capsys):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(_finished_erf_run, folder)
    (folder / "manifest.json").unlink()  # run.json stays: the run never finished
    assert _main(["plot", "erf", str(folder)]) == 2
    assert "unfinished" in _one_line_error(capsys)


def test_plot_refuses_a_map_of_the_wrong_shape(_finished_erf_run, tmp_path, capsys):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(_finished_erf_run, folder)
    (folder / "manifest.json").unlink()
    (folder / "run.json").unlink()
    for array in (np.zeros((2, 3, 4)), np.zeros(0), np.ones((4, 4), dtype=complex)):
        np.save(folder / "erf" / "unified_convnext_micro_stage1_norm.npy", array)
        assert _main(["plot", "erf", str(folder)]) == 2
        assert "damaged" in _one_line_error(capsys)


def test_plot_of_a_complete_run_still_works(_finished_erf_run, tmp_path):
    folder = _damaged_copy(_finished_erf_run, tmp_path / "run", lambda d: None)
    assert _main(["plot", "erf", str(folder)]) == 0
    assert _json.loads((folder / "run.json").read_text())["status"] == "complete"
    assert len(_pd.read_csv(folder / "erf.csv"))


# --- options and run folders found by a review as a new user ---
def test_resume_with_other_settings_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["invariance", "--model", _MICRO, "--input-size", "32", "--num-images", "2", "--quiet", "--out", str(out)]
    assert _main([*base, "--kind", "translation", "--levels", "0,8"]) == 0
    before = (out / "invariance.csv").read_text()
    assert _main([*base, "--kind", "scale", "--levels", "0.5", "--resume"]) == 2
    assert "made with other settings" in _one_line_error(capsys)
    assert _main([*base, "--kind", "translation", "--levels", "0,8", "--num-images", "3", "--resume"]) == 2
    assert "other images" in _one_line_error(capsys)
    assert (out / "invariance.csv").read_text() == before
    assert _main([*base, "--kind", "translation", "--levels", "0,8", "--batch-size", "1", "--resume"]) == 0


def test_out_inside_the_embedded_images_is_refused(capsys):
    from stm_probe.data import default_data_dir

    out = default_data_dir() / "out"
    assert _main(["erf", "--model", _MICRO, "--input-size", "32", "--out", str(out)]) == 2
    assert "inside (or contains) the image data" in _one_line_error(capsys)
    assert not out.exists()


def test_a_refused_run_leaves_no_runs_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _main(["erf", "--model", _MICRO, "--input-size", "32", "--stages", "5", "--num-images", "1"]) == 2
    assert "has stages 1..4" in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("options, expected", [
    (dict(num_images=2.7), "--num-images 2.7: give a whole number"),
    (dict(seed=1.5), "--seed 1.5: give a whole number"),
    (dict(quiet="yes"), "--quiet 'yes': give True or False"),
    (dict(kind="translaton"), "did you mean translation"),
    (dict(levles=(1,)), "unknown option 'levles' (did you mean levels?)"),
])
def test_api_values_of_the_wrong_type_are_one_line(options, expected):
    from stm_probe.errors import UsageError

    with pytest.raises(UsageError, match=re.escape(expected)):
        _stm_probe.run("invariance", models=_MICRO, input_size=32, **options)


def test_api_takes_python_values_for_list_options(tmp_path):
    frame = _stm_probe.run("adversarial", models=_MICRO, input_size=32, num_images=1, quiet=True, attack="fgsm",
                           eps=[1, 8], bootstrap=10)
    assert sorted(set(frame["eps"])) == [1.0, 8.0]
    frame = _stm_probe.run("erf", models=_MICRO, input_size=32, num_images=1, quiet=True, stages=2, thresholds=0.5)
    assert set(frame["stage"]) == {2}
    from stm_probe.errors import UsageError

    with pytest.raises(UsageError, match="does not exist"):  # one path, not one per character
        _stm_probe.run("erf", models=_MICRO, checkpoint="/nonexistent.pth", input_size=32)


def test_an_option_of_another_command_names_its_owner(capsys):
    assert _main(["erf", "--model", _MICRO, "--kind", "scale"]) == 2
    assert "erf has no option --kind (it is an option of invariance)" in _one_line_error(capsys)


def test_level_ranges(tmp_path, capsys):
    base = ["invariance", "--model", _MICRO, "--input-size", "32", "--num-images", "1", "--quiet"]
    assert _main([*base, "--kind", "scale", "--levels", "50", "--out", str(tmp_path / "a")]) == 2
    assert "crop ratios in [0.05, 32)" in _one_line_error(capsys)
    assert _main([*base, "--kind", "translation", "--levels", "8", "--relative-levels", "--out", str(tmp_path / "b")]) == 2
    assert "--levels 8 with --relative-levels" in _one_line_error(capsys)
    frame = _stm_probe.run("invariance", models=_MICRO, input_size=32, num_images=1, quiet=True, kind="translation")
    assert frame["level"].max() < 32  # default jitters that leave the image entirely are not used


def test_timm_model_with_shared_modules_keeps_its_weights():
    from stm_probe.models import create_model

    model = create_model("coat_lite_tiny", input_size=224)  # its size probe runs on the meta device
    assert not any(p.is_meta for p in model.parameters())


# --- ImageNet-C trees: validated, never guessed ---
_TENCH, _GOLDFISH = "n01440764", "n01443537"


def _imagenet_c(root: Path, variants, images=(("n01440764", "a"), ("n01443537", "b"))) -> Path:
    for corruption, severity in variants:
        for wnid, name in images:
            folder = root / corruption / str(severity) / wnid
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8)).save(folder / f"{name}.png")
    return root


@pytest.mark.parametrize("case, expected", [
    ("misspelt", r"'gausian_noise' is not an ImageNet-C corruption \(did you mean gaussian_noise\?\)"),
    ("only_misspelt", r"'gausian_noise' is not an ImageNet-C corruption"),
    ("severity", r"gaussian_noise/ holds folder '6', not a severity 1-5"),
    ("lacking", r"gaussian_noise/2 lacks 1 image\(s\) of gaussian_noise/1 \(first: n01443537/b.png\)"),
    ("first_lacks", r"gaussian_noise/2 holds 1 image\(s\) that gaussian_noise/1 lacks"),
    ("empty", r"contrast/3 holds no images"),
])
def test_imagenet_c_shaped_trees_that_fail_validation_are_refused(case, expected, tmp_path):
    root = tmp_path / "c"
    if case == "misspelt":
        _imagenet_c(root, [("gaussian_noise", 1), ("gausian_noise", 2)])
    elif case == "only_misspelt":
        _imagenet_c(root, [("gausian_noise", 1)])
    elif case == "severity":
        _imagenet_c(root, [("gaussian_noise", 1), ("gaussian_noise", 6)])
    elif case == "lacking":
        _imagenet_c(root, [("gaussian_noise", 1)])
        _imagenet_c(root, [("gaussian_noise", 2)], images=((_TENCH, "a"),))
    elif case == "first_lacks":
        _imagenet_c(root, [("gaussian_noise", 1)], images=((_TENCH, "a"),))
        _imagenet_c(root, [("gaussian_noise", 2)])
    else:
        _imagenet_c(root, [("gaussian_noise", 1)])
        (root / "contrast" / "3" / _TENCH).mkdir(parents=True)
    with pytest.raises(UsageError, match=expected) as info:
        resolve_source(root)
    assert "\n" not in str(info.value)


def test_a_valid_imagenet_c_tree_and_a_misspelt_single_corruption(tmp_path):
    source = resolve_source(_imagenet_c(tmp_path / "c", [("gaussian_noise", 1), ("contrast", 2)]))
    assert source.variants == (("gaussian_noise", 1), ("contrast", 2)) and source.labels == (0, 1)
    single = _imagenet_c(tmp_path / "d", [("gausian_noise", 1)]) / "gausian_noise"
    with pytest.raises(UsageError, match="did you mean gaussian_noise"):
        resolve_source(single)


# --- issue 20: the remaining classes ---
def test_a_fifo_given_as_a_list_file_is_refused_not_read(tmp_path):
    fifo = tmp_path / "list.txt"
    os.mkfifo(fifo)
    with _deadline(20):
        for call in (lambda: resolve_source(fifo), lambda: resolve_source(_png(tmp_path / "a.png").parent)
                     .restrict(fifo)):
            with pytest.raises(UsageError, match="is a named pipe \\(FIFO\\), not a text file"):
                call()


def test_unreadable_checkpoint_in_a_checkpoint_dir_is_named(tmp_path, monkeypatch):
    import builtins

    from stm_probe.checkpoint import checkpoint_format
    from stm_probe.models import checkpoint_dir

    ckpt = tmp_path / "unified_convnext_micro.pth"
    ckpt.write_bytes(b"PK\x03\x04")
    real_open = builtins.open

    def denied(path, *args, **kwargs):
        if str(path) == str(ckpt):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denied)
    with pytest.raises(UsageError, match=r"unified_convnext_micro.pth \(for unified_convnext_micro\) cannot be read "
                                         r"\(Permission denied\)"):
        checkpoint_dir.find_checkpoints(["unified_convnext_micro"], tmp_path)
    with pytest.raises(UsageError, match=r"cannot be read \(Permission denied\)"):
        checkpoint_format(ckpt)


def test_unreadable_class_folder_is_named(tmp_path, monkeypatch):
    for name in ("cat", "dog"):
        _png(tmp_path / "tree" / name / "a.png")
    real_scandir = os.scandir

    def denied(path="."):
        if str(path).endswith("dog"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", denied)
    with pytest.raises(UsageError, match=r"class folder dog cannot be read \(Permission denied\)"):
        resolve_source(tmp_path / "tree")


@pytest.mark.parametrize("content, expected", [
    ("490\n-1\n", r"ILSVRC2012 id -1 on line 2 is out of range"),
    ("490\n99999999999999999999999\n", r"id 99999999999999999999999 on line 2 is out of range"),
    ("ILSVRC2012_val_00000001.JPEG,99999999999999999999999\nILSVRC2012_val_00000002.JPEG,1\n",
     r"label 99999999999999999999999 on line 1 is not a class index"),
    ("ILSVRC2012_val_00000001.JPEG,-1\nILSVRC2012_val_00000002.JPEG,1\n", r"label '-1' on line 1 is neither"),
    ("/elsewhere/ILSVRC2012_val_00000001.JPEG,3\nILSVRC2012_val_00000002.JPEG,1\n", r"lies outside --data"),
])
def test_hostile_label_files_are_refused_in_one_line(content, expected, tmp_path):
    for i in (1, 2):
        _png(tmp_path / "val" / f"ILSVRC2012_val_0000000{i}.JPEG")
    labels = tmp_path / "labels.csv"
    labels.write_text(content)
    with pytest.raises(UsageError, match=expected) as info:
        resolve_source(tmp_path / "val", labels=labels)
    assert "\n" not in str(info.value)


def test_kaggle_ids_with_extensions_and_absolute_paths_find_their_images(tmp_path):
    for i in (1, 2):
        _png(tmp_path / "val" / f"ILSVRC2012_val_0000000{i}.JPEG")
    kaggle = tmp_path / "LOC_val_solution.csv"
    kaggle.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001.JPEG,n01751748 1 2 3 4\n"
                      "ILSVRC2012_val_00000002,n01440764 1 2 3 4\n")
    assert resolve_source(tmp_path / "val", labels=kaggle).labels == (65, 0)
    absolute = tmp_path / "abs.csv"
    absolute.write_text(f"{tmp_path / 'val' / 'ILSVRC2012_val_00000001.JPEG'},3\nILSVRC2012_val_00000002.JPEG,1\n")
    assert resolve_source(tmp_path / "val", labels=absolute).labels == (3, 1)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{tmp_path / 'val' / 'ILSVRC2012_val_00000001.JPEG'} 123456789012\n")
    with pytest.raises(UsageError, match="label 123456789012 on line 1 is not a class index"):
        resolve_source(listing)


def test_models_csv_into_a_closed_pipe_is_quiet():
    import subprocess
    import sys

    done = subprocess.run(f"{sys.executable} -m stm_probe models --format csv | head -1", shell=True,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert done.stdout.startswith("name") and "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


@pytest.mark.parametrize("models", [5, None, [], ["unified_convnext_micro", 3]])
def test_api_models_of_the_wrong_type_are_usage_errors(models):
    import stm_probe

    with pytest.raises(UsageError, match="give a model name or a list of names"):
        stm_probe.run("erf", models=models)


def test_api_bytes_out_path_is_a_path(tmp_path):
    from stm_probe.api import _path_text

    assert _path_text(os.fsencode(tmp_path / "out"), "out") == str(tmp_path / "out")
    with pytest.raises(UsageError, match="give a path"):
        _path_text(5, "out")


def test_radii_beyond_the_spectrum_are_refused():
    import stm_probe

    with pytest.raises(UsageError, match=r"--radii 50 is beyond the spectrum of a 32 px input \(its largest frequency "
                                         r"radius is 22.63\)"):
        stm_probe.run("bias", models="unified_convnext_micro", input_size=32, num_images=2, probe=["frequency-filter"],
                      radii="4,50", quiet=True)
