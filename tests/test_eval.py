"""`eval`: the metrics against second implementations on hand-made logits (top-k against torch.topk,
NLL against F.cross_entropy, ECE on a case worked by hand and against a bin-by-bin loop), the
throughput clock, GMACs against the models' static facts, the published-gap arithmetic, and one
end-to-end run on a micro model with a seeded checkpoint found by --checkpoint-dir, its top-1 and
NLL recomputed directly with the model.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import stm_probe
from stm_probe.checkpoint import file_sha256
from stm_probe.core.classification import classification_values, ece_summary, expected_calibration_error
from stm_probe.data import eval_transform, make_loader, resolve_source
from stm_probe.errors import UsageError
from stm_probe.models import create_model
from stm_probe.models.complexity import count_gmacs
from stm_probe.models.facts import MODEL_FACTS
from stm_probe.models.features import Normalized
from stm_probe.probes.base import Extra
from stm_probe.probes.eval import EvalConfig, EvalProbe, count_gmacs_at, published_top1
from stm_probe.speed import measure_throughput

MODEL = "unified_convnext_micro"
SIZE = 32
CLASSES = 8
DATA = f"synthetic:val?classes={CLASSES}&size={SIZE}&n=16"


# --- metrics from logits --------------------------------------------------------------------------------
def test_topk_and_nll_equal_torch_on_hand_made_logits() -> None:
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(12, 9, generator=generator) * 3
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 0, -1, 4])
    values = classification_values(logits, labels)
    known = labels >= 0
    top5 = torch.topk(logits, 5, dim=1).indices
    expect_top1 = (logits.argmax(1) == labels).double() * 100
    expect_top5 = (top5 == labels[:, None]).any(1).double() * 100
    expect_nll = F.cross_entropy(logits[known].double(), labels[known], reduction="none")  # in float64, as eval
    np.testing.assert_array_equal(values["top1"][known.numpy()], expect_top1[known].numpy())
    np.testing.assert_array_equal(values["top5"][known.numpy()], expect_top5[known].numpy())
    np.testing.assert_allclose(values["nll"][known.numpy()], expect_nll.numpy(), rtol=1e-12)
    np.testing.assert_allclose(values["confidence"][known.numpy()],
                               logits.softmax(1).amax(1)[known].double().numpy(), rtol=1e-6)
    for name in ("top1", "top5", "nll", "confidence"):  # the unlabelled image counts nowhere
        assert np.isnan(values[name][10])
    # a hand case: label 2 is the 3rd most likely class
    one = classification_values(torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0, -2.0, -3.0]]), torch.tensor([2]))
    assert one["top1"][0] == 0 and one["top5"][0] == 100
    assert one["nll"][0] == pytest.approx(-np.log(np.exp(1.0) / np.exp(np.arange(-3.0, 4.0)).sum()))


def test_top5_is_left_out_with_five_classes_or_fewer() -> None:
    values = classification_values(torch.randn(4, 5), torch.tensor([0, 1, 2, 3]))
    assert np.isnan(values["top5"]).all() and np.isfinite(values["top1"]).all()


def test_ece_on_a_case_worked_by_hand() -> None:
    # 15 bins of width 1/15: 0.95 falls in (14/15, 1], 0.61 and 0.65 in (9/15, 10/15], 0.30 in (4/15, 5/15]
    confidence = np.array([0.95, 0.95, 0.61, 0.65, 0.30])
    correct = np.array([1, 0, 1, 0, 0])
    # 2/5 * |0.5 - 0.95| + 2/5 * |0.5 - 0.63| + 1/5 * |0 - 0.30|
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.18 + 0.052 + 0.06)
    assert expected_calibration_error(np.array([0.8, 0.8, 0.8, 0.8, 0.8]), np.array([1, 1, 1, 1, 0])) == \
        pytest.approx(0.0)  # 80% confident, 80% right
    assert expected_calibration_error(np.array([1.0, 1.0]), np.array([1, 1])) == 0.0


def _ece_by_loop(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return total


def test_ece_equals_a_bin_by_bin_loop_and_its_interval_holds_it() -> None:
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.1, 1.0, 300)
    confidence[:5] = [0.5, 0.25, 0.75, 1.0, 0.9]  # values near bin edges
    correct = (rng.uniform(size=300) < confidence ** 2).astype(float)
    assert expected_calibration_error(confidence, correct) == pytest.approx(_ece_by_loop(confidence, correct))
    value, low, high, n = ece_summary(confidence, np.where(correct > 0, 100.0, 0.0), n_boot=200, seed=1)
    assert n == 300 and value == pytest.approx(100 * _ece_by_loop(confidence, correct))
    assert low <= value <= high and high - low > 0
    assert ece_summary(confidence, correct, n_boot=200, seed=1) == (value, low, high, n)  # seeded


# --- throughput and size ---------------------------------------------------------------------------------
class _Counting(torch.nn.Module):
    """A linear model with a batch norm that counts its forwards and whether gradients were on."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = torch.nn.BatchNorm2d(3)
        self.fc = torch.nn.Linear(3, 2)
        self.calls: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(torch.is_grad_enabled() and self.training)
        return self.fc(self.norm(x).mean((2, 3)))


def test_throughput_is_images_over_the_timed_seconds(monkeypatch) -> None:
    clock = iter([10.0, 12.5])  # start and stop of the timed loop
    monkeypatch.setattr("stm_probe.speed.time.perf_counter", lambda: next(clock))
    net = _Counting().eval()
    assert measure_throughput(net, 4, 8, "cpu", warmup=3, iterations=10) == pytest.approx(4 * 10 / 2.5)
    assert net.calls == [False] * 13 and not net.training


def test_forward_backward_leaves_the_model_as_it_was() -> None:
    net = _Counting().eval()
    net.fc.requires_grad_(False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert measure_throughput(net, 4, 8, "cpu", warmup=1, iterations=2, backward=True) > 0
    assert net.calls == [True] * 3  # train mode with gradients, as a training step
    assert not net.training and not net.fc.weight.requires_grad and net.norm.weight.requires_grad
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # batch-norm statistics restored


def test_gmacs_at_224_equal_the_static_facts() -> None:
    net = Normalized(create_model(MODEL)).eval()
    assert round(count_gmacs_at(net, 224, "cpu"), 4) == MODEL_FACTS[MODEL].gmacs_224
    with torch.device("meta"):  # the static facts' own counter, on a model built on the meta device
        meta = create_model(MODEL)
    assert count_gmacs_at(net, 96, "cpu") == pytest.approx(count_gmacs(meta, 96), rel=1e-12)


# --- published numbers and the gap -------------------------------------------------------------------------
def _probe(**options) -> EvalProbe:
    opts = SimpleNamespace(**{"bootstrap": 100, "input_size": 224, "labels": None, **options})
    source = SimpleNamespace(label_space="imagenet-1k", location=Path("val"),
                             paths=["val/n01440764/ILSVRC2012_val_00000293.JPEG"])
    return EvalProbe(EvalConfig(), SimpleNamespace(options=opts, source=source, notes=[]))


def test_published_numbers_are_the_papers() -> None:
    published = published_top1()
    assert len(published) == 20 and published["unified_convnext_tiny"] == 82.2
    assert published["unified_halo_micro"] == 75.8 and published["unified_dcn_v3_base"] == 84.5


def test_gap_is_measured_minus_published_and_only_where_comparable() -> None:
    probe = _probe()
    top1 = np.array([100.0, 100.0, 0.0, 100.0, np.nan])  # 3 of 4 labelled images right
    n = top1.size
    values = {("top1",): top1, ("top5",): np.where(np.isnan(top1), np.nan, 100.0),
              ("nll",): np.array([0.1, 0.2, 2.0, 0.3, np.nan]), ("confidence",): np.array([0.9, 0.8, 0.7, 0.9, np.nan]),
              (Extra("params_m"),): np.full(n, 4.4), (Extra("gmacs"),): np.full(n, 0.65), (Extra("throughput_img_s"),): np.full(n, 9.0),
              (Extra("published_top1"),): np.full(n, 80.0), (Extra("gap_comparable"),): np.full(n, 1.0)}
    out = probe.summarise(values, seed=0)
    value, low, high, count, skipped = out[("top1",)]
    assert value == 75.0 and count == 4 and skipped == 1
    assert out[("top1_gap",)][:4] == pytest.approx((75.0 - 80.0, low - 80.0, high - 80.0, 4))
    assert out[("published_top1",)][0] == 80.0 and out[("params_m",)][0] == 4.4
    assert ("throughput_img_s",) not in out  # timing varies between runs: models.csv only
    assert out[("nll",)][0] == pytest.approx(2.6 / 4)
    values[(Extra("gap_comparable"),)] = np.zeros(n)
    assert not {("top1_gap",), ("published_top1",)} & set(probe.summarise(values, seed=0))  # nothing to set beside


def test_gap_obstacles_are_named() -> None:
    def model(weights="checkpoint", classes=1000):
        return SimpleNamespace(weights=weights, num_classes=classes)

    assert _probe()._gap_obstacle(model()) is None
    assert "random init" in _probe()._gap_obstacle(model("random-init"))
    assert "8 classes" in _probe()._gap_obstacle(model(classes=8))
    assert "--input-size 64" in _probe(input_size=64)._gap_obstacle(model())
    for space in ("synthetic", "imagenet-v2", "imagenet-r", "folder-index"):
        other = _probe()
        other.session.source.label_space = space
        assert f"({space} labels)" in other._gap_obstacle(model())
    listed = _probe()
    listed.session.source.label_space = "list"  # e.g. the flat val folder with a filename,label CSV
    assert listed._gap_obstacle(model()) is None
    train = _probe()  # synset folders of the train split: ImageNet labels, other images
    train.session.source.paths = ["train/n01440764/n01440764_10026.JPEG"]
    assert "not the ILSVRC2012 validation files" in train._gap_obstacle(model())
    variant = _probe()  # one ImageNet-C variant keeps the validation file names
    variant.session.source.location = Path("imagenet-c/fog/3")
    assert "ImageNet-C variant" in variant._gap_obstacle(model())


# --- end to end ----------------------------------------------------------------------------------------------
def _centroid_checkpoint(path: Path) -> None:
    """A seeded 8-class micro model whose head is a nearest-centroid classifier of the first image of
    each class (features centred, unit rows x 5): right on about half of the images, confident enough
    that the ECE is not trivial."""
    torch.manual_seed(7)
    model = create_model(MODEL, num_classes=CLASSES)
    seen = {}
    hook = model.head.register_forward_hook(lambda module, inputs, output: seen.setdefault("x", inputs[0]))
    batch = next(iter(make_loader(resolve_source(DATA), batch_size=16, transform=eval_transform(SIZE))))
    with torch.no_grad():
        Normalized(model).eval()(batch.images)
    hook.remove()
    mean = seen["x"].mean(0)
    centroids = torch.stack([seen["x"][batch.labels == c][0] - mean for c in range(CLASSES)])
    weight = 5 * centroids / centroids.norm(dim=1, keepdim=True)
    state = model.state_dict()
    state["head.weight"], state["head.bias"] = weight, -weight @ mean
    # the checkpoint names its classes (those of the synthetic set), so its labels may score it
    torch.save({"model": state, "class_names": list(resolve_source(DATA).synthetic.class_names)}, path)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """eval of a micro model with a seeded 8-class checkpoint found by --checkpoint-dir under its
    canonical name, on the 16-image synthetic val split at 32 px."""
    folder = tmp_path_factory.mktemp("ckpts")
    _centroid_checkpoint(folder / f"{MODEL}.pth")
    out = tmp_path_factory.mktemp("eval") / "run"
    frame = stm_probe.run("eval", models=MODEL, data=DATA, out=out, checkpoint_dir=str(folder), input_size=SIZE,
                          num_images=16, batch_size=8, bootstrap=200, quiet=True)
    return {"frame": frame, "out": out, "checkpoint": folder / f"{MODEL}.pth"}


def _direct(checkpoint: Path) -> dict[str, tuple[torch.Tensor, int]]:
    """{path: (logits (C,), label)} of every image of DATA, by the model loaded directly."""
    net = Normalized(create_model(MODEL, checkpoint=checkpoint)).eval()
    source = resolve_source(DATA)
    found = {}
    for batch in make_loader(source, batch_size=16, transform=eval_transform(SIZE)):
        with torch.no_grad():
            logits = net(batch.images)
        for i, index in enumerate(batch.indices.tolist()):
            found[source.paths[index]] = (logits[i], int(batch.labels[i]))
    return found


def test_csv_top1_and_nll_equal_a_direct_recomputation(run) -> None:
    frame = run["frame"].set_index("metric")
    direct = _direct(run["checkpoint"])
    logits = torch.stack([v[0] for v in direct.values()])
    labels = torch.tensor([v[1] for v in direct.values()])
    top1 = 100 * (logits.argmax(1) == labels).double().mean().item()
    assert 0 < top1 < 100  # the check is not trivial
    assert frame.loc["top1", "value"] == pytest.approx(top1) and frame.loc["top1", "n_images"] == 16
    assert frame.loc["nll", "value"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    confidence = logits.softmax(1).amax(1).double().numpy()
    correct = (logits.argmax(1) == labels).double().numpy()
    assert frame.loc["ece", "value"] == pytest.approx(100 * _ece_by_loop(confidence, correct), rel=1e-5)
    top5 = 100 * (logits.topk(5, 1).indices == labels[:, None]).any(1).double().mean().item()
    assert frame.loc["top5", "value"] == pytest.approx(top5)
    assert set(frame["weights"]) == {"checkpoint"} and frame.loc["params_m", "value"] == pytest.approx(
        sum(p.numel() for p in create_model(MODEL, num_classes=CLASSES).parameters()) / 1e6)
    assert not {"top1_gap", "published_top1"} & set(frame.index)  # 8 synthetic classes: nothing to set against ImageNet


def test_per_image_values_match_the_model_image_by_image(run) -> None:
    per_image = pd.read_csv(run["out"] / "per_image.csv")
    direct = _direct(run["checkpoint"])
    assert set(per_image["metric"]) == {"top1", "top5", "nll", "confidence"}
    for row in per_image[per_image["metric"] == "top1"].itertuples():
        logits, label = direct[row.path]
        assert row.value == (100.0 if int(logits.argmax()) == label else 0.0)
    for row in per_image[per_image["metric"] == "nll"].itertuples():
        logits, label = direct[row.path]
        assert row.value == pytest.approx(-torch.log_softmax(logits.double(), 0)[label].item(), rel=1e-5, abs=2e-6)  # float32 logits: ~1e-6 absolute in a small NLL


def test_models_table_and_manifest_name_the_checkpoint(run) -> None:
    out = run["out"]
    models = pd.read_csv(out / "models.csv")
    row = models.iloc[0]
    frame = run["frame"].set_index("metric")
    assert len(models) == 1 and row["checkpoint"] == f"{MODEL}.pth" and row["weights"] == "checkpoint"
    assert row["top1"] == pytest.approx(frame.loc["top1", "value"]) and row["throughput_img_s"] > 0
    assert row["published_top1"] == 75.1 and np.isnan(row["top1_gap"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert any(f"{MODEL}: {run['checkpoint']} (from --checkpoint-dir)" == note for note in manifest["notes"])
    assert any("no gap to the published top-1" in note for note in manifest["notes"])
    entry = manifest["models"][0]
    assert entry["checkpoint"] == str(run["checkpoint"]) and entry["sha256"] == file_sha256(run["checkpoint"])
    assert {"eval.png", "models.csv"} <= set(manifest["outputs"]) and "eval.pdf" not in manifest["outputs"]


def test_unlabelled_data_is_refused_in_one_line(tmp_path) -> None:
    from PIL import Image

    for i in range(2):
        Image.new("RGB", (40, 40), (i * 100, 50, 50)).save(tmp_path / f"{i}.png")
    with pytest.raises(UsageError, match="eval needs labelled images") as info:
        stm_probe.run("eval", models=MODEL, data=tmp_path, input_size=SIZE, quiet=True)
    assert "\n" not in str(info.value)
