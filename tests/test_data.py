"""Tests for stm_probe.data: sources, labels, the eval transform, skipping unreadable files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from stm_probe.data import (
    IMG_EXTENSIONS,
    Batch,
    ShortSideResize,
    default_data_dir,
    eval_transform,
    make_loader,
    resolve_source,
)
from stm_probe.errors import UsageError

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "images"


def _write_image(path: Path, size: tuple[int, int] = (40, 30), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _all(loader) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    batches = list(loader)
    assert all(isinstance(b, Batch) for b in batches)
    images = torch.cat([b.images for b in batches])
    labels = torch.cat([b.labels for b in batches])
    return images, labels, [p for b in batches for p in b.paths]


# ---------------------------------------------------------------- sources and labels


def test_imagefolder_synset_folders_get_imagenet_indices(tmp_path):
    # n01440764 (tench) = 0, n01443537 (goldfish) = 1, n15075141 (toilet tissue) = 999 in
    # ImageNet-1k; sorted-folder indices would give 2 for the last one instead.
    _write_image(tmp_path / "n01443537" / "b.png")
    _write_image(tmp_path / "n01440764" / "a.jpg")
    _write_image(tmp_path / "n01440764" / "c.JPEG")
    _write_image(tmp_path / "n15075141" / "d.png")
    src = resolve_source(tmp_path)
    assert src.kind == "imagefolder" and src.label_space == "imagenet-1k"
    assert [Path(p).relative_to(tmp_path).as_posix() for p in src.paths] == [
        "n01440764/a.jpg",
        "n01440764/c.JPEG",
        "n01443537/b.png",
        "n15075141/d.png",
    ]
    assert src.labels == (0, 0, 1, 999)
    _, labels, _ = _all(make_loader(src, batch_size=3))
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 0, 1, 999]


def test_imagefolder_plain_names_use_sorted_folder_index(tmp_path):
    _write_image(tmp_path / "zebra" / "z.png")
    _write_image(tmp_path / "apple" / "nested" / "deep" / "a.png")  # found recursively
    _write_image(tmp_path / "mango" / "m.png")
    _write_image(tmp_path / ".hidden" / "h.png")  # hidden folders are ignored
    (tmp_path / "apple" / "notes.txt").write_text("not an image")
    src = resolve_source(tmp_path)
    assert src.label_space == "folder-index"
    assert src.class_names == ("apple", "mango", "zebra")
    assert [Path(p).name for p in src.paths] == ["a.png", "m.png", "z.png"]
    assert src.labels == (0, 1, 2)
    # the same convention as torchvision's ImageFolder (which does not skip hidden folders)
    (tmp_path / ".hidden" / "h.png").unlink()
    (tmp_path / ".hidden").rmdir()
    from torchvision.datasets import ImageFolder

    tv = ImageFolder(str(tmp_path))
    assert [(Path(p).name, y) for p, y in tv.samples] == [(Path(p).name, y) for p, y in zip(src.paths, src.labels)]


def test_flat_folder_is_unlabelled_and_sorted(tmp_path):
    for name in ["b.png", "a.jpg", "c.webp"]:
        _write_image(tmp_path / name)
    (tmp_path / "README.md").write_text("ignored")
    src = resolve_source(tmp_path)
    assert src.kind == "folder" and not src.has_labels
    assert [Path(p).name for p in src.paths] == ["a.jpg", "b.png", "c.webp"]
    images, labels, paths = _all(make_loader(src, batch_size=2))
    assert labels.tolist() == [-1, -1, -1]
    assert images.shape == (3, 3, 224, 224)
    assert [Path(p).name for p in paths] == ["a.jpg", "b.png", "c.webp"]


def test_text_list_with_and_without_labels(tmp_path, monkeypatch):
    img_dir = tmp_path / "imgs"
    _write_image(img_dir / "one.png")
    _write_image(img_dir / "with space.png")
    absolute = _write_image(tmp_path / "elsewhere" / "abs.png")
    lst = tmp_path / "lists" / "val.txt"
    lst.parent.mkdir()
    lst.write_text(
        "# comment\n"
        "../imgs/one.png 7\n"
        "\n"
        "../imgs/with space.png\n"
        f"{absolute} 3\n"
    )
    monkeypatch.chdir(img_dir)  # relative paths resolve against the list file, not the cwd
    src = resolve_source(lst)
    assert src.kind == "list" and src.label_space == "list"
    assert [Path(p) for p in src.paths] == [img_dir / "one.png", img_dir / "with space.png", absolute]
    assert src.labels == (7, -1, 3)
    _, labels, _ = _all(make_loader(src, batch_size=8))
    assert labels.tolist() == [7, -1, 3]

    plain = tmp_path / "plain.txt"
    plain.write_text("imgs/one.png\nimgs/with space.png\n")
    src = resolve_source(plain)
    assert src.labels == (-1, -1) and src.label_space is None


def test_num_images_takes_first_n_in_order(tmp_path):
    for i in range(5):
        _write_image(tmp_path / f"{i}.png", seed=i)
    loader = make_loader(tmp_path, batch_size=2, num_images=3)
    _, _, paths = _all(loader)
    assert [Path(p).name for p in paths] == ["0.png", "1.png", "2.png"]
    assert loader.num_images == 3 and loader.num_loaded == 3


def test_spread_classes_interleaves(tmp_path):
    for c in ["a", "b", "c"]:
        for i in range(3):
            _write_image(tmp_path / c / f"{i}.png")
    src = resolve_source(tmp_path).take(4, spread_classes=True)
    assert src.labels == (0, 1, 2, 0)
    assert resolve_source(tmp_path).take(4).labels == (0, 0, 0, 1)


# ---------------------------------------------------------------- unreadable files


@pytest.mark.parametrize("num_workers", [0, 2])
def test_corrupt_files_are_skipped_and_counted(tmp_path, num_workers):
    good = [_write_image(tmp_path / f"good{i}.jpg", seed=i) for i in range(4)]
    (tmp_path / "garbage.jpg").write_bytes(b"\x00this is not an image\xff" * 20)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good[0].read_bytes()[:300])
    src = resolve_source(tmp_path)
    assert len(src) == 6
    loader = make_loader(src, batch_size=2, num_workers=num_workers)
    images, labels, paths = _all(loader)
    assert sorted(Path(p).name for p in paths) == [p.name for p in good]
    assert images.shape == (4, 3, 224, 224)
    assert loader.num_loaded == 4 and loader.num_skipped == 2
    assert sorted(Path(s.path).name for s in loader.skipped) == ["garbage.jpg", "truncated.jpg"]
    assert all(s.reason and "\n" not in s.reason for s in loader.skipped)
    summary = loader.skip_summary()
    assert summary.startswith("skipped 2 of 6 images") and "\n" not in summary
    # a second pass resets the counters instead of accumulating
    _all(loader)
    assert loader.num_skipped == 2


def test_missing_file_in_list_is_skipped(tmp_path):
    _write_image(tmp_path / "a.png")
    lst = tmp_path / "l.txt"
    lst.write_text("a.png 1\nmissing.png 2\n")
    loader = make_loader(lst, batch_size=1)
    _, labels, _ = _all(loader)
    assert labels.tolist() == [1]
    assert [Path(s.path).name for s in loader.skipped] == ["missing.png"]


# ---------------------------------------------------------------- usage errors


def test_usage_errors(tmp_path, monkeypatch):
    with pytest.raises(UsageError, match="no such file"):
        resolve_source(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no images found"):
        resolve_source(tmp_path / "empty")
    empty_list = tmp_path / "empty.txt"
    empty_list.write_text("# nothing\n\n")
    with pytest.raises(UsageError, match="names no images"):
        resolve_source(empty_list)
    binary = tmp_path / "binary.lst"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(UsageError, match="cannot read"):
        resolve_source(binary)
    mixed = tmp_path / "mixed"
    _write_image(mixed / "top.png")
    _write_image(mixed / "cls" / "x.png")
    with pytest.raises(UsageError, match="both image files and class subfolders"):
        resolve_source(mixed)
    with pytest.raises(UsageError):
        make_loader(mixed / "cls", batch_size=0)
    monkeypatch.setenv("STM_PROBE_DATA", str(tmp_path / "gone"))
    with pytest.raises(UsageError, match="STM_PROBE_DATA"):
        resolve_source(None)


def test_env_var_replaces_default(tmp_path, monkeypatch):
    _write_image(tmp_path / "x.png")
    monkeypatch.setenv("STM_PROBE_DATA", str(tmp_path))
    src = resolve_source(None)
    assert src.is_default and [Path(p).name for p in src.paths] == ["x.png"]


# ---------------------------------------------------------------- transform


@pytest.mark.parametrize("name", ["chelsea.jpg", "coffee_crop_cup.jpg", "coins.jpg"])
@pytest.mark.parametrize("input_size", [224, 288])
def test_center_transform_matches_torchvision(name, input_size):
    img = Image.open(DATA_DIR / name)
    resize = 256 if input_size == 224 else int(input_size / 0.875)
    expected = T.Compose(
        [T.Resize(resize, InterpolationMode.BICUBIC), T.CenterCrop(input_size), T.ToTensor()]
    )(img.convert("RGB"))
    got = eval_transform(input_size)(img)
    assert got.shape == (3, input_size, input_size) and got.dtype == torch.float32
    assert 0.0 <= got.min().item() and got.max().item() <= 1.0
    assert torch.equal(got, expected)


def test_warp_transform_matches_torchvision():
    img = Image.open(DATA_DIR / "rocket.jpg")  # 480 x 320: aspect ratio is not kept
    expected = T.Compose([T.Resize((224, 224), InterpolationMode.BICUBIC), T.ToTensor()])(img)
    got = eval_transform(224, mode="warp")(img)
    assert got.shape == (3, 224, 224)
    assert torch.equal(got, expected)


def test_short_side_resize_matches_torchvision():
    img = Image.open(DATA_DIR / "rocket.jpg")  # 480 x 320 -> 384 x 256
    expected = T.Compose([T.Resize(256, InterpolationMode.BICUBIC), T.ToTensor()])(img)
    got = ShortSideResize(256)(img)
    assert got.shape == (3, 256, 384)
    assert torch.equal(got, expected)
    assert torch.equal(eval_transform(224)(img), got[:, 16:240, 80:304])  # its centre crop


def test_grayscale_and_rgba_become_rgb(tmp_path):
    Image.new("L", (50, 70), 128).save(tmp_path / "g.png")
    Image.new("RGBA", (70, 50), (255, 0, 0, 10)).save(tmp_path / "r.png")
    images, _, _ = _all(make_loader(tmp_path, batch_size=2, transform=eval_transform(64)))
    assert images.shape == (2, 3, 64, 64)
    torch.testing.assert_close(images[0], torch.full((3, 64, 64), 128 / 255))
    # transparent pixels are composited on white: c * a + 1 * (1 - a), a = 10 / 255
    a = 10 / 255
    torch.testing.assert_close(images[1, 0], torch.ones(64, 64))
    torch.testing.assert_close(images[1, 1:], torch.full((2, 64, 64), 1 - a), atol=1 / 255, rtol=0)


# ---------------------------------------------------------------- embedded default set


def test_embedded_default_set_decodes():
    assert default_data_dir() == DATA_DIR
    src = resolve_source(None)
    assert src.is_default and src.kind == "folder"
    assert len(src) >= 16 and not src.has_labels
    loader = make_loader(None, batch_size=8)
    images, labels, _ = _all(loader)
    assert loader.num_skipped == 0 and loader.num_loaded == len(src)
    assert images.shape == (len(src), 3, 224, 224)
    assert (labels == -1).all()
    assert float(images.std()) > 0.05  # real pictures, not blank frames
    # every image is documented (name, source, licence) in data/README.md
    readme = (DATA_DIR.parent / "README.md").read_text(encoding="utf-8")
    for p in src.paths:
        assert f"`{Path(p).name}`" in readme
    total = sum(Path(p).stat().st_size for p in src.paths)
    assert total < 2 * 1024 * 1024
    assert all(Path(p).suffix.lower() in IMG_EXTENSIONS for p in src.paths)
