"""--labels for a flat ImageNet validation folder (devkit, Kaggle, filename,label CSV) and --subset-seed."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from stm_probe.data import ImageSource, resolve_source
from stm_probe.data.labels import ilsvrc2012_wnids, read_label_file
from stm_probe.errors import UsageError

# The first five validation images: their ILSVRC2012 ids (devkit ILSVRC2012_validation_ground_truth.txt)
# and their standard sorted-synset indices (Caffe's val.txt: 65, 970, 230, 809, 516).
DEVKIT_IDS = [490, 361, 171, 822, 297]
SORTED_INDICES = [65, 970, 230, 809, 516]


def _val_folder(root: Path, count: int = 5, suffix: str = ".JPEG") -> Path:
    folder = root / "ILSVRC2012_img_val"
    folder.mkdir()
    for i in range(1, count + 1):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(folder / f"ILSVRC2012_val_{i:08d}{suffix}", format="PNG")
    return folder


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- the ILSVRC2012 id table ------------------------------------------------------------------------------------
def test_id_table_is_the_imagenet_synsets_in_devkit_order() -> None:
    from timm.data import ImageNetInfo

    wnids = ilsvrc2012_wnids()
    sorted_synsets = ImageNetInfo("imagenet-1k").label_names()
    assert len(wnids) == 1000 and set(wnids) == set(sorted_synsets)
    assert wnids[:3] == ("n02119789", "n02100735", "n02110185")  # map_clsloc.txt: 1 kit_fox, 2 English_setter, ...
    assert wnids[490 - 1] == "n01751748"  # ILSVRC2012_val_00000001: id 490, sea snake
    assert sorted(wnids).index("n01751748") == 65
    assert [sorted_synsets.index(wnids[i - 1]) for i in DEVKIT_IDS] == SORTED_INDICES


# --- devkit ground truth ----------------------------------------------------------------------------------------
def test_devkit_ids_map_to_sorted_indices(tmp_path: Path) -> None:
    folder = _val_folder(tmp_path)
    gt = _write(tmp_path / "ILSVRC2012_validation_ground_truth.txt", "\n".join(map(str, DEVKIT_IDS)) + "\n")
    src = resolve_source(folder, labels=gt)
    assert [Path(p).name for p in src.paths] == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 6)]
    assert list(src.labels) == SORTED_INDICES
    assert src.label_space == "imagenet-1k" and "devkit" in src.describe()


def test_devkit_matches_reencoded_images_by_stem(tmp_path: Path) -> None:
    folder = _val_folder(tmp_path, count=3, suffix=".png")
    gt = _write(tmp_path / "gt.txt", "1\n1000\n490\n")
    wnids = ilsvrc2012_wnids()
    expected = [sorted(wnids).index(wnids[i - 1]) for i in (1, 1000, 490)]
    assert expected == [278, sorted(wnids).index("n03255030"), 65]
    assert list(resolve_source(folder, labels=gt).labels) == expected


@pytest.mark.parametrize("text, message", [
    ("490\n361\n0\n822\n297\n", "out of range 1..1000"),
    ("490\n361\n1001\n822\n297\n", "out of range 1..1000"),
    ("490\n361\n171\n822\n297\n12\n", "1 of 6 labelled images are not in"),  # a label for a missing image
    ("490\n361\n171\n822\n", "1 of 5 images in"),  # an image without a label
    ("490\n\n171\n822\n297\n", "line 2"),  # a blank line would shift every later label
])
def test_devkit_mismatches_are_refused(tmp_path: Path, text: str, message: str) -> None:
    folder = _val_folder(tmp_path)
    gt = _write(tmp_path / "gt.txt", text)
    with pytest.raises(UsageError, match=message):
        resolve_source(folder, labels=gt)


# --- Kaggle LOC_val_solution.csv ------------------------------------------------------------------------------
def test_kaggle_solution_first_synset_is_the_label(tmp_path: Path) -> None:
    folder = _val_folder(tmp_path, count=3)
    solution = _write(tmp_path / "LOC_val_solution.csv", (
        "ImageId,PredictionString\n"
        "ILSVRC2012_val_00000003,n02119789 10 20 30 40 n02119789 1 2 3 4 \n"
        "ILSVRC2012_val_00000001,n01751748 111 40 376 265 \n"
        "ILSVRC2012_val_00000002,n01440764 5 5 50 50 n15075141 1 1 2 2\n"))
    src = resolve_source(folder, labels=solution)
    assert list(src.labels) == [65, 0, 278]  # sea snake, tench, kit fox


def test_kaggle_unknown_synset_is_refused(tmp_path: Path) -> None:
    folder = _val_folder(tmp_path, count=1)
    solution = _write(tmp_path / "s.csv", "ImageId,PredictionString\nILSVRC2012_val_00000001,n00000001 1 2 3 4\n")
    with pytest.raises(UsageError, match="not an ImageNet-1k synset"):
        resolve_source(folder, labels=solution)


# --- filename,label CSV ---------------------------------------------------------------------------------------
def test_csv_integer_labels_with_header(tmp_path: Path) -> None:
    folder = _val_folder(tmp_path, count=3)
    labels = _write(tmp_path / "l.csv", "filename,label\nILSVRC2012_val_00000002.JPEG,7\n"
                                        "ILSVRC2012_val_00000001.JPEG,3\nILSVRC2012_val_00000003,0\n")
    src = resolve_source(folder, labels=labels)
    assert list(src.labels) == [3, 7, 0] and src.label_space == "list"


def test_csv_synset_labels(tmp_path: Path) -> None:
    folder = _val_folder(tmp_path, count=2)
    labels = _write(tmp_path / "l.csv",
                    "ILSVRC2012_val_00000001.JPEG,n15075141\nILSVRC2012_val_00000002.JPEG,n01440764\n")
    src = resolve_source(folder, labels=labels)
    assert list(src.labels) == [999, 0] and src.label_space == "imagenet-1k"


@pytest.mark.parametrize("text, message", [
    ("ILSVRC2012_val_00000001.JPEG,3\nILSVRC2012_val_00000002.JPEG,n01440764\n", "mixes integer labels"),
    ("ILSVRC2012_val_00000001.JPEG,3\nILSVRC2012_val_00000002.JPEG,-1\n", "neither a class index"),
    ("ILSVRC2012_val_00000001.JPEG,3\nILSVRC2012_val_00000001.JPEG,4\nILSVRC2012_val_00000002.JPEG,1\n",
     "labelled twice"),
    ("ILSVRC2012_val_00000001.JPEG,3\nILSVRC2012_val_00000002.JPEG,1\nother.JPEG,1\n", "not in"),
    ("ILSVRC2012_val_00000001.JPEG,3\n", "have no label"),
    ("ILSVRC2012_val_00000001.JPEG,3\nILSVRC2012_val_00000002.JPEG,1\nILSVRC2012_val_00000001,5\n",
     "labelled twice, 3 and 5"),  # once by file name, once by stem
])
def test_csv_mismatches_are_refused(tmp_path: Path, text: str, message: str) -> None:
    folder = _val_folder(tmp_path, count=2)
    labels = _write(tmp_path / "l.csv", text)
    with pytest.raises(UsageError, match=message):
        resolve_source(folder, labels=labels)


def test_labels_refused_for_a_class_folder_tree(tmp_path: Path) -> None:
    (tmp_path / "tree" / "n01440764").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "tree" / "n01440764" / "a.png")
    labels = _write(tmp_path / "l.csv", "a.png,0\n")
    with pytest.raises(UsageError, match="class folders already"):
        resolve_source(tmp_path / "tree", labels=labels)


def test_format_recognised_from_content(tmp_path: Path) -> None:
    assert read_label_file(_write(tmp_path / "a.txt", "1\n2\n")).kind.startswith("ILSVRC2012 devkit")
    assert read_label_file(_write(tmp_path / "b.csv", "ImageId,PredictionString\nx,n01440764 1 2 3 4\n")).kind \
        .startswith("Kaggle")
    assert read_label_file(_write(tmp_path / "c.csv", "x.png,1\n")).kind == "filename,label CSV"


# --- --subset-seed --------------------------------------------------------------------------------------------
def _labelled(root: str, order: list[int] | None = None) -> ImageSource:
    """30 pseudo images, classes 0, 1, 2 with 10 images each (no file is read)."""
    items = [(f"{root}/c{c}/img{i:02d}.png", c) for c in range(3) for i in range(10)]
    if order is not None:
        items = [items[i] for i in order]
    return ImageSource(tuple(p for p, _ in items), tuple(c for _, c in items), "list", Path(root) / "list.txt",
                       label_space="list")


def test_subset_seed_is_class_balanced_and_reproducible() -> None:
    src = _labelled("/data")
    a = src.take(7, seed=3)
    counts = Counter(a.labels)
    assert len(a) == 7 and sorted(counts.values()) == [2, 2, 3]
    assert a.paths == src.take(7, seed=3).paths
    assert "seeded class-balanced subset (--subset-seed 3): 7 of 30 images, 3 classes, 2-3 per class" in a.describe()
    assert set(a.paths) != set(src.take(7, seed=4).paths)
    # each prefix of the round-robin order is balanced too: 3 images = one per class
    assert sorted(a.labels[:3]) == [0, 1, 2]


def test_subset_seed_ignores_listing_order_and_location() -> None:
    shuffled = list(reversed(range(30)))
    a = _labelled("/data").take(9, seed=11)
    b = _labelled("/data", order=shuffled).take(9, seed=11)
    c = _labelled("/elsewhere").take(9, seed=11)
    assert a.paths == b.paths
    assert [p.replace("/elsewhere", "/data") for p in c.paths] == list(a.paths)
    assert Counter(a.labels) == Counter({0: 3, 1: 3, 2: 3})


def test_subset_seed_small_class_gives_what_it_has() -> None:
    items = [(f"/d/a{i}.png", 0) for i in range(2)] + [(f"/d/b{i}.png", 1) for i in range(10)]
    src = ImageSource(tuple(p for p, _ in items), tuple(c for _, c in items), "list", Path("/d/l.txt"))
    assert Counter(src.take(8, seed=0).labels) == Counter({0: 2, 1: 6})
    assert src.take(50, seed=0) is src  # asking for more than there are keeps everything


def test_robustbench_ids_on_the_flat_labelled_folder(tmp_path: Path) -> None:
    folder = _val_folder(tmp_path, count=3)
    src = resolve_source(folder, labels=_write(tmp_path / "gt.txt", "490\n361\n171\n"))
    ids = _write(tmp_path / "ids.txt",
                 "n09193705/ILSVRC2012_val_00000002.JPEG\nn01751748/ILSVRC2012_val_00000001.JPEG\n")
    kept = src.restrict(ids)
    assert [Path(p).name for p in kept.paths] == ["ILSVRC2012_val_00000002.JPEG", "ILSVRC2012_val_00000001.JPEG"]
    assert list(kept.labels) == [970, 65]  # n09193705 (alp) is sorted index 970
    wrong = _write(tmp_path / "wrong.txt", "n01440764/ILSVRC2012_val_00000001.JPEG\n")
    with pytest.raises(UsageError, match="disagree"):
        src.restrict(wrong)
