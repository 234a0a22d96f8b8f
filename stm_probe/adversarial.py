"""Adversarial robustness with torchattacks (PROTOCOLS.md section 6).

Attacks see pixels in [0, 1]; mean/std live inside the model wrapper (`Normalized`), which is
torchattacks' convention, so no ``set_normalization_used`` is needed. Epsilon and step size are
given in *units*: 1/255 for L-inf (``4`` = 4/255), absolute for L2; an item written as a
fraction (``"4/255"``) is an absolute value in either norm. The attack target is the label where
known, else the clean top-1 prediction (label-free mode).

Every attack call is seeded (torchattacks draws random starts from torch's global RNG) with a
seed derived from (run seed, model, attack, norm, eps, first image index), so results do not
depend on the order of models, attacks or eps. Model parameters are frozen during the attack
(only the input gradient is needed). Every adversarial batch is checked to lie in [0, 1] and
inside the eps ball (float tolerance) before any metric is computed.
"""
from __future__ import annotations

import difflib
import hashlib
import inspect
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import UsageError
from .models.features import frozen_parameters
from .stats import bootstrap_ci

if TYPE_CHECKING:
    import torchattacks

LINF, L2 = "Linf", "L2"
NORMS = (LINF, L2)
METRICS = ("clean_acc", "robust_acc", "success_rate", "flip_rate", "pert_norm_mean", "pert_norm_max",
           "loss_increase")
DEFAULT_EPS = {LINF: ("1", "2", "4", "8"), L2: ("0.25", "0.5", "1", "2")}
DEFAULT_STEPS = 10  # PGD-style attacks (PROTOCOLS.md s. 6)
AUTOATTACK_STEPS = 100  # APGD / APGD-T / FAB iterations of the original AutoAttack
AUTOATTACK_TARGET_CLASSES = 9  # original AutoAttack: APGD-T and FAB-T attack the top-9 other classes
PERT_ATOL, PERT_RTOL = 1e-6, 1e-5  # tolerance of the eps-ball check (pixels in [0, 1])

# torchattacks classes by threat model; every class taking `eps` is offered
_L2_ONLY = {"PGDL2", "PGDRSL2"}
_L2_VERSION = {"PGD": "PGDL2", "PGDRS": "PGDRSL2"}  # `--attack pgd --norm L2` runs PGDL2
_SINGLE_STEP = {"FGSM", "FFGSM"}
_DETERMINISTIC = {"FGSM", "BIM", "MIFGSM", "NIFGSM", "SINIFGSM"}  # nothing random to restart


# --- names and option values ---------------------------------------------------------------------
def _torchattacks():
    """torchattacks, imported on first use (it imports scipy.stats: ~1 s on every CLI call otherwise)."""
    import torchattacks

    return torchattacks


def _signature(cls_name: str) -> inspect.Signature:
    return inspect.signature(getattr(_torchattacks(), cls_name).__init__)


def _params(cls_name: str) -> set[str]:
    return set(_signature(cls_name).parameters)


def offered_attacks() -> dict[str, str]:
    """Lower-case name -> torchattacks class of every eps-bounded attack (those taking ``eps``)."""
    module = _torchattacks()
    wrappers = set(getattr(module, "__wrapper__", ()))
    return {name.lower(): name for name in module.__all__ if name not in wrappers and "eps" in _params(name)}


def _norms_of(cls_name: str) -> tuple[str, ...]:
    if "norm" in _params(cls_name):
        return NORMS
    return (L2,) if cls_name in _L2_ONLY else (LINF,)


def resolve_attack(name: str, norm: str) -> str:
    """torchattacks class for an attack name (case-insensitive) and norm; one-line UsageError
    naming close matches for unknown or unbounded attacks."""
    offered = offered_attacks()
    key = name.strip().lower()
    if key not in offered:
        every = {n.lower(): n for n in _torchattacks().__all__}
        if key in every:
            raise UsageError(f"--attack {name}: {every[key]} is not bounded by an eps ball, so robustness at eps is "
                             f"undefined; use one of {', '.join(sorted(offered))}")
        close = difflib.get_close_matches(key, list(offered), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UsageError(f"--attack {name}: unknown attack; {hint}choose from {', '.join(sorted(offered))}")
    cls_name = offered[key]
    if norm == L2 and cls_name in _L2_VERSION:
        cls_name = _L2_VERSION[cls_name]
    if norm not in _norms_of(cls_name):
        l2_attacks = sorted(n for n, c in offered.items() if L2 in _norms_of(c)) + ["pgd"]
        raise UsageError(f"--attack {name} --norm {norm}: {cls_name} is an {_norms_of(cls_name)[0]} attack; "
                         f"use --norm {_norms_of(cls_name)[0]}" + ("" if norm == LINF else
                                                                   f", or one of {', '.join(sorted(l2_attacks))}"))
    return cls_name


def parse_magnitude(text: str) -> tuple[Fraction, bool]:
    """'4' -> (4, False), '4/255' -> (4/255, True): the number and whether it is an absolute
    fraction. Parsed with `fractions.Fraction`, never eval'd; ValueError when not a number."""
    item = text.strip()
    try:
        if "/" in item:
            num, den = item.split("/", 1)
            return Fraction(num.strip()) / Fraction(den.strip()), True
        return Fraction(item), False
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"'{item}' is not a number or a fraction such as 4/255") from None


def in_units(text: str, norm: str) -> float:
    """A user magnitude in the norm's units: L-inf 1/255 units (plain numbers are already in
    them, '4/255' -> 4.0), L2 absolute."""
    value, absolute = parse_magnitude(text)
    return float(value * 255 if norm == LINF and absolute else value)


def unit_scale(norm: str) -> float:
    """Pixel value of one unit: 1/255 for L-inf, 1 for L2."""
    return 1.0 / 255.0 if norm == LINF else 1.0


# --- attack settings ----------------------------------------------------------------------------
@dataclass(frozen=True)
class AttackSpec:
    """One validated attack setting. Magnitudes (eps, alpha) are in the norm's units."""

    name: str  # as given (lower case): 'fgsm', 'pgd', 'autoattack', ...
    cls_name: str  # torchattacks class: 'FGSM', 'PGD', 'PGDL2', 'AutoAttack', ...
    norm: str
    eps: float
    alpha: float | None = None  # None: the attack has no step size
    steps: int | None = None  # None: the attack has no iteration count
    random_start: bool | None = None  # None: the attack's own default / not applicable
    restarts: int | None = 1  # None: fixed by the attack (AutoAttack's version)
    version: str | None = None  # AutoAttack only
    target_classes: int | None = None  # targeted parts (APGD-T, FAB-T): classes attacked; None: n/a

    @property
    def scale(self) -> float:
        return unit_scale(self.norm)

    @property
    def eps_abs(self) -> float:
        """eps in pixel units ([0, 1] range): 4 (Linf) -> 4/255."""
        return self.eps / 255.0 if self.norm == LINF else self.eps

    @property
    def rerun_restarts(self) -> bool:
        """Restarts done here (rerun, keep the worst case per image) rather than by the attack."""
        return bool(self.restarts and self.restarts > 1 and "n_restarts" not in _params(self.cls_name))

    def settings(self) -> dict[str, Any]:
        """What the manifest records for this setting."""
        return {"attack": self.name, "class": f"torchattacks.{self.cls_name}", "norm": self.norm, "eps": self.eps,
                "eps_abs": self.eps_abs, "alpha": self.alpha,
                "alpha_abs": None if self.alpha is None else self.alpha * self.scale, "steps": self.steps,
                "random_start": self.random_start, "restarts": self.restarts,
                "restart_mode": "rerun, worst case per image" if self.rerun_restarts else "attack's own",
                "version": self.version, "target_classes": self.target_classes}


def make_spec(name: str, norm: str, eps: float, alpha: float | None = None, steps: int | None = None,
              random_start: bool | None = None, restarts: int = 1, version: str = "standard",
              target_classes: int = AUTOATTACK_TARGET_CLASSES) -> AttackSpec:
    """Validated setting of one attack at one eps (magnitudes in units; defaults filled in:
    alpha = eps/4, steps = 10, AutoAttack steps = 100 and 9 target classes as the original)."""
    if norm not in NORMS:
        raise UsageError(f"--norm {norm}: use Linf or L2")
    cls_name = resolve_attack(name, norm)
    params = _params(cls_name)
    if not eps > 0 or (norm == LINF and eps > 255):
        raise UsageError(f"--eps {eps:g}: give eps in (0, 255] (1/255 units) for Linf, > 0 for L2")
    if alpha is not None and not alpha > 0:
        raise UsageError(f"--alpha {alpha:g}: the step size must be > 0 (same units as --eps)")
    if steps is not None and steps < 1:
        raise UsageError(f"--steps {steps}: give a positive number of iterations")
    if restarts < 1:
        raise UsageError(f"--restarts {restarts}: give 1 or more")
    if target_classes < 1:
        raise UsageError(f"--target-classes {target_classes}: give 1 or more")
    targets = target_classes if "n_classes" in params else None
    if cls_name == "AutoAttack":
        return AttackSpec(name.lower(), cls_name, norm, eps, None, steps or AUTOATTACK_STEPS, None, None, version,
                          targets)
    start = None
    if "random_start" in params:  # None: the attack's own default, recorded as such
        default = _signature(cls_name).parameters["random_start"].default
        start = default if random_start is None else random_start
    randomised = cls_name not in _DETERMINISTIC and start is not False
    return AttackSpec(
        name=name.lower(), cls_name=cls_name, norm=norm, eps=eps,
        alpha=(eps / 4 if alpha is None else alpha) if "alpha" in params else None,
        steps=1 if cls_name in _SINGLE_STEP else ((steps or DEFAULT_STEPS) if "steps" in params else None),
        random_start=start, restarts=restarts if randomised else 1, target_classes=targets)


def make_specs(names: Sequence[str], norm: str, eps_items: Sequence[str], alpha: str | None = None,
               steps: int | None = None, random_start: bool | None = None, restarts: int = 1,
               version: str = "standard", target_classes: int = AUTOATTACK_TARGET_CLASSES) -> list[AttackSpec]:
    """Settings of every attack x eps (attack-major order). An option no requested attack can
    use (``--alpha`` with only fgsm, ``--restarts 3`` with only deterministic attacks) is an error."""
    try:
        eps_values = [in_units(e, norm) for e in eps_items]
        alpha_value = None if alpha is None else in_units(alpha, norm)
    except ValueError as exc:
        raise UsageError(f"--eps/--alpha: {exc}") from None
    specs = [make_spec(n, norm, e, alpha_value, steps, random_start, restarts, version, target_classes)
             for n in names for e in eps_values]
    checks = (("--alpha", alpha is not None, any(s.alpha is not None for s in specs)),
              ("--steps", steps is not None, any(s.steps and s.cls_name not in _SINGLE_STEP for s in specs)),
              ("--random-start", random_start is not None, any(s.random_start is not None for s in specs)),
              ("--restarts", restarts > 1, any((s.restarts or 1) > 1 for s in specs)),
              ("--target-classes", target_classes != AUTOATTACK_TARGET_CLASSES,
               any(s.target_classes is not None for s in specs)))
    unused = [opt for opt, given, used in checks if given and not used]
    if unused:
        raise UsageError(f"{unused[0]} does not apply to --attack {','.join(names)}: drop it or add an attack that "
                         "takes it (e.g. pgd)")
    return specs


# --- running attacks -----------------------------------------------------------------------------
def attack_seed(base: int, *parts: Any) -> int:
    """Stable 32-bit seed of (base, parts...), e.g. (seed, model, attack, norm, eps, first index)."""
    text = "|".join(str(p) for p in (base, *parts))
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "little")


def attack_kwargs(spec: AttackSpec, num_classes: int, seed: int) -> dict[str, Any]:
    """Constructor arguments of ``spec.cls_name`` (pixel units). ``n_classes`` is what
    torchattacks turns into n_target_classes = n_classes - 1 for APGD-T / FAB-T: the model's
    class count, capped at ``spec.target_classes + 1`` (the original AutoAttack attacks the top-9
    other classes; the real class count alone would run 999 targeted attacks on ImageNet)."""
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


def run_attack(net: nn.Module, spec: AttackSpec, images: torch.Tensor, targets: torch.Tensor, seed: int,
               num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Attack one batch: images (B, 3, H, W) in [0, 1] on the model's device, targets (B,).

    Seeds torch's global RNG with ``seed`` before the attack (the same as calling torchattacks
    directly after ``torch.manual_seed(seed)``) inside `torch.random.fork_rng`, so the caller's
    RNG state is unchanged afterwards. With rerun restarts, restart r >= 1 is seeded
    with attack_seed(seed, 'restart', r) and each image keeps the first successful example,
    else the one with the highest loss. Returns (adversarial images, their logits (B, C)).
    """
    cuda = [images.device.index or 0] if images.device.type == "cuda" else []
    with frozen_parameters(net), torch.random.fork_rng(devices=cuda):  # the caller's RNG stream is left as it was
        torch.manual_seed(seed)
        attack = build_attack(net, spec, num_classes, seed)
        adv = attack(images, targets)
        with torch.no_grad():
            logits = net(adv)
        for restart in range(1, spec.restarts if spec.rerun_restarts else 1):
            torch.manual_seed(attack_seed(seed, "restart", restart))
            cand = attack(images, targets)
            with torch.no_grad():
                cand_logits = net(cand)
            higher = F.cross_entropy(cand_logits, targets, reduction="none") > F.cross_entropy(
                logits, targets, reduction="none")
            take = (logits.argmax(1) == targets) & ((cand_logits.argmax(1) != targets) | higher)
            adv = torch.where(take[:, None, None, None], cand, adv)
            logits = torch.where(take[:, None], cand_logits, logits)
    return adv.detach(), logits


# --- per-image outcomes and summaries -------------------------------------------------------------
def targets_for(labels: torch.Tensor, clean_logits: torch.Tensor) -> torch.Tensor:
    """Attack targets (B,): the label where known (>= 0), else the clean top-1 prediction."""
    return torch.where(labels >= 0, labels, clean_logits.argmax(1))


def image_outcomes(clean_logits: torch.Tensor, adv_logits: torch.Tensor, labels: torch.Tensor,
                   targets: torch.Tensor, norms: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-image outcomes of one attack on one batch, as numpy arrays (B,).

    labelled (label known), clean_correct / adv_correct (top-1 == label), eligible (clean top-1
    == target: the images an attack can turn), fooled (adversarial top-1 != target), flipped
    (adversarial top-1 != clean top-1), pert_norm (units), loss_increase (cross-entropy on the
    target, adversarial minus clean, nats).
    """
    clean_pred, adv_pred = clean_logits.argmax(1), adv_logits.argmax(1)
    loss = F.cross_entropy(adv_logits.double(), targets, reduction="none") - F.cross_entropy(
        clean_logits.double(), targets, reduction="none")
    out = {"labelled": labels >= 0, "clean_correct": clean_pred == labels, "adv_correct": adv_pred == labels,
           "eligible": clean_pred == targets, "fooled": adv_pred != targets, "flipped": adv_pred != clean_pred,
           "pert_norm": norms, "loss_increase": loss}
    return {k: v.detach().cpu().numpy() for k, v in out.items()}


@dataclass
class Outcomes:
    """Per-image outcomes of one model x attack setting, accumulated over batches."""

    parts: list[dict[str, np.ndarray]] = field(default_factory=list)

    def add(self, outcome: dict[str, np.ndarray]) -> None:
        self.parts.append(outcome)

    def stacked(self) -> dict[str, np.ndarray]:
        keys = self.parts[0].keys() if self.parts else ()
        return {k: np.concatenate([p[k] for p in self.parts]) for k in keys}


@dataclass(frozen=True)
class MetricValue:
    metric: str
    value: float
    ci_low: float
    ci_high: float
    n_images: int


def summarise(outcomes: dict[str, np.ndarray], n_boot: int, seed: int, level: float = 0.95) -> list[MetricValue]:
    """The metrics of one setting with percentile-bootstrap CIs over images.

    Rates are percent (0-100): clean_acc / robust_acc over labelled images (absent without
    labels), success_rate over eligible images (clean top-1 == target), flip_rate over all.
    pert_norm_* in the norm's units, loss_increase in nats.
    """
    labelled, eligible = outcomes["labelled"], outcomes["eligible"]
    selections = [
        ("clean_acc", 100.0 * outcomes["clean_correct"][labelled], None),
        ("robust_acc", 100.0 * outcomes["adv_correct"][labelled], None),
        ("success_rate", 100.0 * outcomes["fooled"][eligible], None),
        ("flip_rate", 100.0 * outcomes["flipped"], None),
        ("pert_norm_mean", outcomes["pert_norm"], None),
        ("pert_norm_max", outcomes["pert_norm"], lambda v: v.max()),
        ("loss_increase", outcomes["loss_increase"], None),
    ]
    values = []
    for metric, per_image, statistic in selections:
        per_image = np.asarray(per_image, dtype=np.float64)
        if metric in ("clean_acc", "robust_acc") and not labelled.any():
            continue
        if per_image.size == 0:
            values.append(MetricValue(metric, float("nan"), float("nan"), float("nan"), 0))
            continue
        point = float(per_image.max() if statistic else per_image.mean())
        low, high = bootstrap_ci(per_image, statistic, n_boot=n_boot, level=level, seed=seed)
        values.append(MetricValue(metric, point, low, high, int(per_image.size)))
    return values
