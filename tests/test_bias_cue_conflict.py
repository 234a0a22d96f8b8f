"""bias --probe cue-conflict: 16-way decisions, shape bias by hand, left-out images, category maps, end to end."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from stm_probe.cli import main
from stm_probe.core.shape_bias import shape_bias_interval
from stm_probe.data import Batch
from stm_probe.errors import UsageError
from stm_probe.probes.bias import BiasConfig
from stm_probe.probes.bias.cue_conflict import (
    CueConflict,
    categories,
    category_matrix,
    category_probabilities,
    imagenet_categories,
)

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "cue-conflict"
FACTS = REPO / "stm_probe" / "resources" / "cue_conflict_categories.json"
NAMES = ("airplane", "bear", "bicycle", "bird", "boat", "bottle", "car", "cat", "chair", "clock", "dog", "elephant",
         "keyboard", "knife", "oven", "truck")


class DecidingStub(nn.Module):
    """Logits (B, K) whose 16-way decision is the category index written in pixel (0, 0, 0) as d / 255:
    logit 10 on every class index of that category, 0 elsewhere."""

    def __init__(self, mapping: dict[str, tuple[int, ...]], num_classes: int) -> None:
        super().__init__()
        self.classes = [list(v) for v in mapping.values()]
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], self.num_classes)
        for i, d in enumerate((x[:, 0, 0, 0] * 255).round().long().tolist()):
            logits[i, self.classes[d]] = 10.0
        return logits


def _method(category_map: str | None = None, bootstrap: int = 200) -> CueConflict:
    session = SimpleNamespace(device=torch.device("cpu"), seed=0,
                              options=SimpleNamespace(input_size=8, bootstrap=bootstrap))
    return CueConflict(BiasConfig(probe=("cue-conflict",), category_map=category_map), session)


def _batch(paths: list[str], decisions: list[str]) -> Batch:
    images = torch.zeros(len(paths), 3, 8, 8)
    images[:, 0, 0, 0] = torch.tensor([NAMES.index(d) / 255 for d in decisions])
    return Batch(images, torch.full((len(paths),), -1), torch.arange(len(paths)), tuple(paths))


def _model(mapping: dict[str, tuple[int, ...]], num_classes: int) -> SimpleNamespace:
    return SimpleNamespace(name="stub", num_classes=num_classes, net=DecidingStub(mapping, num_classes))


def _wilson_percent(hits: int, n: int) -> tuple[float, float]:
    z = 1.959963984540054
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return 100 * max(0.0, centre - half), 100 * min(1.0, centre + half)


def test_the_facts_are_the_16_categories_with_disjoint_imagenet_indices() -> None:
    facts = imagenet_categories()
    assert categories() == NAMES
    assert facts == {k: tuple(v) for k, v in json.loads(FACTS.read_text())["categories"].items()}
    flat = [i for v in facts.values() for i in v]
    assert len(flat) == len(set(flat)) == 207 and 0 <= min(flat) and max(flat) < 1000
    assert facts["airplane"] == (404,) and facts["bear"] == (294, 295, 296, 297) and len(facts["dog"]) == 109


def test_category_aggregation_is_the_mean_probability_over_each_categorys_indices() -> None:
    # airplane = {404}, bear = {294, 295, 296, 297}, bicycle = {444, 671}; every other logit 0
    logits = torch.zeros(1, 1000)
    logits[0, 404], logits[0, 294], logits[0, 295], logits[0, 444] = 2.0, 1.0, 3.0, -1.0
    z = (1000 - 4) * 1.0 + math.exp(2) + math.exp(1) + math.exp(3) + math.exp(-1)
    by_hand = {"airplane": math.exp(2) / z,                            # 0.00720
               "bear": (math.exp(1) + math.exp(3) + 1 + 1) / (4 * z),  # 0.00604: holds the largest class, not mean
               "bicycle": (math.exp(-1) + 1) / (2 * z)}
    probs = category_probabilities(logits, category_matrix(imagenet_categories(), 1000))[0]
    for name, expected in by_hand.items():
        assert probs[NAMES.index(name)].item() == pytest.approx(expected, rel=1e-12)
    assert int(probs.argmax()) == NAMES.index("airplane")  # a sum over indices would pick bear (24.8/z > 7.4/z)
    assert probs[NAMES.index("dog")].item() == pytest.approx(1 / z, rel=1e-12)


def test_shape_bias_of_given_decisions_checked_by_hand() -> None:
    method = _method()
    paths = ["s/cat/cat1-dog2.png",        # decides cat:   shape hit
             "s/cat/cat2-bear1.png",       # decides bear:  texture hit
             "s/dog/dog1-car1.png",        # decides dog:   shape hit
             "s/dog/dog3-clock2.png",      # decides knife: neither
             "s/car/car1-car2.png",        # shape == texture: left out
             "s/bird/bird1-cat1.png"]      # decides cat:   texture hit
    decisions = ["cat", "bear", "dog", "knife", "car", "cat"]
    model = _model(imagenet_categories(), 1000)
    method.check_model(model)
    values = method.measure(model, _batch(paths, decisions), repeat=0)
    nan = float("nan")
    np.testing.assert_array_equal(values[("all", None, None, "shape_hit")], [1, 0, 1, 0, nan, 0])
    np.testing.assert_array_equal(values[("all", None, None, "texture_hit")], [0, 1, 0, 0, nan, 1])

    rows = method.summarise(values, seed=0, n_boot=200)
    # 5 cue-conflict images: 2 shape hits, 2 texture hits -> 2 / (2 + 2); the car image is skipped
    value, low, high, n, skipped = rows[("all", None, None, "shape_bias")]
    assert (value, n, skipped) == (0.5, 5, 1) and 0 <= low <= 0.5 <= high <= 1
    for metric in ("shape_hits", "texture_hits"):
        value, low, high, n, skipped = rows[("all", None, None, metric)]
        assert (value, n, skipped) == (40.0, 5, 1)
        assert (low, high) == pytest.approx(_wilson_percent(2, 5), abs=1e-9)
    assert rows[("cat", None, None, "shape_bias")][:1] + rows[("cat", None, None, "shape_bias")][3:] == (0.5, 2, 0)
    assert rows[("dog", None, None, "shape_bias")][0] == 1.0  # 1 shape hit, 0 texture hits (dog3 decided knife)
    assert rows[("dog", None, None, "shape_hits")][0] == 50.0
    assert rows[("bird", None, None, "shape_bias")][0] == 0.0
    assert not any(key[0] == "car" for key in rows)  # its only image is no cue conflict
    assert {key[0] for key in rows} == {"all", "cat", "dog", "bird"}


def test_shape_bias_interval_is_wilsons_over_the_decisions_and_never_a_point() -> None:
    from scipy.stats import binomtest

    shape = np.array([1, 1, 0, 0, 1, 0, 0, 1, 0, 1], dtype=float)
    texture = np.array([0, 0, 1, 0, 0, 1, 0, 0, 0, 0], dtype=float)  # 5 shape of 7 decisions
    expected = binomtest(5, 7).proportion_ci(0.95, method="wilson")
    assert shape_bias_interval(shape, texture) == pytest.approx((expected.low, expected.high), abs=1e-12)
    none = shape_bias_interval(np.zeros(8), np.ones(8))  # 0 shape decisions of 8: not the point [0, 0]
    assert none[0] == 0.0 and none[1] == pytest.approx(binomtest(0, 8).proportion_ci(method="wilson").high)
    assert none[1] > 0.3
    assert all(np.isnan(shape_bias_interval(np.zeros(3), np.zeros(3))))


def test_images_whose_shape_and_texture_agree_are_left_out() -> None:
    method = _method()
    paths = ["s/cat/cat1-cat2.png", "s/oven/oven3-oven1.jpg"]
    values = method.measure(_model(imagenet_categories(), 1000), _batch(paths, ["cat", "oven"]), repeat=0)
    assert all(np.isnan(v).all() for v in values.values())  # the loop then says no image could be measured


def test_a_10_class_model_is_refused_in_one_line_and_accepted_with_a_category_map(tmp_path) -> None:
    method = _method()
    with pytest.raises(UsageError) as err:
        method.check_model(SimpleNamespace(name="tiny10", num_classes=10, net=None))
    assert "\n" not in str(err.value) and "tiny10 has 10 classes" in str(err.value)
    assert "--category-map" in str(err.value)

    # the first ten categories own one class each; the last six share classes 0 and 1
    mapping = {name: [i] if i < 10 else [0, 1] for i, name in enumerate(NAMES)}
    path = tmp_path / "map.json"
    path.write_text(json.dumps(mapping))
    method = _method(str(path))
    method.check()
    model = _model({k: tuple(v) for k, v in mapping.items()}, 10)
    method.check_model(model)
    paths = ["s/airplane/airplane1-bear1.png", "s/bear/bear1-cat2.png", "s/chair/chair1-clock1.png"]
    values = method.measure(model, _batch(paths, ["airplane", "cat", "bird"]), repeat=0)
    np.testing.assert_array_equal(values[("all", None, None, "shape_hit")], [1, 0, 0])
    np.testing.assert_array_equal(values[("all", None, None, "texture_hit")], [0, 1, 0])
    assert method.summarise(values, 0, 50)[("all", None, None, "shape_bias")][0] == 0.5


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "not an object"),
    (json.dumps({n: [0] for n in NAMES[:-1]}), "lacks truck"),
    (json.dumps({**{n: [0] for n in NAMES}, "horse": [1]}), "unknown categories horse"),
    (json.dumps({**{n: [0] for n in NAMES}, "cat": []}), "'cat' must map to a non-empty list"),
    (json.dumps({**{n: [0] for n in NAMES}, "cat": [1, "2"]}), "'cat' must map to a non-empty list"),
    (json.dumps({**{n: [0] for n in NAMES}, "cat": [3, 3]}), "'cat' lists a class index twice"),
    (json.dumps({**{n: [0] for n in NAMES}, "dog": [9, 10]}), "'dog' lists class 10, out of range for tiny10"),
])
def test_bad_category_maps_are_refused_in_one_line(tmp_path, content, message) -> None:
    path = tmp_path / "map.json"
    path.write_text(content)
    method = _method(str(path))
    with pytest.raises(UsageError) as err:
        method.check()
        method.check_model(SimpleNamespace(name="tiny10", num_classes=10, net=None))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_end_to_end_on_the_shipped_sample_and_the_figure_redraws(tmp_path) -> None:
    from stm_probe.data import eval_transform
    from stm_probe.models import create_model
    from stm_probe.models.features import Normalized
    from stm_probe.core.seeds import seeded
    from PIL import Image

    out = tmp_path / "run"
    assert main(["bias", "--model", "unified_swin_micro", "--probe", "cue-conflict", "--data", str(SAMPLE),
                 "--input-size", "64", "--num-images", "8", "--quiet", "--out", str(out)]) == 0
    frame, per_image = pd.read_csv(out / "bias.csv"), pd.read_csv(out / "per_image.csv")
    assert set(frame["probe"]) == {"cue-conflict"} and len(per_image) == 16

    # a second implementation of the decisions: the same random-init model, softmax, plain means per category
    with seeded(0):
        net = Normalized(create_model("unified_swin_micro", input_size=64)).eval()
    paths = list(dict.fromkeys(per_image["path"]))
    view = eval_transform(64, "center")
    with torch.no_grad():
        probs = net(torch.stack([view(Image.open(p).convert("RGB")) for p in paths])).double().softmax(-1).numpy()
    facts = json.loads(FACTS.read_text())["categories"]
    decided = [NAMES[int(np.argmax([row[facts[c]].mean() for c in NAMES]))] for row in probs]
    shape = [Path(p).parent.name for p in paths]
    texture = [Path(p).stem.split("-")[1].rstrip("0123456789") for p in paths]
    s_hits = np.array([d == s for d, s in zip(decided, shape)], dtype=float)
    t_hits = np.array([d == t for d, t in zip(decided, texture)], dtype=float)
    got = per_image.pivot(index="path", columns="metric", values="value").loc[paths]
    np.testing.assert_array_equal(got["shape_hit"], s_hits)
    np.testing.assert_array_equal(got["texture_hit"], t_hits)

    rows = frame.set_index(["variant", "metric"])
    assert rows.loc[("all", "shape_hits"), "value"] == pytest.approx(100 * s_hits.mean())
    assert rows.loc[("all", "texture_hits"), "value"] == pytest.approx(100 * t_hits.mean())
    assert rows.loc[("all", "shape_hits"), "n_images"] == 8
    if s_hits.sum() + t_hits.sum():
        assert rows.loc[("all", "shape_bias"), "value"] == pytest.approx(s_hits.sum() / (s_hits.sum() + t_hits.sum()))
    else:
        assert ("all", "shape_bias") not in rows.index
    assert set(frame["variant"]) == {"all", *shape}

    figure = out / "bias_cue_conflict.png"
    if (frame["metric"] == "shape_bias").any():
        before = figure.read_bytes()
        figure.unlink()
        assert main(["plot", "bias", str(out)]) == 0
        assert figure.read_bytes() == before


def test_synthetic_cue_conflict_uses_the_shape_classes_and_equals_a_direct_count(tmp_path) -> None:
    """On synthetic:cue-conflict the decision is the model's argmax over the K shape classes; shape and
    texture come from the set's own labels (the same method as on the 16 ImageNet categories)."""
    import stm_probe
    from stm_probe.core.shape_bias import shape_bias
    from stm_probe.data import eval_transform, make_loader, resolve_source

    data = "synthetic:cue-conflict?classes=4&n=24"
    torch.manual_seed(5)
    model = stm_probe.create_model("unified_convnext_micro", num_classes=4)
    from stm_probe.models.layers import set_layer_scales

    set_layer_scales(model, 0.5)  # so the 4-way decisions vary between images
    ckpt = tmp_path / "synthetic4.pth"
    torch.save({"model": model.state_dict(), "num_classes": 4}, ckpt)
    frame = stm_probe.run("bias", models="unified_convnext_micro", data=data, checkpoint=str(ckpt),
                          probe=["cue-conflict"], input_size=64, quiet=True, out=str(tmp_path / "run"))
    source = resolve_source(data)
    spec = source.synthetic
    batch = next(iter(make_loader(source, batch_size=24, num_images=24, transform=eval_transform(64))))
    from stm_probe.models.layers import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    reference = stm_probe.create_model("unified_convnext_micro", checkpoint=str(ckpt)).eval()
    mean, std = torch.tensor(IMAGENET_DEFAULT_MEAN)[:, None, None], torch.tensor(IMAGENET_DEFAULT_STD)[:, None, None]
    with torch.no_grad():  # pixels in [0, 1], normalised as the model was trained
        decision = reference((batch.images - mean) / std).argmax(-1).numpy()
    shape = np.array([spec.label(i) for i in range(24)])
    texture = np.array([spec.texture_label(i) for i in range(24)])
    shape_hit, texture_hit = (decision == shape) * 1.0, (decision == texture) * 1.0
    rows = frame[frame["variant"] == "all"].set_index("metric")["value"]
    assert rows["shape_hits"] == pytest.approx(100 * shape_hit.mean())
    assert rows["texture_hits"] == pytest.approx(100 * texture_hit.mean())
    assert rows["shape_bias"] == pytest.approx(shape_bias(shape_hit, texture_hit))
    assert set(frame["variant"]) <= {"all", "disc", "square", "triangle", "star"}
    with pytest.raises(UsageError, match="not the 4 shape classes"):
        stm_probe.run("bias", models="unified_convnext_micro", data=data, probe=["cue-conflict"], input_size=64,
                      quiet=True, out=str(tmp_path / "imagenet-head"))
