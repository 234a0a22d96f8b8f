"""attribution (stm-probe bias): captum on a linear model against its closed forms, the
concentration and centre of mass of hand-made maps, the per-model summary, and one end-to-end
run with the saved examples and the plot command."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from stm_probe.cli import main
from stm_probe.data import Batch
from stm_probe.probes.bias import BiasConfig
from stm_probe.probes.base import Extra
from stm_probe.probes.bias.attribution import (
    COM,
    Attribution,
    attribute,
    attribution_maps,
    centre_of_mass,
    concentration,
    occlusion_window,
)

SIDE = 8


def _linear(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIDE * SIDE, 5)).eval()
    return net, net[1].weight.detach().view(5, 3, SIDE, SIDE)


def _session(side: int = SIDE) -> SimpleNamespace:
    return SimpleNamespace(options=SimpleNamespace(input_size=side, batch_size=4, bootstrap=200), seed=0,
                           device=torch.device("cpu"))


def test_integrated_gradients_of_a_linear_model_is_weights_times_input() -> None:
    net, weight = _linear()
    images, targets = torch.rand(3, 3, SIDE, SIDE), torch.tensor([0, 3, 4])
    got = attribute(net, images, targets, "integrated-gradients", views_per_pass=7)
    torch.testing.assert_close(got, weight[targets] * images, rtol=1e-4, atol=1e-6)


def test_saliency_of_a_linear_model_is_the_absolute_weights() -> None:
    net, weight = _linear(1)
    targets = torch.tensor([2, 2, 1])
    got = attribute(net, torch.rand(3, 3, SIDE, SIDE), targets, "saliency")
    torch.testing.assert_close(got, weight[targets].abs())
    torch.testing.assert_close(attribution_maps(net, torch.rand(3, 3, SIDE, SIDE), targets, "saliency"),
                               weight[targets].abs().sum(1))


def test_occlusion_of_a_linear_model_averages_the_windows_by_hand() -> None:
    net, weight = _linear(2)
    images, targets = torch.rand(2, 3, SIDE, SIDE), torch.tensor([1, 4])
    window, stride = occlusion_window(SIDE)
    assert (window, stride) == (2, 1)
    got = attribute(net, images, targets, "occlusion", views_per_pass=3).numpy()
    share = (weight[targets] * images).sum(1).numpy()  # (B, H, W): each pixel's part of the logit
    positions = range(0, SIDE - window + 1, stride)
    expected = np.zeros((2, SIDE, SIDE))
    covers = np.zeros((SIDE, SIDE))
    for r in positions:  # blacking a window out lowers the logit by its share; each pixel gets the mean
        for c in positions:
            expected[:, r:r + window, c:c + window] += share[:, r:r + window, c:c + window].sum((1, 2))[:, None, None]
            covers[r:r + window, c:c + window] += 1
    expected /= covers
    for channel in range(3):
        np.testing.assert_allclose(got[:, channel], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("side, expected", [(224, (16, 8)), (64, (4, 2)), (96, (6, 3)), (256, (16, 8)),
                                            (32, (2, 1))])
def test_occlusion_window_is_16_at_stride_8_at_224_and_tiles_the_side(side, expected) -> None:
    window, stride = occlusion_window(side)
    assert (window, stride) == expected and (side - window) % stride == 0


def test_concentration_of_hand_made_maps() -> None:
    maps = torch.ones(4, 10, 10)
    maps[0].view(-1)[:10] = 9.0          # 10 pixels hold 90 of 180
    maps[1].view(-1)[17] = 1000.0        # one hot pixel: 1009 + 9 of the rest over 1099
    maps[3] = 0.0                        # no attribution at all
    np.testing.assert_allclose(concentration(maps)[:3], [0.5, 1009 / 1099, 0.1])
    assert np.isnan(concentration(maps)[3])


def test_centre_of_mass_of_hand_made_maps() -> None:
    maps = torch.zeros(3, 6, 6)
    maps[0] = 1.0                        # uniform: the image centre
    maps[1, 0, 0] = 2.0                  # one pixel: its centre
    maps[1, 0, 4] = 2.0                  # and a second, same weight: half way
    com = centre_of_mass(maps)
    np.testing.assert_allclose(com[:2], [[3.0, 3.0], [0.5, 2.5]])
    assert np.isnan(com[2]).all()


def test_the_mean_maps_centre_is_summarised_with_a_ci() -> None:
    torch.manual_seed(3)
    maps = torch.rand(6, 16, 16) ** 4
    maps[2] = 0.0
    method = Attribution(BiasConfig(), _session(16))
    values = {("saliency", None, None, "concentration"): concentration(maps),
              ("saliency", None, None, COM): centre_of_mass(maps)}
    summary = method.summarise(values, seed=0, n_boot=200)
    kept = maps[[0, 1, 3, 4, 5]]
    mean_map = (kept / kept.sum((1, 2), keepdim=True)).mean(0, keepdim=True)  # the mean map, directly
    distance = float(np.hypot(*(centre_of_mass(mean_map)[0] - 8.0)))
    value, low, high, n, skipped = summary[("saliency", None, None, "com_distance_px")]
    assert value == pytest.approx(distance) and low <= value <= high and (n, skipped) == (5, 1)
    assert summary[("saliency", None, None, "com_distance_frac")][0] == pytest.approx(distance / 16)
    value, low, high, n, skipped = summary[("saliency", None, None, "concentration")]
    assert value == pytest.approx(np.nanmean(concentration(maps))) and low <= value <= high and n == 5


def test_measure_explains_the_label_else_the_clean_prediction() -> None:
    net, weight = _linear(4)
    images = torch.rand(3, 3, SIDE, SIDE)
    clean_top1 = net(images).argmax(1)
    labels = torch.tensor([-1, 2, -1])
    targets = torch.where(labels >= 0, labels, clean_top1)
    method = Attribution(BiasConfig(attribution_images=2), _session())
    model = SimpleNamespace(name="linear", net=net, num_classes=5)
    values = method.measure(model, Batch(images, labels, torch.tensor([0, 1, 5]), ("a", "b", "c")), repeat=0)
    expected_maps = weight[targets].abs().sum(1)
    np.testing.assert_allclose(values[("saliency", None, None, "concentration")], concentration(expected_maps))
    np.testing.assert_allclose(values[("saliency", None, None, Extra("example_map"))], expected_maps[:2].numpy())
    assert values[("saliency", None, None, Extra("example_index"))].tolist() == [0, 1]
    assert values[("saliency", None, None, Extra("example_target"))].tolist() == targets[:2].tolist()


def test_attribution_end_to_end_saves_examples_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["bias", "--model", "unified_convnext_micro", "--probe", "attribution", "--input-size", "32",
                 "--num-images", "3", "--attribution-images", "3", "--method", "integrated-gradients",
                 "--bootstrap", "20", "--quiet", "--out", str(out)]) == 0
    frame = pd.read_csv(out / "bias.csv").set_index("metric")
    assert set(frame["variant"]) == {"integrated-gradients"}
    with np.load(out / "attribution" / "unified_convnext_micro.npz", allow_pickle=False) as data:
        maps, index = data["map"], data["index"]
        assert data["image"].shape == (3, 3, 32, 32) and data["image"].dtype == np.uint8
        assert str(data["method"]) == "integrated-gradients"
    per_image = pd.read_csv(out / "per_image.csv")
    per_image = per_image[per_image["metric"] == "concentration"].set_index("image")["value"]
    np.testing.assert_allclose(per_image.loc[index].to_numpy(), concentration(torch.from_numpy(maps)), rtol=1e-6)
    unit = maps / maps.sum((1, 2), keepdims=True)
    distance = float(np.hypot(*(centre_of_mass(torch.from_numpy(unit.mean(0, keepdims=True)))[0] - 16.0)))
    assert frame.loc["com_distance_px", "value"] == pytest.approx(distance, rel=1e-5)
    assert frame.loc["com_distance_frac", "value"] == pytest.approx(distance / 32, rel=1e-5)
    manifest = json.loads((out / "manifest.json").read_text())
    assert "attribution/unified_convnext_micro.npz" in manifest["outputs"]
    (out / "bias_attribution.png").unlink()
    assert main(["plot", "bias", str(out)]) == 0
    assert (out / "bias_attribution.png").is_file() and not (out / "bias_attribution.pdf").exists()  # PDF when asked
