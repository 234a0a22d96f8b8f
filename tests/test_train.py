"""`stm_probe.training.train`: learning an easy split, resume equal to an uninterrupted run, a NaN
loss caught with the last good checkpoint kept, the checkpoint round trip into the analyses, and
class counts read from checkpoints.

The data: the 2-class synthetic set at 32 px (disc with texture 0 vs square with texture 1), and
a small ImageFolder of 32 px horizontal vs vertical sine stripes (random period, phase and two
random colours, plus noise: only orientation predicts the class). The model: timm's
0.4 M-parameter ``test_resnet`` (about 0.05 s per step of 16 images on 2 idle CPU cores).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import stm_probe
from stm_probe.data import eval_transform, make_loader, resolve_source
from stm_probe.errors import UsageError
from stm_probe.models import create_model
from stm_probe.models.features import Normalized
from stm_probe.training.checkpoints import LOG_COLUMNS
from stm_probe.training.config import TrainConfig
from stm_probe.training.schedule import WarmupCosine
from stm_probe.training.splits import default_val_data, resolve_splits
from stm_probe.training.train import run_training

MODEL = "test_resnet"
SIZE = 32
SYNTHETIC = "synthetic:train?classes=2&size=32&n=512"
SYNTHETIC_VAL = "synthetic:val?classes=2&size=32&seed=0"  # the default validation split of SYNTHETIC
VAL_IMAGES = 128


def _stripes(root: Path, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(SIZE)
    for cls in ("horizontal", "vertical"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            wave = 0.5 + 0.5 * np.sin(2 * np.pi * t / rng.uniform(4, 10) + rng.uniform(0, 2 * np.pi))
            w = np.repeat(wave[:, None], SIZE, 1) if cls == "horizontal" else np.repeat(wave[None, :], SIZE, 0)
            img = w[..., None] * rng.uniform(0, 1, 3) + (1 - w[..., None]) * rng.uniform(0, 1, 3)
            img = np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1)
            Image.fromarray((img * 255).astype(np.uint8)).save(root / cls / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def stripes(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stripes")
    return {"val": _stripes(root / "val", 8, 1), "small": _stripes(root / "small", 16, 2)}


def _values(data: Path, val: Path, out: Path, **extra) -> dict:
    return {"model": MODEL, "data": str(data), "val_data": str(val), "input_size": SIZE, "out": str(out),
            "quiet": True, **extra}


def _val_images() -> tuple[torch.Tensor, torch.Tensor]:
    loader = make_loader(resolve_source(SYNTHETIC_VAL), batch_size=VAL_IMAGES, num_images=VAL_IMAGES,
                         transform=eval_transform(SIZE))
    batch = next(iter(loader))
    return batch.images, batch.labels


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("run") / "train"
    values = {"model": MODEL, "data": SYNTHETIC, "num_val_images": VAL_IMAGES, "input_size": SIZE, "epochs": 8,
              "batch_size": 16, "lr": "3e-3", "out": str(out), "quiet": True}
    return run_training(values, call={"argv": ["test"]})


# --- learning -------------------------------------------------------------------------------------------
@pytest.mark.slow  # uses the 8-epoch training run: the full suite
def test_learns_an_easy_split_and_logs_it(trained) -> None:
    out = trained["out"]
    log = pd.read_csv(out / "train_log.csv")
    assert tuple(log.columns) == LOG_COLUMNS and list(log["epoch"]) == list(range(1, 9))
    assert log["val_acc"].iloc[-1] >= 90.0  # 256 optimiser steps of 16 images (97.7-99.2% over seeds 0-3)
    # the logged accuracy is the saved model's, recomputed here on the decoded validation images
    model = Normalized(create_model(MODEL, checkpoint=out / "checkpoint.pth")).eval()
    images, labels = _val_images()
    with torch.no_grad():
        logits = model(images)
    assert 100 * (logits.argmax(1) == labels).float().mean().item() == pytest.approx(log["val_acc"].iloc[-1])
    assert torch.nn.functional.cross_entropy(logits, labels).item() == pytest.approx(log["val_loss"].iloc[-1],
                                                                                      rel=1e-5)
    # lr of each epoch's last step: linear warm-up over epoch 1, then cosine to 0 (32 steps per epoch)
    steps, total = 32, 256
    expected = [3e-3 * (0.5 * (1 + math.cos(math.pi * (e * steps - 1 - steps) / (total - steps))) if e > 1 else 1.0)
                for e in range(1, 9)]
    assert np.allclose(log["lr"], expected, rtol=1e-6)
    assert WarmupCosine(8, 40)(0) == pytest.approx(1 / 8) and WarmupCosine(8, 40)(40) == pytest.approx(0.0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_classes"] == 2 and manifest["metrics"]["val_acc"] == log["val_acc"].iloc[-1]
    assert {"train_curve.png", "train_log.csv", "checkpoint.pth"} <= set(manifest["outputs"])
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


@pytest.mark.slow  # uses the 8-epoch training run: the full suite
def test_checkpoint_round_trip_gives_identical_logits(trained) -> None:
    saved = torch.load(trained["checkpoint"], weights_only=True)
    assert saved["num_classes"] == 2 and saved["epoch"] == 8 and saved["class_names"] == ["00-disc", "01-square"]
    loaded = create_model(MODEL, checkpoint=trained["checkpoint"])  # no num_classes: read from the checkpoint
    assert loaded.num_classes == 2
    images, _ = _val_images()
    with torch.no_grad():
        assert torch.equal(Normalized(loaded).eval()(images), Normalized(trained["model"]).eval()(images))


@pytest.mark.slow  # uses the 8-epoch training run: the full suite
def test_an_analysis_loads_the_checkpoint_without_flags(trained) -> None:
    frame = stm_probe.run("adversarial", models=MODEL, checkpoint=[str(trained["checkpoint"])], data=SYNTHETIC_VAL,
                          attack=["fgsm"], eps=["1"], input_size=SIZE, num_images=VAL_IMAGES, quiet=True)
    clean = frame[frame["metric"] == "clean_acc"]["value"].item()
    assert clean == pytest.approx(trained["metrics"]["val_acc"])  # the same 128 images, the same weights
    acc = trained["metrics"]["val_acc"]
    assert set(frame["weights"]) == {f"checkpoint (trained here: synthetic 2 classes, {SIZE} px, val {acc:.0f}%)"}


# --- resume, divergence, refusals --------------------------------------------------------------------
def _stop_after(epoch: int):
    def hook(done: int, row: dict, model) -> None:
        if done == epoch:
            raise KeyboardInterrupt

    return hook


def test_resume_after_an_interruption_ends_with_the_same_weights(stripes, tmp_path: Path) -> None:
    settings = dict(epochs=3, batch_size=8, lr="2e-3", augment="flip-crop", warmup_epochs="0.5")
    whole = run_training(_values(stripes["small"], stripes["val"], tmp_path / "whole", **settings))
    parts = tmp_path / "parts"
    with pytest.raises(KeyboardInterrupt):
        run_training(_values(stripes["small"], stripes["val"], parts, **settings), on_epoch_end=_stop_after(1))
    assert json.loads((parts / "run.json").read_text())["status"] == "incomplete" and not (parts / ".lock").exists()
    assert len(pd.read_csv(parts / "train_log.csv")) == 1
    with pytest.raises(UsageError, match="already holds files"):
        run_training(_values(stripes["small"], stripes["val"], parts, **settings))
    with pytest.raises(UsageError, match=r"--lr 0.001 differs from the interrupted run's 0.002") as info:
        run_training(_values(stripes["small"], stripes["val"], parts, **{**settings, "lr": "1e-3"}, resume=True))
    assert "\n" not in str(info.value)
    resumed = run_training(_values(stripes["small"], stripes["val"], parts, **settings, resume=True))
    assert resumed["resumed_from"] == 1
    a = torch.load(whole["checkpoint"], weights_only=True)
    b = torch.load(resumed["checkpoint"], weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    logs = [pd.read_csv(run / "train_log.csv").drop(columns=["images_per_s", "seconds"])
            for run in (whole["out"], parts)]
    pd.testing.assert_frame_equal(*logs)


def test_a_nan_loss_stops_in_one_line_and_keeps_the_last_good_checkpoint(stripes, tmp_path: Path) -> None:
    after_epoch_1 = {}

    def poison(epoch: int, row: dict, model) -> None:  # a divergence between epochs 1 and 2
        after_epoch_1.update({k: v.clone() for k, v in model.state_dict().items()})
        with torch.no_grad():
            model.get_classifier().weight.fill_(float("nan"))

    out = tmp_path / "nan"
    with pytest.raises(UsageError) as info:
        run_training(_values(stripes["small"], stripes["val"], out, epochs=3, batch_size=8), on_epoch_end=poison)
    message = str(info.value)
    assert message.startswith("non-finite training loss (nan) at epoch 2, step 1 of 4: training diverged")
    assert "last good checkpoint (epoch 1)" in message and "\n" not in message
    saved = torch.load(out / "checkpoint.pth", weights_only=True)
    assert saved["epoch"] == 1
    for key, value in after_epoch_1.items():
        assert torch.equal(saved["model"][key], value), key
    assert json.loads((out / "run.json").read_text())["status"] == "incomplete"


def test_hold_out_split_is_seeded_stratified_and_disjoint(stripes) -> None:
    def split(seed: int):
        config = TrainConfig(model=MODEL, data=str(stripes["small"]), val_fraction=0.25, seed=seed)
        return resolve_splits(config)

    train, val, _ = split(0)
    assert len(train) == 24 and len(val) == 8 and sorted(val.labels) == [0] * 4 + [1] * 4
    assert not set(train.paths) & set(val.paths) and len(set(train.paths) | set(val.paths)) == 32
    assert split(0)[1].paths == val.paths and set(split(1)[1].paths) != set(val.paths)


def test_settings_are_checked_in_one_line(stripes, tmp_path: Path) -> None:
    base = _values(stripes["small"], stripes["val"], tmp_path / "x")
    cases = {
        "lr": ("abc", "--lr 'abc'"), "weight_decy": ("1", "did you mean weight_decay"),
        "augment": ("flop", "did you mean flip"),
        "warmup_epochs": ("20", "--warmup-epochs 20.0"), "val_fraction": ("1.5", "strictly between 0 and 1"),
    }
    for name, (value, expected) in cases.items():
        with pytest.raises(UsageError, match=expected) as info:
            run_training({**base, name: value})
        assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="--val-data PATH, or hold out"):
        run_training({**base, "val_data": None})
    with pytest.raises(UsageError, match="not a multiple of 32"):
        run_training({**base, "model": "unified_convnext_micro", "input_size": 48})
    assert not (tmp_path / "x").exists()
    val = "synthetic:val?classes=8&size=64&seed=0"
    assert default_val_data("synthetic") == val == default_val_data("synthetic:train?n=500")
    assert default_val_data("synthetic?classes=3&seed=2") == "synthetic:val?classes=3&size=64&seed=2"
    assert default_val_data("synthetic:shape-only") is None and default_val_data(str(stripes["small"])) is None


# --- class counts from checkpoints ---------------------------------------------------------------------
def test_class_count_comes_from_the_checkpoint(tmp_path: Path) -> None:
    eight = create_model("unified_convnext_micro", num_classes=8).state_dict()
    torch.save(eight, tmp_path / "raw.pth")  # no num_classes entry: the head weight's rows say 8
    model = create_model("unified_convnext_micro", checkpoint=tmp_path / "raw.pth")
    assert model.num_classes == 8 and torch.equal(model.head.weight, eight["head.weight"])
    five = create_model("test_convnext", num_classes=5).state_dict()  # timm classifier 'head.fc'
    torch.save({"model": five, "num_classes": 5}, tmp_path / "five.pth")
    assert create_model("test_convnext", checkpoint=tmp_path / "five.pth").num_classes == 5
    with pytest.raises(UsageError, match="shape mismatch: head.fc.weight"):  # an explicit count still wins
        create_model("test_convnext", checkpoint=tmp_path / "five.pth", num_classes=3)
