"""Adversarial: eps ball for every attack, PGD >= FGSM and monotone in eps on a trained model,
FGSM closed form on a linear model, equality with torchattacks called directly (its random
draws replaced by per-image ones), per-image seeding (no batch dependence), robust accuracy,
Wilson intervals, CLI end to end."""
from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import pytest
import torch
import torchattacks
from torch import nn

from scipy.stats import binomtest

from stm_probe.core.adversarial import (
    L2,
    LINF,
    METRIC_STATISTICS,
    METRICS,
    PerImageRandom,
    check_perturbation,
    image_outcomes,
    make_spec,
    offered_attacks,
    per_image_metrics,
    restart_seeds,
    run_attack,
    summarise,
    targets_for,
)
from stm_probe.cli import main
from stm_probe.data import default_data_dir
from stm_probe.models.features import Normalized


class TinyNet(nn.Module):
    """conv 3x3 -> ReLU -> 4x4 average pool -> linear: a small classifier of (B, 3, S, S) images."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                                  nn.Linear(8 * 16, classes))
        self.pretrained_cfg = dict(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _attack_cases() -> list[tuple[str, str]]:
    cases = []
    for name in sorted(offered_attacks()):
        for norm in (LINF, L2):
            try:
                make_spec(name, norm, 1.0)
            except Exception:  # noqa: BLE001 - that norm is not offered for this attack
                continue
            cases.append((name, norm))
    return cases


@pytest.mark.parametrize("name,norm", _attack_cases())
def test_every_offered_attack_stays_in_the_eps_ball_and_in_0_1(name: str, norm: str) -> None:
    net = Normalized(TinyNet()).eval()
    images = torch.rand(3, 3, 16, 16)
    images[0, :, :4] = 1.0  # saturated pixels: the [0, 1] clamp must hold there too
    images[1, :, :4] = 0.0
    eps = 8.0 if norm == LINF else 0.5
    restarts = 2 if name == "pgd" else 1  # also the rerun-restarts path
    spec = make_spec(name, norm, eps, steps=3, restarts=restarts)
    labels = torch.randint(0, 10, (3,))
    adv, logits = run_attack(net, spec, images, labels, image_seeds=[1, 2, 3], num_classes=10)
    assert adv.shape == images.shape and logits.shape == (3, 10)
    assert adv.min() >= 0 and adv.max() <= 1
    delta = (adv - images).flatten(1).double()
    achieved = delta.abs().amax(1) if norm == LINF else delta.norm(dim=1)
    assert (achieved <= spec.eps_abs + 1e-6).all(), (name, achieved.max().item(), spec.eps_abs)
    assert (check_perturbation(images, adv, spec) <= eps * (1 + 1e-4)).all()


def _separable(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: dark images (brightness 0.10-0.45), class 1: bright (0.55-0.90), +-0.03 noise;
    the brightness margin (0.05-0.40) spreads the eps at which images flip."""
    labels = torch.arange(n) % 2
    base = torch.rand(n, generator=generator) * 0.35 + 0.10 + 0.45 * labels
    noise = (torch.rand(n, 3, 8, 8, generator=generator) - 0.5) * 0.06
    return (base[:, None, None, None] + noise).clamp(0, 1), labels


def _robust_acc(net: nn.Module, name: str, eps: float, images: torch.Tensor, labels: torch.Tensor) -> float:
    spec = make_spec(name, LINF, eps)
    with torch.no_grad():
        clean = net(images)
    targets = targets_for(labels, clean)
    adv, adv_logits = run_attack(net, spec, images, targets, range(len(images)), num_classes=2)
    outcomes = image_outcomes(clean, adv_logits, labels, targets, check_perturbation(images, adv, spec))
    values = {m.metric: m.value for m in summarise(outcomes, n_boot=0, seed=0)}
    assert values["clean_acc"] == 100.0
    return values["robust_acc"]


def test_pgd_is_at_least_as_strong_as_fgsm_and_robust_accuracy_falls_with_eps() -> None:
    g = torch.Generator().manual_seed(0)
    model = TinyNet(classes=2)
    x, y = _separable(256, g)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    net = Normalized(model)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    test_x, test_y = _separable(64, g)
    eps_values = [8.0, 24.0, 40.0, 64.0, 96.0]
    fgsm = [_robust_acc(net, "fgsm", e, test_x, test_y) for e in eps_values]
    pgd = [_robust_acc(net, "pgd", e, test_x, test_y) for e in eps_values]
    assert all(p <= f for p, f in zip(pgd, fgsm)), (pgd, fgsm)
    for curve in (pgd, fgsm):
        assert all(b <= a for a, b in zip(curve, curve[1:])), curve
    assert pgd[0] == 100 and pgd[-1] < 50, pgd


def test_fgsm_on_a_linear_model_is_the_closed_form() -> None:
    """CE on logits W x + b with two classes: d loss / d x = p_other (w_other - w_target), so
    FGSM moves every pixel by eps * sign(w_other - w_target) (std > 0 keeps the sign)."""
    g = torch.Generator().manual_seed(0)
    linear = nn.Linear(3 * 8 * 8, 2)
    with torch.no_grad():
        w0 = torch.randn(192, generator=g) * 0.05
        sign = torch.where(torch.rand(192, generator=g) < 0.5, -1.0, 1.0)
        gap = (torch.rand(192, generator=g) * 0.05 + 0.01) * sign  # |w1 - w0| >= 0.01: no rounding flips a sign
        linear.weight.copy_(torch.stack([w0, w0 + gap]))
    net = Normalized(nn.Sequential(nn.Flatten(), linear)).eval()  # ImageNet mean/std inside
    images = torch.rand(6, 3, 8, 8, generator=g)
    images[0] = 1.0  # saturated: the closed form includes the [0, 1] clamp
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    adv, _ = run_attack(net, make_spec("fgsm", LINF, 4.0), images, labels, range(6), num_classes=2)
    w = linear.weight.detach()
    direction = torch.sign(w[1 - labels] - w[labels]).view(6, 3, 8, 8)
    assert torch.equal(adv, (images + 4 / 255 * direction).clamp(0, 1))


def _direct_attack(net: nn.Module, name: str, norm: str, eps: float, random_start: bool) -> torchattacks.Attack:
    """The torchattacks attack built by hand (pixel units, alpha = eps/4, 3 steps)."""
    eps_abs = eps / 255 if norm == LINF else eps
    if name == "fgsm":
        return torchattacks.FGSM(net, eps=eps_abs)
    if name == "pgd":
        cls = torchattacks.PGD if norm == LINF else torchattacks.PGDL2
        return cls(net, eps=eps_abs, alpha=eps_abs / 4, steps=3, random_start=random_start)
    return torchattacks.APGD(net, norm=norm, eps=eps_abs, steps=3, n_restarts=1, seed=0)


@pytest.mark.parametrize("name,norm,eps", [("fgsm", LINF, 8.0), ("pgd", LINF, 4.0), ("pgd", L2, 0.5)])
def test_deterministic_attacks_equal_calling_torchattacks_directly(name: str, norm: str, eps: float) -> None:
    net = Normalized(TinyNet()).eval()
    images, labels = torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,))
    spec = make_spec(name, norm, eps, steps=3, random_start=False if name == "pgd" else None)
    ours, ours_logits = run_attack(net, spec, images, labels, [1, 2, 3, 4], num_classes=10)
    direct = _direct_attack(net, name, norm, eps, random_start=False)(images, labels)
    assert torch.equal(ours, direct)
    with torch.no_grad():
        assert torch.equal(ours_logits, net(direct))


def _per_image_rng(monkeypatch: pytest.MonkeyPatch, seeds: Sequence[int]) -> None:
    """Replace torch's random fills used by PGD, PGDL2 and APGD by per-image draws: row i of a
    (B, ...) draw comes from a CPU generator seeded with seeds[i] (a second implementation)."""
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    real = {"uniform_": torch.Tensor.uniform_, "normal_": torch.Tensor.normal_, "rand": torch.rand,
            "randn": torch.randn}

    def rows(shape: Sequence[int], draw: Callable[[tuple, torch.Generator], torch.Tensor]) -> torch.Tensor:
        assert shape[0] == len(generators), "this replacement only knows whole batches"
        return torch.stack([draw(tuple(shape[1:]), g) for g in generators])

    def fill(method: str) -> Callable:
        def patched(t: torch.Tensor, *args) -> torch.Tensor:
            return t.copy_(rows(t.shape, lambda s, g: real[method](torch.empty(s, dtype=t.dtype), *args, generator=g)))
        return patched

    def factory(name: str) -> Callable:
        return lambda shape: rows(shape, lambda s, g: real[name](s, generator=g))

    monkeypatch.setattr(torch.Tensor, "uniform_", fill("uniform_"))
    monkeypatch.setattr(torch.Tensor, "normal_", fill("normal_"))
    monkeypatch.setattr(torch, "rand", factory("rand"))
    monkeypatch.setattr(torch, "randn", factory("randn"))


@pytest.mark.parametrize("name,norm,eps", [("pgd", LINF, 4.0), ("pgd", L2, 0.5), ("apgd", LINF, 4.0),
                                           ("apgd", L2, 0.5)])
def test_random_starts_equal_torchattacks_with_per_image_draws(monkeypatch: pytest.MonkeyPatch, name: str,
                                                               norm: str, eps: float) -> None:
    net = Normalized(TinyNet()).eval()
    images = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        labels = net(images).argmax(1)  # all correct: APGD attacks the whole batch
    seeds = [101, 7, 2**62 + 5, 33]
    spec = make_spec(name, norm, eps, steps=3)
    assert spec.random_start in (True, None)
    ours, _ = run_attack(net, spec, images, labels, seeds, num_classes=10)
    with monkeypatch.context() as patch:
        _per_image_rng(patch, seeds)
        direct = _direct_attack(net, name, norm, eps, random_start=True)(images, labels)
    assert torch.equal(ours, direct)
    assert not torch.equal(ours, _direct_attack(net, name, norm, eps, random_start=True)(images, labels))


def test_per_image_random_fills_each_row_from_its_images_generator() -> None:
    seeds = [5, 6, 7, 8]
    torch.manual_seed(0)
    global_draw = torch.rand(3)
    torch.manual_seed(0)
    with PerImageRandom(seeds, ndim=4):
        full = torch.rand(4, 3, 2, 2)  # the whole batch: each image's first draw
        sub = torch.zeros(4, 3, 2, 2)[torch.tensor([3, 1])]  # a sub-batch of images 3 and 1
        start = torch.empty_like(sub).uniform_(-1, 1)  # their second draws
        masked = torch.zeros(4, 3, 2, 2)[torch.tensor([True, False, False, False])]  # image 0
        noise = torch.randn_like(masked)
        flat = torch.rand(3)  # not shaped like images: torch's global RNG
    g = [torch.Generator().manual_seed(s) for s in seeds]
    assert torch.equal(full, torch.stack([torch.rand((3, 2, 2), generator=g[i]) for i in range(4)]))
    assert torch.equal(start, torch.stack([torch.empty(3, 2, 2).uniform_(-1, 1, generator=g[i]) for i in (3, 1)]))
    assert torch.equal(noise[0], torch.randn((3, 2, 2), generator=g[0]))
    assert torch.equal(flat, global_draw)
    with PerImageRandom(seeds, ndim=4):  # fresh generators
        ints = torch.randint(0, 9, (4, 1, 2, 2))
        bits = torch.bernoulli(torch.full((4, 3, 2, 2), 0.25))
    g = [torch.Generator().manual_seed(s) for s in seeds]
    assert torch.equal(ints, torch.stack([torch.randint(0, 9, (1, 2, 2), generator=g[i]) for i in range(4)]))
    assert torch.equal(bits, torch.stack([torch.bernoulli(torch.full((3, 2, 2), 0.25), generator=g[i])
                                          for i in range(4)]))


@pytest.mark.parametrize("name,norm,eps,restarts", [("pgd", LINF, 8.0, 1), ("pgd", L2, 0.5, 1), ("pgd", LINF, 8.0, 2),
                                                    ("apgd", LINF, 8.0, 1), ("autoattack", LINF, 8.0, 1)])
def test_an_images_adversarial_example_does_not_depend_on_its_batch(name: str, norm: str, eps: float,
                                                                      restarts: int) -> None:
    """Attacked alone, in a batch of 7 and at another position: the same example (to float
    batching); half the labels are wrong, so APGD and AutoAttack attack sub-batches."""
    torch.manual_seed(0)
    net = Normalized(TinyNet()).eval()
    images = torch.rand(7, 3, 32, 32)
    with torch.no_grad():
        labels = net(images).argmax(1)
    labels[::2] = (labels[::2] + 1) % 10
    seeds = [int(s) for s in torch.randint(0, 2**62, (7,))]
    spec = make_spec(name, norm, eps, steps=4, restarts=restarts)
    batch, _ = run_attack(net, spec, images, labels, seeds, num_classes=10)
    alone = torch.cat([run_attack(net, spec, images[i:i + 1], labels[i:i + 1], seeds[i:i + 1], 10)[0]
                       for i in range(7)])
    order = [3, 6, 0, 2, 5, 1, 4]
    moved, _ = run_attack(net, spec, images[order], labels[order], [seeds[i] for i in order], 10)
    torch.testing.assert_close(alone, batch, atol=1e-6, rtol=0)
    torch.testing.assert_close(moved, batch[order], atol=1e-6, rtol=0)
    assert (batch != images).any()


def test_a_changed_image_seed_changes_only_that_images_start() -> None:
    net = Normalized(TinyNet()).eval()
    images, labels = torch.rand(3, 3, 32, 32), torch.randint(0, 10, (3,))
    spec = make_spec("pgd", LINF, 8.0, steps=1)
    first, _ = run_attack(net, spec, images, labels, [1, 2, 3], 10)
    assert not net.training  # the model's mode is left as it was
    second, _ = run_attack(net, spec, images, labels, [9, 2, 3], 10)
    assert not torch.equal(first[0], second[0]) and torch.equal(first[1:], second[1:])
    assert restart_seeds([1, 2], 1) != restart_seeds([1, 2], 2)
    assert restart_seeds([1, 2], 1)[1] == restart_seeds([2], 1)[0]  # per image, not per batch


def _onehot(classes: list[int], num_classes: int = 3) -> torch.Tensor:
    """Logits (B, C): 5 on the given class, 0 elsewhere."""
    return 5.0 * torch.eye(num_classes)[torch.tensor(classes)]


def test_robust_accuracy_counts_images_correct_before_and_after_the_attack() -> None:
    labels = torch.tensor([0, 1, 2, 0, -1])  # the last image is unlabelled
    clean = _onehot([0, 0, 2, 1, 2])  # correct, wrong, correct, wrong
    adv = _onehot([0, 1, 1, 2, 0])  # correct, correct (the attack 'fixed' it), wrong, wrong
    targets = targets_for(labels, clean)
    assert targets.tolist() == [0, 1, 2, 0, 2]
    outcomes = image_outcomes(clean, adv, labels, targets, torch.tensor([0.5, 1.0, 1.5, 2.0, 2.5]))
    per = per_image_metrics(outcomes)
    assert set(per) == set(METRIC_STATISTICS) and all(v.dtype == np.float64 and v.shape == (5,) for v in per.values())
    nan = np.nan
    np.testing.assert_array_equal(per["robust_acc"], [100, 0, 0, 0, nan])
    np.testing.assert_array_equal(per["clean_acc"], [100, 0, 100, 0, nan])
    np.testing.assert_array_equal(per["success_rate"], [0, nan, 100, nan, 100])  # of images with clean top-1 == target
    np.testing.assert_array_equal(per["flip_rate"], [0, 100, 100, 100, 100])
    np.testing.assert_array_equal(per["pert_norm_max"], [0.5, 1.0, 1.5, 2.0, 2.5])
    np.testing.assert_allclose(per["loss_increase"][:3], [0.0, -5.0, 5.0], atol=1e-12)  # CE moves by the margin 5
    values = {m.metric: m for m in summarise(outcomes, n_boot=0, seed=0)}
    assert values["robust_acc"].value == 25.0 and values["robust_acc"].n_images == 4  # adv-correct alone: 50
    assert values["clean_acc"].value == 50.0 and values["success_rate"].n_images == 3


def test_rates_get_wilson_intervals_and_the_maximum_none() -> None:
    outcomes = {"labelled": np.ones(4, bool), "clean_correct": np.ones(4, bool),
                "adv_correct": np.array([True, False, True, True]), "eligible": np.ones(4, bool),
                "fooled": np.array([False, True, False, False]), "flipped": np.array([False, True, False, False]),
                "pert_norm": np.array([1.0, 2.0, 3.0, 4.0]), "loss_increase": np.array([0.0, 1.0, 0.5, 0.25])}
    values = {m.metric: m for m in summarise(outcomes, n_boot=200, seed=0)}
    assert list(values) == list(METRIC_STATISTICS)
    z = 1.959963984540054  # two-sided 95 %
    clean = values["clean_acc"]
    assert (clean.value, clean.ci_high) == (100.0, 100.0)
    assert clean.ci_low == pytest.approx(100 * 4 / (4 + z * z))  # Wilson at p = 1: n / (n + z^2); not 100
    for metric, hits in (("robust_acc", 3), ("success_rate", 1), ("flip_rate", 1)):
        ci = binomtest(hits, 4).proportion_ci(0.95, method="wilson")
        assert (values[metric].value, values[metric].ci_low, values[metric].ci_high) == pytest.approx(
            (100 * hits / 4, 100 * ci.low, 100 * ci.high))
    top = values["pert_norm_max"]
    assert top.value == 4.0 and math.isnan(top.ci_low) and math.isnan(top.ci_high) and top.n_images == 4
    mean = values["pert_norm_mean"]
    assert mean.value == 2.5 and 1.0 <= mean.ci_low < 2.5 < mean.ci_high <= 4.0


def test_spec_key_names_every_setting_that_changes_numbers() -> None:
    base = make_spec("pgd", LINF, 4)
    assert base.key() == make_spec("pgd", LINF, 4.0).key() == make_spec("PGD", LINF, 4.0, alpha=1.0).key()
    variants = [make_spec("pgd", LINF, 8), make_spec("pgd", LINF, 4, alpha=2), make_spec("pgd", LINF, 4, steps=20),
                make_spec("pgd", LINF, 4, random_start=False), make_spec("pgd", LINF, 4, restarts=2),
                make_spec("pgd", L2, 4), make_spec("bim", LINF, 4), make_spec("autoattack", LINF, 4),
                make_spec("autoattack", LINF, 4, version="plus"), make_spec("autoattack", LINF, 4, target_classes=3),
                make_spec("autoattack", LINF, 4, steps=50)]
    keys = [base.key()] + [v.key() for v in variants]
    assert len(set(keys)) == len(keys)


def _labelled_folder(root: Path) -> Path:
    """A tiny ImageFolder of the bundled photos under two ImageNet synsets (labels 0 and 1)."""
    photos = sorted(default_data_dir().glob("*.jpg"))
    for i, synset in enumerate(("n01440764", "n01443537")):
        (root / synset).mkdir(parents=True)
        for photo in photos[2 * i:2 * i + 2]:
            shutil.copy(photo, root / synset / photo.name)
    return root


@pytest.mark.slow
def test_cli_results_do_not_depend_on_the_batch_size(tmp_path: Path) -> None:
    """End to end on labelled images: --batch-size 1 and 3 give the same numbers (random starts
    per image), rates carry Wilson intervals, the maximum norm none."""
    data = _labelled_folder(tmp_path / "data")
    frames = []
    for batch_size in (1, 3):
        out = tmp_path / f"run{batch_size}"
        code = main(["adversarial", "--model", "unified_convnext_micro", "--data", str(data), "--num-images", "3",
                     "--input-size", "32", "--attack", "fgsm,pgd", "--eps", "2,8/255", "--steps", "2",
                     "--batch-size", str(batch_size), "--out", str(out), "--quiet"])
        assert code == 0
        frames.append(pd.read_csv(out / "adversarial.csv").sort_values(["attack", "eps", "metric"], ignore_index=True))
    frame, other = frames
    # success_rate applies to the images the model got right: no row when there is none
    any_correct = (frame.loc[frame["metric"] == "clean_acc", "value"] > 0).any()
    expected = set(METRICS) - (set() if any_correct else {"success_rate"})
    assert set(frame["metric"]) == expected and sorted(set(frame["eps"])) == [2.0, 8.0]
    assert len(frame) == 2 * 2 * len(expected) and set(frame.loc[frame["attack"] == "pgd", "steps"]) == {2}
    columns = ["value", "ci_low", "ci_high", "n_images"]
    np.testing.assert_allclose(frame[columns].to_numpy(float), other[columns].to_numpy(float), rtol=0, atol=1e-4)
    norms = frame[frame["metric"] == "pert_norm_max"]
    assert (norms["value"] <= norms["eps"] * (1 + 1e-4)).all() and norms[["ci_low", "ci_high"]].isna().all().all()
    rates = frame[frame["metric"].map(METRIC_STATISTICS).eq("rate") & (frame["n_images"] > 0)]
    assert len(rates) >= 12 and (rates.loc[rates["metric"] != "success_rate", "n_images"] == 3).all()
    for row in rates.itertuples():
        ci = binomtest(round(row.value * row.n_images / 100), row.n_images).proportion_ci(0.95, method="wilson")
        assert (row.ci_low, row.ci_high) == pytest.approx((100 * ci.low, 100 * ci.high))
    accuracy = frame.pivot_table(index=["attack", "eps"], columns="metric", values="value")
    assert (accuracy["robust_acc"] <= accuracy["clean_acc"]).all()


def test_autoattack_target_classes_reach_torchattacks() -> None:
    """torchattacks attacks n_classes - 1 target classes: the original's 9 by default, capped by
    the model's class count, and settable (--target-classes)."""
    from stm_probe.core.adversarial import attack_kwargs, make_spec

    assert attack_kwargs(make_spec("autoattack", "Linf", 4), num_classes=1000, seed=0)["n_classes"] == 10
    assert attack_kwargs(make_spec("apgdt", "Linf", 4, target_classes=3), num_classes=1000, seed=0)["n_classes"] == 4
    assert attack_kwargs(make_spec("autoattack", "Linf", 4), num_classes=5, seed=0)["n_classes"] == 5
    assert make_spec("pgd", "Linf", 4).target_classes is None
