"""Adversarial: eps ball for every attack, PGD >= FGSM and monotone in eps on a trained model,
FGSM closed form on a linear model, equality with torchattacks called directly, CLI end to end."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchattacks
from torch import nn

from stm_probe.adversarial import (
    L2,
    LINF,
    METRICS,
    Outcomes,
    check_perturbation,
    image_outcomes,
    make_spec,
    offered_attacks,
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
    adv, logits = run_attack(net, spec, images, labels, seed=1, num_classes=10)
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
    adv, adv_logits = run_attack(net, spec, images, targets, seed=0, num_classes=2)
    acc = Outcomes()
    acc.add(image_outcomes(clean, adv_logits, labels, targets, check_perturbation(images, adv, spec)))
    values = {m.metric: m.value for m in summarise(acc.stacked(), n_boot=0, seed=0)}
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
    adv, _ = run_attack(net, make_spec("fgsm", LINF, 4.0), images, labels, seed=0, num_classes=2)
    w = linear.weight.detach()
    direction = torch.sign(w[1 - labels] - w[labels]).view(6, 3, 8, 8)
    assert torch.equal(adv, (images + 4 / 255 * direction).clamp(0, 1))


@pytest.mark.parametrize("name,norm,eps", [("fgsm", LINF, 8.0), ("pgd", LINF, 4.0), ("pgd", L2, 0.5),
                                           ("apgd", LINF, 4.0), ("autoattack", LINF, 4.0)])
def test_results_equal_calling_torchattacks_directly(name: str, norm: str, eps: float) -> None:
    net = Normalized(TinyNet()).eval()
    images, labels = torch.rand(4, 3, 16, 16), torch.randint(0, 10, (4,))
    spec = make_spec(name, norm, eps, steps=3, restarts=1)
    ours, ours_logits = run_attack(net, spec, images, labels, seed=123, num_classes=10)

    torch.manual_seed(123)
    eps_abs = eps / 255 if norm == LINF else eps
    if name == "fgsm":
        attack = torchattacks.FGSM(net, eps=eps_abs)
    elif name == "pgd" and norm == LINF:
        attack = torchattacks.PGD(net, eps=eps_abs, alpha=eps_abs / 4, steps=3, random_start=True)
    elif name == "pgd":
        attack = torchattacks.PGDL2(net, eps=eps_abs, alpha=eps_abs / 4, steps=3, random_start=True)
    elif name == "apgd":
        attack = torchattacks.APGD(net, norm=norm, eps=eps_abs, steps=3, n_restarts=1, seed=123)
    else:  # the original AutoAttack's settings: 9 target classes, Square without rescaled schedule
        attack = torchattacks.AutoAttack(net, norm=norm, eps=eps_abs, version="standard", n_classes=10, seed=123)
        for sub in attack._autoattack.attacks:
            if isinstance(sub, torchattacks.Square):
                sub.rescale_schedule = False
            else:
                sub.steps = 3
    direct = attack(images, labels)
    assert torch.equal(ours, direct)
    with torch.no_grad():
        clean, direct_logits = net(images), net(direct)
    torch.testing.assert_close(ours_logits, direct_logits, rtol=0, atol=0)
    acc = Outcomes()
    acc.add(image_outcomes(clean, ours_logits, labels, labels, check_perturbation(images, ours, spec)))
    values = {m.metric: m.value for m in summarise(acc.stacked(), n_boot=0, seed=0)}
    assert values["robust_acc"] == pytest.approx(100 * (direct_logits.argmax(1) == labels).float().mean().item())


def _labelled_folder(root: Path) -> Path:
    """A tiny ImageFolder of the bundled photos under two ImageNet synsets (labels 0 and 1)."""
    photos = sorted(default_data_dir().glob("*.jpg"))
    for i, synset in enumerate(("n01440764", "n01443537")):
        (root / synset).mkdir(parents=True)
        for photo in photos[2 * i:2 * i + 2]:
            shutil.copy(photo, root / synset / photo.name)
    return root


@pytest.mark.parametrize("labelled", [False, True])
def test_cli_end_to_end(tmp_path: Path, labelled: bool) -> None:
    out = tmp_path / "run"
    data = ["--data", str(_labelled_folder(tmp_path / "data"))] if labelled else []
    code = main(["adversarial", "--model", "unified_convnext_micro", *data, "--num-images", "3", "--input-size", "64",
                 "--attack", "fgsm,pgd", "--eps", "2,8/255", "--steps", "2", "--bootstrap", "20",
                 "--save-examples", "2", "--out", str(out), "--quiet"])
    assert code == 0
    frame = pd.read_csv(out / "adversarial.csv")
    assert list(frame.columns)[:13] == ["model", "stm", "size", "weights", "attack", "norm", "eps", "steps", "metric",
                                        "value", "ci_low", "ci_high", "n_images"]
    metrics = set(METRICS) - (set() if labelled else {"clean_acc", "robust_acc"})  # accuracies need labels
    assert set(frame["metric"]) == metrics
    assert len(frame) == 2 * 2 * len(metrics) and sorted(set(frame["eps"])) == [2.0, 8.0]
    assert set(frame.loc[frame["attack"] == "pgd", "steps"]) == {2} and set(frame["norm"]) == {"Linf"}
    norms = frame[frame["metric"] == "pert_norm_max"]
    assert (norms["value"] <= norms["eps"] * (1 + 1e-4)).all()
    undefined = frame["n_images"] == 0  # success rate when no image was classified correctly
    assert set(frame.loc[undefined, "metric"]) <= {"success_rate"} and frame.loc[undefined, "value"].isna().all()
    frame = frame[~undefined]
    rates = frame[frame["metric"].isin(["flip_rate", "success_rate", "robust_acc", "clean_acc"])]
    assert rates["value"].between(0, 100).all()
    assert ((frame["ci_low"] <= frame["value"] + 1e-9) & (frame["value"] <= frame["ci_high"] + 1e-9)).all()
    assert (frame.loc[frame["metric"] == "flip_rate", "n_images"] == 3).all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 0 and len(manifest["images"]) == 3 and manifest["data"]["labelled"] is labelled
    assert [s["eps"] for s in manifest["adversarial"]["settings"]] == [2.0, 8.0, 2.0, 8.0]
    with np.load(out / "adversarial_examples" / "unified_convnext_micro.npz") as ex:
        assert ex["clean"].shape == ex["adversarial"].shape == (2, 3, 64, 64)
        assert np.abs(ex["adversarial"] - ex["clean"]).max() <= 8 / 255 + 1e-6
    for stem in ("adversarial", "adversarial_examples_unified_convnext_micro"):
        assert (out / f"{stem}.png").stat().st_size > 0 and (out / f"{stem}.pdf").exists()
    (out / "adversarial.png").unlink()
    assert main(["plot", "adversarial", str(out)]) == 0
    assert (out / "adversarial.png").exists()


def test_autoattack_target_classes_reach_torchattacks() -> None:
    """torchattacks attacks n_classes - 1 target classes: the original's 9 by default, capped by
    the model's class count, and settable (--target-classes)."""
    from stm_probe.adversarial import attack_kwargs, make_spec

    assert attack_kwargs(make_spec("autoattack", "Linf", 4), num_classes=1000, seed=0)["n_classes"] == 10
    assert attack_kwargs(make_spec("apgdt", "Linf", 4, target_classes=3), num_classes=1000, seed=0)["n_classes"] == 4
    assert attack_kwargs(make_spec("autoattack", "Linf", 4), num_classes=5, seed=0)["n_classes"] == 5
    assert make_spec("pgd", "Linf", 4).target_classes is None
