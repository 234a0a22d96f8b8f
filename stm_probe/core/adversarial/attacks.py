"""Running attacks: the torchattacks attack of a setting (`build_attack`), one batch attacked with
per-image draws and rerun restarts (`run_attack`), and the eps-ball check of its output
(`check_perturbation`). Images are pixels in [0, 1]; mean/std live inside the model wrapper."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UsageError
from ...models.features import frozen_parameters
from .draws import PerImageRandom, batch_seed, restart_seeds
from .specs import AUTOATTACK_TARGET_CLASSES, LINF, AttackSpec, _params, _torchattacks

if TYPE_CHECKING:
    import torchattacks


PERT_ATOL, PERT_RTOL = 1e-6, 1e-5  # tolerance of the eps-ball check (pixels in [0, 1])


# --- running attacks -----------------------------------------------------------------------------
def attack_kwargs(spec: AttackSpec, num_classes: int, seed: int) -> dict[str, Any]:
    """Constructor arguments of ``spec.cls_name`` (pixel units); ``seed`` goes to the attacks that
    take one (they reseed torch's global RNG with it). ``n_classes`` is what torchattacks turns
    into n_target_classes = n_classes - 1 for APGD-T / FAB-T: the model's class count, capped at
    ``spec.target_classes + 1`` (the original AutoAttack attacks the top-9 other classes; the real
    class count alone would run 999 targeted attacks on ImageNet)."""
    params = _params(spec.cls_name)
    kwargs: dict[str, Any] = {"eps": spec.eps_abs}
    if spec.alpha is not None:
        kwargs["alpha"] = spec.alpha * spec.scale
    if spec.steps is not None and "steps" in params:
        kwargs["steps"] = spec.steps
    if spec.random_start is not None:
        kwargs["random_start"] = spec.random_start
    if "norm" in params:
        kwargs["norm"] = spec.norm
    if "n_restarts" in params and spec.restarts:
        kwargs["n_restarts"] = spec.restarts
    if "seed" in params:
        kwargs["seed"] = seed
    if "n_classes" in params:
        kwargs["n_classes"] = min(num_classes, (spec.target_classes or AUTOATTACK_TARGET_CLASSES) + 1)
    if "version" in params:
        kwargs["version"] = spec.version
    return kwargs


def build_attack(net: nn.Module, spec: AttackSpec, num_classes: int, seed: int) -> "torchattacks.Attack":
    """The torchattacks attack of ``spec`` on ``net`` (pixels in [0, 1] -> logits).

    AutoAttack gets the original's settings that torchattacks does not pass on: ``spec.steps``
    (100) iterations for APGD, APGD-T and FAB, and Square without the rescaled schedule.
    """
    if spec.cls_name in ("APGDT", "AutoAttack") and num_classes < 4:
        raise UsageError(f"--attack {spec.name} needs a model with at least 4 classes (its DLR loss); "
                         f"this one has {num_classes}")
    module = _torchattacks()
    attack = getattr(module, spec.cls_name)(net, **attack_kwargs(spec, num_classes, seed))
    if spec.cls_name == "AutoAttack":
        for sub in attack._autoattack.attacks:
            if isinstance(sub, module.Square):
                sub.rescale_schedule = False
            elif hasattr(sub, "steps"):
                sub.steps = spec.steps
    return attack


def perturbation_norms(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-image norm of perturbations (B, 3, H, W) in pixel units, float64 (B,)."""
    flat = delta.detach().flatten(1).double()
    return flat.abs().amax(1) if norm == LINF else flat.norm(dim=1)


def check_perturbation(clean: torch.Tensor, adv: torch.Tensor, spec: AttackSpec) -> torch.Tensor:
    """Assert adversarial images are finite, inside [0, 1] and inside the eps ball; return the
    per-image perturbation norms (B,) in the norm's units."""
    if not torch.isfinite(adv).all() or adv.min() < 0 or adv.max() > 1:
        raise AssertionError(f"{spec.cls_name} returned images outside [0, 1] (min {adv.min().item():g}, "
                             f"max {adv.max().item():g})")
    norms = perturbation_norms(adv - clean, spec.norm)
    limit = spec.eps_abs * (1 + PERT_RTOL) + PERT_ATOL
    if norms.max() > limit:
        raise AssertionError(f"{spec.cls_name} left the eps ball: {spec.norm} perturbation "
                             f"{norms.max().item() / spec.scale:.6g} > eps {spec.eps:g} (units)")
    return norms / spec.scale


def _attack_once(net: nn.Module, spec: AttackSpec, images: torch.Tensor, targets: torch.Tensor,
                 image_seeds: Sequence[int], num_classes: int) -> torch.Tensor:
    """One torchattacks call with per-image draws (`PerImageRandom`); torch's global RNG is
    seeded with `batch_seed` inside `torch.random.fork_rng`, so the caller's RNG is untouched."""
    seed = batch_seed(image_seeds)
    cuda = [images.device.index or 0] if images.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        draws = PerImageRandom(image_seeds, images.dim())
        attack = build_attack(draws.unobserved(net), spec, num_classes, seed)
        with draws:
            return attack(images, targets).detach()


def run_attack(net: nn.Module, spec: AttackSpec, images: torch.Tensor, targets: torch.Tensor,
               image_seeds: Sequence[int], num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Attack one batch: images (B, 3, H, W) in [0, 1] on the model's device, targets (B,),
    ``image_seeds`` one int per image (B,). Returns (adversarial images (B, 3, H, W), their
    logits (B, C)).

    Every draw of a random start comes from the image's own seed (`PerImageRandom`), so image
    i's result is the same attacked alone or in any batch (up to float batching). With rerun
    restarts, restart r >= 1 uses `restart_seeds` (r) and each image keeps the first successful
    example, else the one with the highest loss.
    """
    seeds = [int(s) for s in image_seeds]
    if len(seeds) != images.shape[0]:
        raise ValueError(f"run_attack: {len(seeds)} image seeds for a batch of {images.shape[0]} images")
    with frozen_parameters(net):
        adv = _attack_once(net, spec, images, targets, seeds, num_classes)
        with torch.no_grad():
            logits = net(adv)
        for restart in range(1, spec.restarts if spec.rerun_restarts else 1):
            cand = _attack_once(net, spec, images, targets, restart_seeds(seeds, restart), num_classes)
            with torch.no_grad():
                cand_logits = net(cand)
            higher = F.cross_entropy(cand_logits, targets, reduction="none") > F.cross_entropy(
                logits, targets, reduction="none")
            take = (logits.argmax(1) == targets) & ((cand_logits.argmax(1) != targets) | higher)
            adv = torch.where(take[:, None, None, None], cand, adv)
            logits = torch.where(take[:, None], cand_logits, logits)
    return adv, logits
