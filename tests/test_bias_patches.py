"""patch-shuffle and patch-drop (stm-probe bias): the views against hand-made expectations, the
methods on tiny hand-made models, and one end-to-end run with the plot command."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from stm_probe.cli import main
from stm_probe.data import Batch
from stm_probe.errors import UsageError
from stm_probe.probes.bias import BiasConfig
from stm_probe.probes.bias.patch_drop import (
    IMAGENET_MEAN,
    PatchDrop,
    area_under_curve,
    drop_count,
    drop_patches,
    patch_scores,
    random_order,
    salient_order,
)
from stm_probe.probes.bias.patch_shuffle import PatchShuffle, draw_permutations, logits_of_views, shuffle_patches

SIDE = 32


def _session(side: int = SIDE, batch_size: int = 4) -> SimpleNamespace:
    options = SimpleNamespace(input_size=side, batch_size=batch_size, bootstrap=50)
    return SimpleNamespace(options=options, seed=0, device=torch.device("cpu"))


def _batch(images: torch.Tensor, labels=None, indices=None) -> Batch:
    n = images.shape[0]
    labels = torch.full((n,), -1) if labels is None else torch.as_tensor(labels)
    indices = torch.arange(n) if indices is None else torch.as_tensor(indices)
    return Batch(images, labels, indices, tuple(f"img{i}.png" for i in range(n)))


def _model(net: nn.Module, num_classes: int = 10) -> SimpleNamespace:
    return SimpleNamespace(name="tiny", net=net.eval(), num_classes=num_classes)


def _patches(image: np.ndarray, grid: int) -> list[np.ndarray]:
    """Row-major patches of (C, S, S) by plain slicing (a second implementation)."""
    p = image.shape[-1] // grid
    return [image[:, r * p:(r + 1) * p, c * p:(c + 1) * p] for r in range(grid) for c in range(grid)]


class MeanColour(nn.Module):
    """Sees only the global mean colour of the image."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean((2, 3)))


class OnePatch(nn.Module):
    """Reads only patch 6 (row 1, column 2) of an 8 px grid on a 32 px image."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x[:, :, 8:16, 16:24].flatten(1))


# --- patch-shuffle ------------------------------------------------------------------------------
def test_shuffle_with_one_patch_is_the_identity() -> None:
    images = torch.rand(3, 3, SIDE, SIDE)
    perms = draw_permutations(123, torch.arange(3), 1)
    assert torch.equal(shuffle_patches(images, 1, perms), images)


@pytest.mark.parametrize("grid", [2, 4, 8, 16])
def test_shuffle_keeps_the_multiset_of_patches_and_follows_the_permutation(grid: int) -> None:
    images = torch.rand(2, 3, SIDE, SIDE)
    perms = draw_permutations(7, torch.tensor([4, 9]), grid * grid)
    out = shuffle_patches(images, grid, perms).numpy()
    for b in range(2):
        before, after = _patches(images[b].numpy(), grid), _patches(out[b], grid)
        assert sorted(p.tobytes() for p in before) == sorted(p.tobytes() for p in after)
        for k, patch in enumerate(after):
            np.testing.assert_array_equal(patch, before[int(perms[b, k])])
        assert not np.array_equal(out[b], images[b].numpy())  # something moved


def test_permutations_are_per_image_whatever_the_batch() -> None:
    together = draw_permutations(99, torch.tensor([3, 5, 8]), 16)
    alone = draw_permutations(99, torch.tensor([5]), 16)
    assert torch.equal(together[1], alone[0])
    assert all(sorted(row.tolist()) == list(range(16)) for row in together)
    assert not torch.equal(together[0], together[1])


def test_a_mean_colour_model_keeps_its_prediction_at_every_grid() -> None:
    method = PatchShuffle(BiasConfig(), _session())
    method.check()
    assert method.grids == (1, 2, 4, 8, 16)
    values = method.measure(_model(MeanColour()), _batch(torch.rand(6, 3, SIDE, SIDE)), repeat=0)
    for g in method.grids:
        assert values[("", g, None, "consistency")].tolist() == [100.0] * 6
        assert np.abs(values[("", g, None, "kl")]).max() < 1e-9
        assert np.isnan(values[("", g, None, "top1")]).all()  # no labels


def test_a_position_model_sees_the_shuffle_and_labels_give_top1() -> None:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIDE * SIDE, 10))
    images = torch.rand(6, 3, SIDE, SIDE)
    clean = net(images).argmax(1)
    method = PatchShuffle(BiasConfig(grids=(1, 16)), _session())
    values = method.measure(_model(net), _batch(images, labels=clean.tolist()), repeat=0)
    assert values[("", 1, None, "top1")].tolist() == [100.0] * 6
    assert values[("", 16, None, "kl")].min() > 1e-6
    shuffled = net(shuffle_patches(images, 16, draw_permutations(method.stream(16, 0), torch.arange(6), 256)))
    np.testing.assert_array_equal(values[("", 16, None, "consistency")],
                                  (shuffled.argmax(1) == clean).double().numpy() * 100)


def test_shuffle_values_do_not_depend_on_the_batch() -> None:
    method = PatchShuffle(BiasConfig(grids=(2, 8)), _session(batch_size=1))
    net = _model(nn.Sequential(nn.Flatten(), nn.Linear(3 * SIDE * SIDE, 10)))
    images = torch.rand(4, 3, SIDE, SIDE)
    whole = method.measure(net, _batch(images), 0)
    parts = [method.measure(net, _batch(images[i:i + 2], indices=[i, i + 1]), 0) for i in (0, 2)]
    for key, value in whole.items():
        np.testing.assert_allclose(value, np.concatenate([p[key] for p in parts]), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("side, grids, expected", [(224, None, (1, 2, 4, 7, 8, 14, 16, 28)),
                                                   (64, None, (1, 2, 4, 8, 16)), (64, (4, 2, 4), (4, 2))])
def test_grids_default_to_those_dividing_the_side(side, grids, expected) -> None:
    assert PatchShuffle(BiasConfig(grids=grids), _session(side)).grids == expected


def test_a_grid_not_dividing_the_side_is_one_line() -> None:
    with pytest.raises(UsageError) as error:
        PatchShuffle(BiasConfig(grids=(2, 7)), _session(64)).check()
    assert "--grids 7" in str(error.value) and "\n" not in str(error.value)


def test_views_of_several_levels_share_forward_passes() -> None:
    calls = []

    class Counting(nn.Module):
        def forward(self, x):
            calls.append(x.shape[0])
            return x.flatten(1)[:, :5]

    views = [torch.rand(2, 3, 4, 4) for _ in range(5)]
    clean = torch.zeros(2, 5)
    out = logits_of_views(Counting(), [views[0], None, *views[1:]], clean, max_views=4)
    assert calls == [4, 4, 2]
    assert out[1] is clean
    for view, logits in zip(views, [out[0], *out[2:]]):
        assert torch.equal(logits, view.flatten(1)[:, :5])


# --- patch-drop ---------------------------------------------------------------------------------
def test_dropping_nothing_is_the_identity() -> None:
    images = torch.rand(2, 3, SIDE, SIDE)
    order = random_order(5, torch.arange(2), 16)
    assert torch.equal(drop_patches(images, order, 0, 8, images.new_zeros(())), images)


def test_drop_count_is_round_f_times_patches() -> None:
    fractions = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    expected = [0, 2, 3, 5, 6, 8, 10, 11, 13, 14]  # round(f * 16) by hand (1.6, 3.2, 4.8, 6.4, ...)
    images = torch.full((3, 3, SIDE, SIDE), 0.5)
    order = random_order(11, torch.arange(3), 16)
    for f, count in zip(fractions, expected):
        assert drop_count(f, 16) == count
        view = drop_patches(images, order, drop_count(f, 16), 8, images.new_zeros(())).numpy()
        for b in range(3):
            black = [p for p in _patches(view[b], 4) if not p.any()]
            assert len(black) == count
            assert sorted(order[b, :count].tolist()) == [k for k, p in enumerate(_patches(view[b], 4)) if not p.any()]


def test_salient_order_of_a_hand_made_map_drops_the_known_patches_first() -> None:
    heat = torch.zeros(1, SIDE, SIDE)
    heat[0, 8:16, 16:24] = 5.0   # patch 6: the most salient
    heat[0, 24:32, 0:8] = 3.0    # patch 12
    heat[0, 0, 0] = 1.0          # patch 0, one pixel
    scores = patch_scores(heat, 8)
    assert scores[0, 6] == 5.0 * 64 and scores[0, 12] == 3.0 * 64 and scores[0, 0] == 1.0
    salient = salient_order(scores)
    assert salient[0, :3].tolist() == [6, 12, 0]
    assert salient_order(scores, descending=False)[0, -3:].tolist() == [0, 12, 6]
    images = torch.ones(1, 3, SIDE, SIDE)
    view = drop_patches(images, salient, 2, 8, images.new_zeros(())).numpy()
    assert [k for k, p in enumerate(_patches(view[0], 4)) if not p.any()] == [6, 12]


def test_fills_mean_colour_and_seeded_noise() -> None:
    images = torch.ones(2, 3, SIDE, SIDE)
    order = torch.arange(16).repeat(2, 1)
    mean = PatchDrop(BiasConfig(fill="mean"), _session())._fill(images, torch.arange(2), 0)
    view = drop_patches(images, order, 1, 8, mean)
    for c, colour in enumerate(IMAGENET_MEAN):
        assert torch.allclose(view[:, c, :8, :8], torch.tensor(colour))
    assert (view[:, :, 8:, :] == 1).all()
    noisy = PatchDrop(BiasConfig(fill="noise"), _session())
    noise = noisy._fill(images, torch.tensor([0, 1]), 0)
    assert noise.shape == images.shape and 0 <= noise.min() and noise.max() < 1
    assert torch.equal(noise[1], noisy._fill(images[:1], torch.tensor([1]), 0)[0])  # per image, any batch
    assert not torch.equal(noise[0], noise[1]) and not torch.equal(noise, noisy._fill(images, torch.arange(2), 1))


def test_area_under_curve_by_hand() -> None:
    # fractions 0, 0.25, 0.5 with values 100, 100, 0: area 25 + 12.5 = 37.5 over a span of 0.5 -> 75
    values = [np.array([0.0, 100.0]), np.array([100.0, 100.0]), np.array([100.0, 100.0])]
    np.testing.assert_allclose(area_under_curve([0.5, 0.0, 0.25], values), [75.0, 100.0])


def test_the_salient_order_comes_from_the_models_own_attribution() -> None:
    images = torch.rand(3, 3, SIDE, SIDE)
    config = BiasConfig(fractions=(0.0, 0.1, 0.5, 0.9), orders=("random", "salient", "non-salient"), patch_size=8)
    method = PatchDrop(config, _session())
    method.check()
    values = method.measure(_model(OnePatch()), _batch(images, labels=[1, -1, 4]), repeat=0)
    for f in config.fractions:  # patch 6 is dropped last: the model never sees a change
        assert values[("non-salient", f, None, "consistency")].tolist() == [100.0] * 3
        assert values[("non-salient", f, None, "kl")].max() < 1e-12
    for f in (0.1, 0.5, 0.9):  # patch 6 is dropped first: the model's input is zero
        assert values[("salient", f, None, "kl")].min() > 1e-6
    assert values[("salient", 0.0, None, "kl")].max() < 1e-12
    np.testing.assert_allclose(values[("non-salient", None, None, "auc_consistency")], 100.0)
    assert values[("salient", None, None, "auc_top1")][1] != values[("salient", None, None, "auc_top1")][1]  # NaN


def test_patch_size_must_tile_the_input_and_randomised_follows_the_settings() -> None:
    with pytest.raises(UsageError) as error:
        PatchDrop(BiasConfig(patch_size=7), _session()).check()
    assert "--patch-size 7" in str(error.value) and "\n" not in str(error.value)
    assert not PatchDrop(BiasConfig(orders=("salient",)), _session()).randomised
    assert PatchDrop(BiasConfig(orders=("salient",), fill="noise"), _session()).randomised


# --- end to end ---------------------------------------------------------------------------------
def test_patch_methods_end_to_end_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["bias", "--model", "unified_convnext_micro", "--probe", "patch-shuffle,patch-drop",
                 "--input-size", str(SIDE), "--num-images", "2", "--grids", "1,4", "--fractions", "0,0.5",
                 "--patch-size", "8", "--orders", "random,salient", "--bootstrap", "20", "--quiet",
                 "--out", str(out)]) == 0
    frame = pd.read_csv(out / "bias.csv")
    shuffle = frame[frame["probe"] == "patch-shuffle"].set_index(["level", "metric"])["value"]
    assert shuffle[(1, "consistency")] == 100 and shuffle[(1, "kl")] == 0
    drop = frame[frame["probe"] == "patch-drop"]
    assert set(drop["variant"]) == {"random", "salient"}
    clean = drop[(drop["level"] == 0) & (drop["metric"] == "consistency")]
    assert clean["value"].tolist() == [100.0, 100.0]
    assert len(drop[drop["metric"] == "auc_consistency"]) == 2
    for name in ("bias_patch-shuffle", "bias_patch-drop"):
        (out / f"{name}.png").unlink()
    assert main(["plot", "bias", str(out)]) == 0
    assert (out / "bias_patch-shuffle.png").is_file() and (out / "bias_patch-drop.png").is_file()
    assert not list(out.glob("*.pdf"))  # PDF only with --style paper or --formats
