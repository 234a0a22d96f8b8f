"""Label spaces (stm_probe.label_spaces): every model and labelled source has one, and labels are
never scored against a model that speaks another. All models here are the micro ConvNeXt at 32 px."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import stm_probe
from stm_probe.cli import main
from stm_probe.data import resolve_source
from stm_probe.errors import UsageError
from stm_probe.label_spaces import (
    IMAGENET_1K,
    LabelSpace,
    apply_label_options,
    check_spaces,
    data_space,
    model_space,
    spaces_match,
    trained_summary,
)
from stm_probe.probes import PROBES, get_probe

MICRO = "unified_convnext_micro"
QUICK = {"eval": {}, "invariance": {"kind": ["translation"], "levels": "0,8"},
         "adversarial": {"attack": ["fgsm"], "eps": "4"}, "corruption": {"corruptions": ["gaussian_noise"],
                                                                        "severities": "1"},
         "bias": {"probe": ["patch-shuffle"]}}


def _tree(root: Path, classes: list[str], per_class: int = 1) -> Path:
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (40, 40), (20 * k, 90, 30 * i)).save(root / name / f"{i}.png")
    return root


def _trained_checkpoint(path: Path, classes: int = 4, size: int = 32, val_acc: float = 80.0,
                        names: tuple[str, ...] | None = None, data: str = "synthetic:train?classes=4") -> Path:
    """A checkpoint as `stm-probe train` writes it (weights random: only what it records matters here)."""
    from stm_probe.data.synthetic import SyntheticSpec
    from stm_probe.models import create_model

    names = names or SyntheticSpec(split="train", classes=classes).class_names
    space = LabelSpace("names", f"synthetic ({classes} classes)", tuple(names), classes)
    trained = {"data": data, "label_space": space.to_dict(), "class_names": list(names), "num_classes": classes,
               "input_size": size, "epochs": 3, "val_acc": val_acc}
    state = create_model(MICRO, num_classes=classes).state_dict()
    torch.save({"model": state, "num_classes": classes, "arch": MICRO, "class_names": list(names),
                "input_size": size, "trained": trained}, path)
    return path


# --- spaces of data sources ----------------------------------------------------------------------------
def test_every_labelled_source_has_its_space(tmp_path):
    synsets = resolve_source(_tree(tmp_path / "syn", ["n01440764", "n01443537"]))
    assert data_space(synsets) == IMAGENET_1K
    named = data_space(resolve_source(_tree(tmp_path / "named", ["cat", "dog", "fox"])))
    assert (named.kind, named.names) == ("names", ("cat", "dog", "fox"))
    assert named.phrase.startswith("folder names (3 classes")
    integers = data_space(resolve_source(_tree(tmp_path / "int", ["0", "7"])))
    assert integers.kind == "indices"
    v2 = resolve_source(f"imagenet-v2:{_tree(tmp_path / 'v2', ['0', '7'])}")
    assert data_space(v2) == IMAGENET_1K
    synthetic = data_space(resolve_source("synthetic:texture-only?classes=5&n=10"))
    assert (synthetic.kind, synthetic.num_classes, synthetic.phrase) == ("names", 5, "synthetic (5 classes)")
    # every split of one K speaks the train split's names (label k = class k)
    assert synthetic.names == data_space(resolve_source("synthetic:train?classes=5&n=10")).names
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (40, 40)).save(flat / "a.png")
    assert data_space(resolve_source(flat)) is None


def test_model_spaces():
    assert model_space(1000) == IMAGENET_1K
    unknown = model_space(10)
    assert unknown.kind == "unknown" and "10 classes" in unknown.phrase
    space = LabelSpace("names", "synthetic (2 classes)", ("00-disc", "01-square"), 2)
    assert model_space(2, {"label_space": space.to_dict()}) == space


def test_matching_rules():
    cats = LabelSpace("names", "folder names (2 classes)", ("cat", "dog"), 2)
    assert spaces_match(IMAGENET_1K, IMAGENET_1K)
    assert not spaces_match(IMAGENET_1K, cats) and not spaces_match(cats, IMAGENET_1K)
    assert spaces_match(LabelSpace("names", "x", ("cat", "dog", "fox")), cats)  # a subset, same indices
    assert not spaces_match(LabelSpace("names", "x", ("dog", "cat")), cats)  # same names, other indices
    assert spaces_match(model_space(10), LabelSpace("indices", "class indices"))
    assert not spaces_match(model_space(10), cats)
    with pytest.raises(UsageError) as info:
        check_spaces("m", IMAGENET_1K, cats, "--data d")
    text = str(info.value)
    assert "ImageNet-1k (1000 classes)" in text and "folder names (2 classes)" in text
    assert all(flag in text for flag in ("--label-map", "--labels-as-index", "--ignore-labels"))
    assert "--labels-as-index" in check_spaces("m", IMAGENET_1K, cats, "--data d", labels_as_index=True)


# --- the contract: every probe that scores labels refuses a mismatch ---------------------------------------
def test_every_registered_probe_declares_how_it_uses_labels():
    assert set(QUICK) | {"erf", "data-efficiency"} >= set(PROBES) - {"cka"}
    assert get_probe("erf").uses_labels is False


@pytest.mark.parametrize("probe", sorted(QUICK))
def test_every_probe_refuses_labels_of_another_space(probe, tmp_path):
    data = _tree(tmp_path / "pets", ["cat", "dog"])
    with pytest.raises(UsageError, match=r"predicts ImageNet-1k \(1000 classes\), but the labels of .* are folder "
                                         r"names \(2 classes: cat, dog\).*--label-map"):
        stm_probe.run(probe, models=MICRO, data=str(data), out=str(tmp_path / "out"), input_size=32, num_images=2,
                      bootstrap=10, quiet=True, **QUICK[probe])
    assert not (tmp_path / "out").exists()


def test_data_efficiency_scores_in_the_data_space(tmp_path):
    """It trains its own K-class head on the synthetic set: its models speak the data's space by construction."""
    from types import SimpleNamespace

    session = SimpleNamespace(source=resolve_source("synthetic:val?classes=3&n=6"), notes=[], checkpoints={})
    probe = get_probe("data-efficiency")(get_probe("data-efficiency").Config(classes=3, train_images=64), session)
    assert probe.model_label_space(None) == data_space(session.source)


def test_labels_as_index_is_recorded(tmp_path):
    data = _tree(tmp_path / "pets", ["cat", "dog"])
    frame = stm_probe.run("eval", models=MICRO, data=str(data), out=str(tmp_path / "o"), input_size=32,
                          num_images=2, bootstrap=10, quiet=True, labels_as_index=True)
    assert set(frame["weights"]) == {"random-init [labels as index]"}
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["options"]["labels_as_index"] is True
    assert any("--labels-as-index" in note for note in manifest["notes"])


def test_ignore_labels_keeps_the_label_free_metrics_only(tmp_path):
    data = _tree(tmp_path / "pets", ["cat", "dog"])
    frame = stm_probe.run("invariance", models=MICRO, data=str(data), input_size=32, num_images=2, bootstrap=10,
                          quiet=True, ignore_labels=True, kind=["translation"], levels="0,8")
    assert "consistency" in set(frame["metric"]) and "top1" not in set(frame["metric"])


def test_label_map_puts_folders_in_the_model_space(tmp_path):
    data = _tree(tmp_path / "pets", ["cat", "dog"])
    mapping = tmp_path / "map.csv"
    mapping.write_text("# folder,index\ncat,281\ndog,n02085620\n")
    source = apply_label_options(resolve_source(data), str(mapping), False)
    assert source.labels == (281, 151) and data_space(source).kind == "indices"
    mapping.write_text("cat,281\n")
    with pytest.raises(UsageError, match="class folder 'dog' .* is not in the map"):
        apply_label_options(resolve_source(data), str(mapping), False)
    mapping.write_text("cat,-1\ndog,3\n")
    with pytest.raises(UsageError, match="'-1' .* is not a class index"):
        apply_label_options(resolve_source(data), str(mapping), False)


# --- checkpoints remember how they were trained -----------------------------------------------------------
def test_trained_checkpoint_sets_size_space_and_weights(tmp_path, capsys):
    ckpt = _trained_checkpoint(tmp_path / "c.pth", val_acc=80.0)
    frame = stm_probe.run("eval", models=MICRO, checkpoint=str(ckpt), data="synthetic:val?classes=4&n=8",
                          num_images=4, bootstrap=10, quiet=True)
    assert set(frame["input_size"]) == {32}  # the size it was trained at, not 224
    assert set(frame["weights"]) == {"checkpoint (trained here: synthetic 4 classes, 32 px, val 80%)"}
    # another K, a synset tree, a named tree: refused
    with pytest.raises(UsageError, match=r"predicts synthetic \(4 classes\), but the labels of .* synthetic \(8"):
        stm_probe.run("eval", models=MICRO, checkpoint=str(ckpt), data="synthetic:val?classes=8&n=8", num_images=4,
                      quiet=True)
    with pytest.raises(UsageError, match=r"predicts synthetic \(4 classes\), but the labels .* are ImageNet-1k"):
        stm_probe.run("adversarial", models=MICRO, checkpoint=str(ckpt), num_images=2, quiet=True, attack=["fgsm"],
                      data=str(_tree(tmp_path / "syn", ["n01440764", "n01443537"])))


def test_a_checkpoint_at_chance_gets_a_note(tmp_path):
    ckpt = _trained_checkpoint(tmp_path / "c.pth", val_acc=26.0)
    stm_probe.run("eval", models=MICRO, checkpoint=str(ckpt), data="synthetic:val?classes=4&n=8", num_images=4,
                  bootstrap=10, quiet=True, out=str(tmp_path / "o"))
    notes = json.loads((tmp_path / "o" / "manifest.json").read_text())["notes"]
    assert any("at or near chance accuracy (val 26.0% with 4 classes, chance 25.0%)" in n for n in notes)


def test_an_explicit_input_size_wins(tmp_path):
    ckpt = _trained_checkpoint(tmp_path / "c.pth")
    frame = stm_probe.run("eval", models=MICRO, checkpoint=str(ckpt), data="synthetic:val?classes=4&n=8",
                          num_images=2, bootstrap=10, quiet=True, input_size=64)
    assert set(frame["input_size"]) == {64}


def test_a_bare_state_dict_with_another_class_count_is_unknown(tmp_path):
    from stm_probe.models import create_model

    ckpt = tmp_path / "bare.pth"
    torch.save(create_model(MICRO, num_classes=2).state_dict(), ckpt)
    with pytest.raises(UsageError, match=r"predicts unknown \(2 classes"):
        stm_probe.run("eval", models=MICRO, checkpoint=str(ckpt), data=str(_tree(tmp_path / "p", ["cat", "dog"])),
                      input_size=32, num_images=2, quiet=True)
    # integer class folders declare themselves indices of the model: scored
    frame = stm_probe.run("eval", models=MICRO, checkpoint=str(ckpt), data=str(_tree(tmp_path / "i", ["0", "1"])),
                          input_size=32, num_images=2, bootstrap=10, quiet=True)
    assert "top1" in set(frame["metric"])


def test_old_train_checkpoints_are_read_from_their_config():
    summary = trained_summary({"arch": MICRO, "num_classes": 3, "class_names": ["a", "b", "c"], "input_size": 64,
                               "config": {"data": "/x/tree"}, "metrics": {"val_acc": 50.0}, "epoch": 2})
    assert summary["input_size"] == 64 and summary["val_acc"] == 50.0
    assert LabelSpace.from_dict(summary["label_space"]).names == ("a", "b", "c")
    assert trained_summary({"model": {}}) is None


# --- train: validation in the training space, and blame only what was given ---------------------------------
def test_train_validation_must_share_the_training_space(tmp_path):
    from stm_probe.training.config import TrainConfig
    from stm_probe.training.splits import resolve_splits

    train = _tree(tmp_path / "a", ["cat", "dog"], per_class=2)
    other = _tree(tmp_path / "b", ["dog", "fox"], per_class=2)
    with pytest.raises(UsageError, match=r"--val-data .*: its labels are folder names .* the model is trained on"):
        resolve_splits(TrainConfig(model=MICRO, data=str(train), val_data=str(other)))
    with pytest.raises(UsageError, match=r"--val-data .*: its labels are ImageNet-1k"):
        resolve_splits(TrainConfig(model=MICRO, data="synthetic:train?classes=2&n=8",
                                   val_data=str(_tree(tmp_path / "s", ["n01440764", "n01443537"]))))


def test_train_does_not_blame_val_data_it_was_not_given(tmp_path):
    from stm_probe.training.config import TrainConfig
    from stm_probe.training.splits import resolve_splits

    one_each = _tree(tmp_path / "a", ["cat", "dog"], per_class=1)
    with pytest.raises(UsageError) as info:
        resolve_splits(TrainConfig(model=MICRO, data=str(one_each), val_fraction=0.5))
    assert "--val-data" not in str(info.value) and "--val-fraction 0.5 of --data" in str(info.value)


# --- a folder named synthetic --------------------------------------------------------------------------------
def test_a_folder_named_synthetic_is_not_shadowed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "synthetic").mkdir()
    with pytest.raises(UsageError, match="ambiguous.*synthetic:val for the synthetic set or ./synthetic"):
        resolve_source("synthetic")
    assert main(["eval", "--model", MICRO, "--data", "synthetic?classes=3", "--quiet"]) == 2
    assert "ambiguous" in capsys.readouterr().err
    assert resolve_source("synthetic:val?n=4").kind == "synthetic"
