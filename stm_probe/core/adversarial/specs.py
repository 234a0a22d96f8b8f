"""Attack settings: the torchattacks attacks offered (every eps-bounded one), their norms, magnitudes in
the norm's units (1/255 for L-inf, absolute for L2; ``"4/255"`` is absolute in either) and the validated
setting of one attack at one eps (`AttackSpec`, `make_spec`, `make_specs`). No torch at module level."""
from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

from ...errors import UsageError


LINF, L2 = "Linf", "L2"
NORMS = (LINF, L2)
DEFAULT_EPS = {LINF: ("1", "2", "4", "8"), L2: ("0.25", "0.5", "1", "2")}
DEFAULT_STEPS = 10  # PGD-style attacks (docs/protocols.md §6)
AUTOATTACK_STEPS = 100  # APGD / APGD-T / FAB iterations of the original AutoAttack
AUTOATTACK_TARGET_CLASSES = 9  # original AutoAttack: APGD-T and FAB-T attack the top-9 other classes

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
