"""ERF: analytic receptive fields, batched == one-at-a-time, area ratios, CLI end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from stm_probe.cli import main
from stm_probe.core.erf import MapMaker, area_ratio, area_ratios, bootstrap_area_ci, contribution_maps, log_normalize
from stm_probe.models.features import Normalized


def maps_of(net: Normalized, batches: list[torch.Tensor], stages: list[int], batch_size: int) -> dict[int, np.ndarray]:
    """{stage: (N, H, W) float32} of every image in ``batches``, from the probe's own `MapMaker`."""
    maker = MapMaker(net, stages, torch.device("cpu"), batch_size)
    parts = [maker(batch) for batch in batches]
    return {s: np.concatenate([p[s] for p in parts]) for s in stages}


class ConvStack(nn.Module):
    """k stacked 3x3 convolutions (stride 1) exposed as one 'stage' through forward_intermediates."""

    def __init__(self, k: int, kernel: int = 3, depthwise: bool = False, positive: bool = False) -> None:
        super().__init__()
        groups = 3 if depthwise else 1
        self.convs = nn.Sequential(*[nn.Conv2d(3, 3, kernel, padding=kernel // 2, groups=groups) for _ in range(k)])
        if positive:
            for conv in self.convs:
                nn.init.constant_(conv.weight, 1.0)
                nn.init.zeros_(conv.bias)
        self.feature_info = [dict(num_chs=3, reduction=1, module="convs")]
        self.pretrained_cfg = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))

    def forward_intermediates(self, x, indices, intermediates_only=True, output_fmt="NCHW"):
        return [self.convs(x)]

    def forward(self, x):
        return self.convs(x).mean((2, 3))


def _support(m: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(m > 0)
    return ys.min(), ys.max(), xs.min(), xs.max()


@pytest.mark.parametrize("k", [1, 2, 4])
def test_stacked_3x3_convs_have_exact_square_support(k: int) -> None:
    """Centre-pixel gradient of k positive 3x3 convs is non-zero exactly on the (2k+1)^2 square."""
    net = Normalized(ConvStack(k, positive=True)).eval()
    maps = contribution_maps(net, torch.rand(2, 3, 33, 33) + 0.1, [0])[0].numpy()
    c = 33 // 2
    for m in maps:
        assert _support(m) == (c - k, c + k, c - k, c + k)


def test_depthwise_7x7_gives_side_7_at_099() -> None:
    net = Normalized(ConvStack(1, kernel=7, depthwise=True, positive=True)).eval()
    mean = contribution_maps(net, torch.rand(3, 3, 31, 31), [0])[0].double().mean(0).numpy()
    ratio = area_ratio(log_normalize(mean), 0.99)
    assert (ratio.side_px, ratio.reached) == (7, True)
    assert ratio.area_ratio == pytest.approx(49 / 31**2)


def test_batched_equals_one_image_at_a_time() -> None:
    """One backward for a batch == a straightforward per-image loop (autograd on each image)."""
    from stm_probe.models import create_model

    model = create_model("unified_convnext_micro").eval()
    net = Normalized(model)
    images = torch.rand(4, 3, 64, 64)
    batched = maps_of(net, [images[:3], images[3:]], [0, 1, 3], batch_size=8)
    for stage in (0, 1, 3):
        reference = []
        for img in images:
            x = net.normalize(img[None]).requires_grad_(True)
            feat = model.forward_stages(x, [stage])[0]
            h, w = feat.shape[-2:]
            feat[0, :, h // 2, w // 2].relu().sum().backward()
            reference.append(x.grad[0].relu().sum(0).numpy())
        reference = np.stack(reference)
        np.testing.assert_allclose(batched[stage], reference, rtol=1e-3, atol=1e-4 * reference.max())


def test_sub_batching_does_not_change_the_result() -> None:
    from stm_probe.models import create_model

    net = Normalized(create_model("unified_swin_micro")).eval()
    images = torch.rand(4, 3, 64, 64)
    whole = maps_of(net, [images], [1], batch_size=4)
    reference = maps_of(net, [images], [1], batch_size=1)[1]
    np.testing.assert_allclose(whole[1], reference, rtol=1e-3, atol=1e-4 * reference.max())


class SquareNet(ConvStack):
    """conv(x * x): the input gradient 2 x w depends on the pixel values, so a NaN pixel makes a NaN map."""

    def forward_intermediates(self, x, indices, intermediates_only=True, output_fmt="NCHW"):
        return [self.convs(x * x)]


def test_a_nan_image_gives_a_nan_map_and_leaves_the_others() -> None:
    """The maps keep a NaN image's NaN map (the probe skips and counts it) and the others are exact."""
    net = Normalized(SquareNet(1, positive=True)).eval()
    images = torch.rand(3, 3, 9, 9) + 0.1
    images[1, 0, 4, 4] = float("nan")
    maps = maps_of(net, [images], [0], batch_size=3)[0]
    assert np.isfinite(maps).all(axis=(1, 2)).tolist() == [True, False, True]
    kept = maps[[0, 2]]
    # kept: images 0 and 2; d/dx of 3 output channels of conv(x^2) with unit weights = 3 * 2x, summed over RGB
    expected = 6 * images[[0, 2], :, 3:6, 3:6].sum(1).numpy()
    np.testing.assert_allclose(kept[:, 3:6, 3:6], expected, rtol=1e-5)


def test_area_ratio_on_hand_made_maps() -> None:
    uniform = np.ones((21, 21))
    # uniform: a (2i+1)^2 square holds (2i+1)^2 / 441 of the total: first side above 0.5 is 15 (225/441 > .5)
    assert area_ratio(uniform, 0.5).side_px == 15
    assert area_ratio(uniform, 0.2).side_px == 11  # 121/441 = 0.274 > 0.2, 81/441 = 0.18
    delta = np.zeros((21, 21))
    delta[10, 10] = 1.0
    assert area_ratio(delta, 0.99).side_px == 3  # squares start at i = 1 (RepLKNet)
    # Gaussian of sigma 2: the square of half-side a holds erf(a'/(sigma sqrt2))^2 of the mass
    yy, xx = np.mgrid[-50:51, -50:51]
    sigma = 2.0
    gauss = np.exp(-(yy**2 + xx**2) / (2 * sigma**2))
    from scipy.special import erf

    def mass(i: int) -> float:  # continuous approximation of the discrete square (half-side i + 0.5)
        return erf((i + 0.5) / (sigma * np.sqrt(2))) ** 2

    expected = next(2 * i + 1 for i in range(1, 50) if mass(i) > 0.9)
    assert area_ratio(gauss, 0.9).side_px == expected


def test_threshold_never_reached_is_flagged_not_a_crash() -> None:
    uniform = np.ones((10, 10))
    r = area_ratio(uniform, 0.99)  # the largest square tried is 9x9 = 81% of the total
    assert (r.reached, r.side_px, r.area_ratio) == (False, 10, 1.0)
    assert area_ratios(uniform[None], [0.99])[0][0] == 1.0


def test_vectorised_ratios_equal_single() -> None:
    rng = np.random.default_rng(0)
    maps = rng.random((5, 24, 24)) ** 4
    for t in (0.2, 0.5, 0.9):
        expected = [area_ratio(m, t).area_ratio for m in maps]
        np.testing.assert_allclose(area_ratios(maps, [t])[0], expected)


def test_bootstrap_ci_brackets_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    maps = rng.random((12, 21, 21)) * np.exp(-((np.mgrid[-10:11, -10:11] ** 2).sum(0)) / 20.0)
    point = area_ratio(log_normalize(maps.mean(0)), 0.5).area_ratio
    ci = bootstrap_area_ci(maps, [0.5], n_boot=200, seed=3)[0]
    assert ci == bootstrap_area_ci(maps, [0.5], n_boot=200, seed=3)[0]
    assert ci[0] <= point <= ci[1]


def test_cli_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = main(["erf", "--model", "unified_convnext_micro", "--model", "unified_halo_micro",
                 "--num-images", "3", "--input-size", "64", "--bootstrap", "20", "--out", str(out), "--quiet"])
    assert code == 0
    frame = pd.read_csv(out / "erf.csv")
    assert list(frame.columns)[:13] == ["model", "stm", "size", "weights", "init_copy", "stage", "threshold",
                                        "metric", "value", "ci_low", "ci_high", "n_images", "n_skipped"]
    assert {"resize", "gradient_wrt", "seed", "input_size"} <= set(frame.columns)
    metrics = ["area_ratio", "side_px", "side_ratio", "reached", "area_ratio_raw"]
    assert len(frame) == 2 * 4 * 4 * len(metrics) and set(frame["weights"]) == {"random-init"}
    assert set(frame["metric"]) == set(metrics) and (frame["n_images"] == 3).all()
    ratios = frame[frame["metric"].isin(["area_ratio", "area_ratio_raw"])]
    assert ((ratios["ci_low"] <= ratios["value"] + 1e-12) & (ratios["value"] <= ratios["ci_high"] + 1e-12)).all()
    for model in ("unified_convnext_micro", "unified_halo_micro"):
        for stage in range(1, 5):
            raw = np.load(out / "erf" / f"{model}_stage{stage}.npy")
            assert raw.dtype == np.float64 and raw.shape == (64, 64)
            np.testing.assert_allclose(np.load(out / "erf" / f"{model}_stage{stage}_norm.npy"), log_normalize(raw))
            rows = frame[(frame["model"] == model) & (frame["stage"] == stage)].set_index(["threshold", "metric"])
            for t in (0.2, 0.3, 0.5, 0.99):  # both ratios recomputed from the saved mean map
                assert rows.loc[(t, "area_ratio"), "value"] == area_ratio(log_normalize(raw), t).area_ratio
                assert rows.loc[(t, "area_ratio_raw"), "value"] == area_ratio(raw / raw.max(), t).area_ratio
        assert (out / f"erf_{model}.png").stat().st_size > 0 and not (out / f"erf_{model}.pdf").exists()
    assert (out / "erf_grid.png").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_images"] == 3 and manifest["models"][0]["weights"] == "random-init"
    (out / "erf_grid.png").unlink()
    assert main(["plot", "erf", str(out)]) == 0
    assert (out / "erf_grid.png").exists()


def test_timm_model_stages() -> None:
    """timm models give one map per stride>=4 stage, each supported on a growing centred region."""
    from stm_probe.models import create_model

    net = Normalized(create_model("resnet18", zero_init_last=False)).eval()  # timm zero-inits residual branches
    maps = maps_of(net, [torch.rand(2, 3, 96, 96)], [0, 1, 2, 3], batch_size=2)
    sides = []
    for stage in range(4):
        mean = maps[stage].astype(np.float64).mean(0)
        assert mean.shape == (96, 96) and mean.sum() > 0
        ys, xs = np.nonzero(mean > 0)
        sides.append(ys.max() - ys.min())
    assert sides == sorted(sides) and sides[0] < sides[-1]


def test_compare_init_with_checkpoint(tmp_path: Path) -> None:
    from stm_probe.models import create_model

    gen = torch.Generator().manual_seed(5)
    sd = {k: (v + 0.05 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v)
          for k, v in create_model("unified_convnext_micro").state_dict().items()}
    ckpt = tmp_path / "conv.pth"
    torch.save({"model": sd}, ckpt)
    out = tmp_path / "run"
    assert main(["erf", "--model", "unified_micro_conv", "--checkpoint", f"unified_micro_conv={ckpt}",
                 "--compare-init", "--num-images", "2", "--input-size", "64", "--stages", "2,4",
                 "--thresholds", "0.5", "--bootstrap", "0", "--out", str(out), "--quiet"]) == 0
    frame = pd.read_csv(out / "erf.csv")
    ratios = frame[frame["metric"] == "area_ratio"]
    assert list(zip(ratios["weights"], ratios["init_copy"], ratios["stage"])) == [
        ("checkpoint", False, 2), ("checkpoint", False, 4), ("random-init (layer scales: trained)", True, 2),
        ("random-init (layer scales: trained)", True, 4)]
    trained = np.load(out / "erf" / "unified_convnext_micro_stage4.npy")
    fresh = np.load(out / "erf" / "unified_convnext_micro_init_stage4.npy")
    assert not np.allclose(trained, fresh)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["models"][0]["checkpoint_key"] == "model" and len(manifest["models"][0]["sha256"]) == 64
    assert (out / "erf_grid.png").exists()


def _init_copy_map(name: str, layer_scales, images: torch.Tensor) -> np.ndarray:
    """Stage-4 mean map of the erf probe's init copy, rebuilt here: seeded as the probe documents."""
    from stm_probe.models import create_model
    from stm_probe.core.seeds import seeded, stream_seed

    with seeded(stream_seed(0, "erf-init-copy", name)):
        fresh = create_model(name, input_size=64)
    layer_scales(fresh)
    return maps_of(Normalized(fresh).eval(), [images], [3], batch_size=2)[3].astype(np.float64).mean(0)


def test_init_copy_layer_scales_make_it_more_than_its_stem(tmp_path: Path) -> None:
    """A fresh unified model (layer scales 1e-6) is its stem: every STM block ~ identity. The init
    copy takes the checkpoint's per-block |gamma| (default) so the mixers shape its ERF."""
    from stm_probe.data import eval_transform, make_loader
    from stm_probe.models import create_model
    from stm_probe.models.layers import copy_layer_scale_magnitudes, set_layer_scales

    name = "unified_convnext_micro"
    trained = create_model(name)
    set_layer_scales(trained, 0.5)
    ckpt = tmp_path / "c.pth"
    torch.save({"model": trained.state_dict()}, ckpt)
    images = next(iter(make_loader(None, batch_size=2, num_images=2, transform=eval_transform(64, "warp")))).images
    maps = {}
    for choice in ("trained", "default"):
        out = tmp_path / choice
        assert main(["erf", "--model", name, "--checkpoint", str(ckpt), "--compare-init", "--init-layer-scale", choice,
                     "--num-images", "2", "--input-size", "64", "--stages", "4", "--thresholds", "0.5",
                     "--bootstrap", "0", "--out", str(out), "--quiet"]) == 0
        maps[choice] = np.load(out / "erf" / f"{name}_init_stage4.npy")
    expected = _init_copy_map(name, lambda m: copy_layer_scale_magnitudes(trained, m), images)
    np.testing.assert_allclose(maps["trained"], expected, rtol=1e-5, atol=1e-12)
    stem_only = _init_copy_map(name, lambda m: set_layer_scales(m, 0.0), images)  # every block exactly identity
    peak = np.abs(stem_only).max()
    assert np.abs(maps["default"] - stem_only).max() < 1e-4 * peak  # 1e-6 layer scales: the stem alone
    assert np.abs(maps["trained"] - stem_only).max() > 0.1 * peak
