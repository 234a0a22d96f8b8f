"""Distribution-shift sets as --data sources (ImageNet-V2, -Sketch, -R, -A) and the 200-class restriction."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from stm_probe.data import resolve_source
from stm_probe.data.shift import class_subset, class_wnids
from stm_probe.errors import UsageError
from stm_probe.models.label_space import ClassSubset, restrict_classes

# First and last ImageNet-1k indices of the authors' own lists (imagenet-r eval.py's imagenet_r_indices;
# natural-adv-examples eval.py's thousand_k_to_200 keys with a value != -1).
R_HEAD, R_TAIL = [1, 2, 4, 6, 8, 9, 11, 13], [967, 980, 981, 983, 988]
A_HEAD, A_TAIL = [6, 11, 13, 15, 17, 22, 23, 27], [981, 984, 986, 987, 988]


def _tree(root: Path, classes: list[str], per_class: int = 1) -> Path:
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (i * 60, 0, 0)).save(root / c / f"{i}.png")
    return root


@pytest.mark.parametrize("name, head, tail", [("imagenet-r", R_HEAD, R_TAIL), ("imagenet-a", A_HEAD, A_TAIL)])
def test_class_lists_are_200_imagenet_classes(name: str, head: list[int], tail: list[int]) -> None:
    from timm.data import ImageNetInfo

    synsets = ImageNetInfo("imagenet-1k").label_names()
    wnids, subset = class_wnids(name), class_subset(name)
    assert len(set(wnids)) == 200 and set(wnids) <= set(synsets)
    assert list(subset) == sorted(subset) and [synsets[i] for i in subset] == list(wnids)
    assert list(subset[:len(head)]) == head and list(subset[-len(tail):]) == tail


def test_r_and_a_lists_differ() -> None:
    assert len(set(class_subset("imagenet-r")) & set(class_subset("imagenet-a"))) == 86


def test_imagenet_v2_integer_folders(tmp_path: Path) -> None:
    src = resolve_source(f"imagenet-v2:{_tree(tmp_path / 'v2', ['0', '5', '999'])}")
    assert list(src.labels) == [0, 5, 999] and src.class_subset is None
    assert "ImageNet-V2" in src.describe()
    with pytest.raises(UsageError, match="not an integer 0..999"):
        resolve_source(f"imagenet-v2:{_tree(tmp_path / 'bad', ['0', '1000'])}")


def test_imagenet_sketch_synset_folders(tmp_path: Path) -> None:
    src = resolve_source(f"imagenet-sketch:{_tree(tmp_path / 's', ['n01440764', 'n15075141'])}")
    assert list(src.labels) == [0, 999] and src.class_subset is None and "ImageNet-Sketch" in src.describe()
    with pytest.raises(UsageError, match="not ImageNet-1k synsets"):
        resolve_source(f"imagenet-sketch:{_tree(tmp_path / 'x', ['cat', 'dog'])}")


def test_imagenet_r_labels_are_positions_in_the_subset(tmp_path: Path) -> None:
    # goldfish (ImageNet-1k 1) is R's first class, n12267677 acorn (988) its last
    src = resolve_source(f"imagenet-r:{_tree(tmp_path / 'r', ['n01443537', 'n12267677'], per_class=2)}")
    assert list(src.labels) == [0, 0, 199, 199]
    assert src.class_subset == class_subset("imagenet-r") and len(src.class_subset) == 200
    assert "logits restricted to the 200 ImageNet-R classes" in src.describe()
    src.check_labels(len(src.class_subset), "m")  # labels fit the 200 restricted outputs
    with pytest.raises(UsageError, match="not one of the 200 ImageNet-R classes"):
        resolve_source(f"imagenet-r:{_tree(tmp_path / 'bad', ['n01440764'])}")  # tench is not in R


def test_imagenet_a_labels(tmp_path: Path) -> None:
    src = resolve_source(f"IMAGENET-A:{_tree(tmp_path / 'a', ['n01498041', 'n12267677'])}")
    assert list(src.labels) == [0, 199] and src.class_subset[0] == 6  # stingray


def test_exact_r_tree_is_recognised_without_prefix(tmp_path: Path) -> None:
    wnids = list(class_wnids("imagenet-r"))
    src = resolve_source(_tree(tmp_path / "r", wnids))
    assert src.label_space == "imagenet-r" and list(src.labels) == list(range(200))
    assert "recognised as ImageNet-R" in src.describe()
    partial = resolve_source(_tree(tmp_path / "p", wnids[:199]))  # not the whole list: plain ImageNet-1k labels
    assert partial.label_space == "imagenet-1k" and partial.class_subset is None
    assert list(partial.labels) == list(class_subset("imagenet-r")[:199])


class _Stub(nn.Module):
    """1000 logits per image: class 0 (tench, not in R) highest, then 2 (R's 2nd class), then 1 (R's 1st)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 1000)
        logits[:, 0], logits[:, 2], logits[:, 1] = 10.0, 5.0, 3.0
        return logits


def test_restriction_scores_the_best_class_inside_the_subset() -> None:
    subset = class_subset("imagenet-r")
    x = torch.rand(3, 3, 8, 8)
    full = _Stub()(x)
    restricted = ClassSubset(_Stub(), subset)(x)
    assert restricted.shape == (3, 200)
    assert torch.equal(restricted, full[:, list(subset)])
    assert full.argmax(1).tolist() == [0, 0, 0]  # unrestricted: tench, outside ImageNet-R
    assert restricted.argmax(1).tolist() == [1, 1, 1]  # position 1 = ImageNet-1k class 2 (great white shark)
    assert subset[1] == 2
    with pytest.raises(UsageError, match="has 10 classes"):
        restrict_classes(_Stub(), 10, subset, "tiny10", "imagenet-r")


def test_session_restricts_the_model(tmp_path: Path) -> None:
    from stm_probe.options import RunOptions
    from stm_probe.runtime.session import open_session

    data = _tree(tmp_path / "r", ["n01443537", "n12267677"])
    options = RunOptions(model=("unified_convnext_micro",), data=f"imagenet-r:{data}", input_size=64, device="cpu",
                         num_images=2)
    session = open_session("test", options, call={}, write_files=False)
    model = session.load_model("unified_convnext_micro")
    assert model.num_classes == 200 and isinstance(model.net, ClassSubset)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        full = model.net.net(x)
        assert torch.equal(model.net(x), full[:, list(class_subset("imagenet-r"))])
    assert model.net.model is model.net.net.model  # the feature interface passes through


def test_training_on_a_200_class_test_set_is_refused(tmp_path: Path) -> None:
    """ImageNet-R labels are positions in its 200 classes: a head trained on them would not be an ImageNet head."""
    from stm_probe.training.config import TrainConfig
    from stm_probe.training.splits import resolve_splits

    root = _tree(tmp_path / "r", class_wnids("imagenet-r")[:2], per_class=2)
    config = TrainConfig(model="unified_convnext_micro", data=f"imagenet-r:{root}", val_fraction=0.5)
    with pytest.raises(UsageError, match="200-class test set"):
        resolve_splits(config)
