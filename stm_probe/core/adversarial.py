"""Adversarial robustness with torchattacks (docs/protocols.md §6): a pure computation library.

Attacks see pixels in [0, 1]; mean/std live inside the model wrapper (`Normalized`), which is
torchattacks' convention, so no ``set_normalization_used`` is needed. Epsilon and step size are
given in *units*: 1/255 for L-inf (``4`` = 4/255), absolute for L2; an item written as a
fraction (``"4/255"``) is an absolute value in either norm. The attack target is the label where
known, else the clean top-1 prediction (label-free mode).

Seeding: an attack call gets one seed per image (``image_seeds``, from `runtime.seeds`). Every
random draw shaped like a batch of images is filled row by row from the image's own
`torch.Generator` (`PerImageRandom`), so image i's adversarial example does not depend on the
other images of its batch, its position or the batch size; this holds too for the sub-batches
torchattacks attacks (APGD, FAB and Square attack only the images still classified correctly,
AutoAttack only those not yet fooled). Draws of one value for the whole batch (Square's window
positions, DI-FGSM's resize) come from torch's global RNG seeded from all seeds of the batch and
so stay batch-dependent. Model parameters are frozen during the attack (only the input gradient
is needed). `check_perturbation` asserts adversarial images lie in [0, 1] and inside the eps
ball (float tolerance). Metrics are per image (`per_image_metrics`), summarised by
`METRIC_STATISTICS` with `stats.summarise_values` (Wilson intervals for rates).
"""
from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from ..models.features import frozen_parameters
from .seeds import stream_id
from .stats import Statistic, summarise_values

if TYPE_CHECKING:
    import torchattacks

LINF, L2 = "Linf", "L2"
NORMS = (LINF, L2)
# how each metric is summarised over images (stats.summarise_values): rates get Wilson intervals
METRIC_STATISTICS: dict[str, Statistic] = {
    "clean_acc": "rate", "robust_acc": "rate", "success_rate": "rate", "flip_rate": "rate",
    "pert_norm_mean": "mean", "pert_norm_max": "max", "loss_increase": "mean"}
METRICS = tuple(METRIC_STATISTICS)
DEFAULT_EPS = {LINF: ("1", "2", "4", "8"), L2: ("0.25", "0.5", "1", "2")}
DEFAULT_STEPS = 10  # PGD-style attacks (docs/protocols.md §6)
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

    def key(self) -> str:
        """Stable text naming every setting that changes the numbers (for seeding and caching),
        e.g. 'PGD|Linf|eps=4.0|alpha=1.0|steps=10|random_start=True|restarts=1|version=None|target_classes=None'."""
        def number(value: float | None) -> str:  # 4 and 4.0 name the same eps
            return "None" if value is None else repr(float(value))

        fields = {"eps": number(self.eps), "alpha": number(self.alpha), "steps": self.steps,
                  "random_start": self.random_start, "restarts": self.restarts, "version": self.version,
                  "target_classes": self.target_classes}
        return "|".join([self.cls_name, self.norm, *(f"{k}={v}" for k, v in fields.items())])

    def settings(self) -> dict[str, Any]:
        """What the manifest records for this setting."""
        return {"key": self.key(), "attack": self.name, "class": f"torchattacks.{self.cls_name}", "norm": self.norm,
                "eps": self.eps, "eps_abs": self.eps_abs, "alpha": self.alpha,
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
        takers = {"--target-classes": "autoattack, apgdt or fab", "--restarts": "pgd or apgd"}.get(unused[0], "pgd")
        raise UsageError(f"{unused[0]} does not apply to --attack {','.join(names)}: drop it or add an attack that "
                         f"takes it ({takers})")
    return specs


# --- per-image random draws ----------------------------------------------------------------------
_IN_PLACE = frozenset(getattr(torch.Tensor, n) for n in (
    "uniform_", "normal_", "random_", "bernoulli_", "exponential_", "cauchy_", "log_normal_", "geometric_"))
_SIZED = frozenset((torch.rand, torch.randn, torch.randint))  # size argument -> new tensor
_LIKE = {torch.rand_like: torch.rand, torch.randn_like: torch.randn, torch.randint_like: torch.randint}
_FROM_TENSORS = frozenset((torch.bernoulli, torch.poisson, torch.normal))  # shape from tensor arguments
_SUBSETS = frozenset((torch.Tensor.__getitem__, torch.Tensor.index_select, torch.index_select))


def _split_size(args: tuple, kwargs: dict) -> tuple[tuple, tuple[int, ...]]:
    """(leading arguments, size) of a sized factory: rand(2, 3), rand((2, 3)), randint(0, 5, (2, 3)),
    normal(0., 1., size=(2, 3))."""
    if "size" in kwargs:
        return args, tuple(kwargs.pop("size"))
    if args and isinstance(args[-1], (tuple, list, torch.Size)):
        return args[:-1], tuple(args[-1])
    return (), tuple(args)


def _leading_index(index: Any) -> np.ndarray | slice | None:
    """The dim-0 part of a ``__getitem__`` index that keeps every other dim (x[idx], x[mask],
    x[idx, :], x[2:5]) as numpy ints/bools or a slice; None for anything else."""
    if isinstance(index, tuple):
        if not index or not all(i is Ellipsis or isinstance(i, slice) for i in index[1:]):
            return None
        index = index[0]
    if isinstance(index, slice):
        return index
    if isinstance(index, torch.Tensor) and index.dim() == 1 and not index.is_floating_point():
        index = index.bool() if index.dtype == torch.uint8 else index  # a uint8 index is a mask, as in torch
        return index.detach().cpu().numpy()
    if isinstance(index, list) and all(isinstance(i, (bool, int)) for i in index):
        return np.asarray(index)
    return None


class PerImageRandom(torch.overrides.TorchFunctionMode):
    """Torch function mode that draws random tensors shaped like a batch of images per image.

    ``image_seeds``: one int per image of the batch (B,); ``ndim``: the images' number of dims (4).
    A random draw (``uniform_``, ``normal_``, ``rand``, ``randn_like``, ``randint``, ``bernoulli``,
    ...) whose result has ``ndim`` dims and a leading size N that names a known set of images is
    filled row by row: row j from the CPU `torch.Generator` of image ``rows[j]`` (seeded once from
    its seed), then copied to the requested device. Row sets: the whole batch (N = B), and every
    image-shaped sub-batch cut from a known one by indexing along dim 0 (``x[idx]``, ``x[mask]``,
    ``index_select``); the latest set of each size is used, which is exact for torchattacks, whose
    draws follow the cut they belong to. Each image's generator advances only with its own draws,
    so they do not depend on the other images of the batch. Other draws (wrong number of dims, an
    unknown size, an explicit generator, ``out=``) fall through to torch's global RNG.

    `unobserved` wraps the model so its forward runs without the mode (no overhead there, and
    no sub-batches are inferred from the model's own indexing).
    """

    def __init__(self, image_seeds: Sequence[int], ndim: int) -> None:
        super().__init__()
        self.generators = [torch.Generator().manual_seed(int(s)) for s in image_seeds]
        self.ndim = ndim
        self.rows: dict[int, np.ndarray] = {len(self.generators): np.arange(len(self.generators))}
        self.paused = 0

    def unobserved(self, net: nn.Module) -> nn.Module:
        """``net`` with this mode paused during its forward."""
        return _Unobserved(net, self)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if self.paused or "out" in kwargs or kwargs.get("generator") is not None:
            return func(*args, **kwargs)
        kwargs.pop("generator", None)
        if func in _IN_PLACE:  # handlers get a copy of kwargs: NotImplemented falls through with the original
            out = self._in_place(func, args, dict(kwargs))
        elif func in _SIZED or (func is torch.normal and not any(isinstance(a, torch.Tensor) for a in args)):
            out = self._sized(func, args, dict(kwargs))
        elif func in _LIKE:
            out = self._like(_LIKE[func], args, dict(kwargs))
        elif func in _FROM_TENSORS:
            out = self._from_tensors(func, args, dict(kwargs))
        else:
            out = func(*args, **kwargs)
            if func in _SUBSETS:
                self._note_subset(func, args, kwargs, out)
        return func(*args, **kwargs) if out is NotImplemented else out

    # which images a draw belongs to
    def _rows_for(self, shape: Sequence[int]) -> np.ndarray | None:
        return self.rows.get(int(shape[0])) if len(shape) == self.ndim else None

    def _note_subset(self, func, args: tuple, kwargs: dict, out: Any) -> None:
        source = args[0]
        if not (isinstance(source, torch.Tensor) and isinstance(out, torch.Tensor)
                and source.dim() == self.ndim == out.dim()):
            return
        rows = self._rows_for(source.shape)
        if func is torch.Tensor.__getitem__:
            index = _leading_index(args[1])
        else:  # index_select(input, dim, index)
            bound = {**dict(zip(("dim", "index"), args[1:])), **kwargs}
            index = _leading_index(bound.get("index")) if bound.get("dim") == 0 else None
        if rows is None or index is None:
            return
        try:
            picked = rows[index]
        except IndexError:
            return
        if picked.shape == (out.shape[0],):
            self.rows[out.shape[0]] = picked

    # the draws
    def _stack(self, rows: np.ndarray, draw) -> torch.Tensor:
        """Stack of ``draw(j, generator of image rows[j])`` over rows j (on CPU)."""
        return torch.stack([draw(j, self.generators[r]) for j, r in enumerate(rows)])

    def _in_place(self, func, args: tuple, kwargs: dict):
        target = args[0]
        rows = self._rows_for(target.shape)
        if rows is None:
            return NotImplemented

        def draw(j: int, generator: torch.Generator) -> torch.Tensor:
            row = torch.empty(target.shape[1:], dtype=target.dtype)
            params = [a.expand_as(target)[j].cpu() if isinstance(a, torch.Tensor) else a for a in args[1:]]
            return func(row, *params, generator=generator, **kwargs)

        return target.copy_(self._stack(rows, draw))

    def _sized(self, func, args: tuple, kwargs: dict):
        lead, size = _split_size(args, kwargs)
        rows = self._rows_for(size)
        if rows is None:
            return NotImplemented
        device, grad = kwargs.pop("device", None), kwargs.pop("requires_grad", False)
        kwargs.pop("pin_memory", None)
        out = self._stack(rows, lambda j, g: func(*lead, size[1:], generator=g, **kwargs))
        return out.to(torch.get_default_device() if device is None else device).requires_grad_(grad)

    def _like(self, factory, args: tuple, kwargs: dict):
        source = args[0]
        rows = self._rows_for(source.shape)
        if rows is None:
            return NotImplemented
        bounds = tuple(args[1:]) + tuple(kwargs.pop(k) for k in ("low", "high") if k in kwargs)
        dtype = kwargs.get("dtype") or source.dtype
        device = kwargs.get("device") or source.device
        out = self._stack(rows, lambda j, g: factory(*bounds, tuple(source.shape[1:]), generator=g, dtype=dtype))
        return out.to(device).requires_grad_(bool(kwargs.get("requires_grad", False)))

    def _from_tensors(self, func, args: tuple, kwargs: dict):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        shape = torch.broadcast_shapes(*(t.shape for t in tensors))
        rows = self._rows_for(shape)
        if rows is None:
            return NotImplemented

        def draw(j: int, generator: torch.Generator) -> torch.Tensor:
            params = [a.expand(shape)[j].cpu() if isinstance(a, torch.Tensor) else a for a in args]
            return func(*params, generator=generator, **kwargs)

        return self._stack(rows, draw).to(tensors[0].device)


class _Unobserved(nn.Module):
    """A model whose forward runs with a `PerImageRandom` mode paused."""

    def __init__(self, net: nn.Module, mode: PerImageRandom) -> None:
        super().__init__()
        self.net = net
        self.mode = mode
        self.train(net.training)  # torchattacks restores the wrapper's mode, hence the net's, afterwards

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.mode.paused += 1
        try:
            return self.net(x)
        finally:
            self.mode.paused -= 1


def batch_seed(image_seeds: Sequence[int]) -> int:
    """63-bit seed of a whole batch (for draws not made per image): a hash of all its image seeds."""
    return stream_id(0, "adversarial-batch", *(int(s) for s in image_seeds)) >> 1


def restart_seeds(image_seeds: Sequence[int], restart: int) -> list[int]:
    """Per-image seeds of rerun restart ``restart`` >= 1, derived from each image's own seed."""
    return [stream_id(int(s), "restart", restart) >> 1 for s in image_seeds]


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


def per_image_metrics(outcomes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-image values (B,) float64 of every metric of `METRIC_STATISTICS` from `image_outcomes`.

    Rates are 0 or 100, NaN where the image does not count: clean_acc and robust_acc over
    labelled images (robust: correct on both the clean and the adversarial input, as AutoAttack
    and RobustBench count), success_rate over eligible images (clean top-1 == target), flip_rate
    over all. pert_norm_* in the norm's units, loss_increase in nats.
    """
    def rate(hit: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
        values = 100.0 * np.asarray(hit, dtype=np.float64)
        return values if counts is None else np.where(np.asarray(counts, dtype=bool), values, np.nan)

    labelled, clean_correct = outcomes["labelled"], outcomes["clean_correct"]
    norms = np.asarray(outcomes["pert_norm"], dtype=np.float64)
    return {"clean_acc": rate(clean_correct, labelled),
            "robust_acc": rate(np.logical_and(clean_correct, outcomes["adv_correct"]), labelled),
            "success_rate": rate(outcomes["fooled"], outcomes["eligible"]),
            "flip_rate": rate(outcomes["flipped"]),
            "pert_norm_mean": norms.copy(),
            "pert_norm_max": norms.copy(),
            "loss_increase": np.asarray(outcomes["loss_increase"], dtype=np.float64)}


@dataclass(frozen=True)
class MetricValue:
    metric: str
    value: float
    ci_low: float
    ci_high: float
    n_images: int


def summarise(outcomes: dict[str, np.ndarray], n_boot: int, seed: int, level: float = 0.95) -> list[MetricValue]:
    """Every metric of one setting, summarised over images by `METRIC_STATISTICS` with
    `stats.summarise_values`: rates (percent) with Wilson intervals, means with a seeded
    percentile bootstrap (``n_boot``, ``seed``), pert_norm_max without interval (NaN).
    clean_acc and robust_acc are left out when no image is labelled."""
    values = per_image_metrics(outcomes)
    labelled = bool(np.asarray(outcomes["labelled"]).any())
    out = []
    for metric, statistic in METRIC_STATISTICS.items():
        if metric in ("clean_acc", "robust_acc") and not labelled:
            continue
        value, low, high, n = summarise_values(values[metric], statistic, n_boot=n_boot, seed=seed, level=level)
        out.append(MetricValue(metric, value, low, high, n))
    return out
