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

The rooms: `specs` (attack names, norms, units, `AttackSpec`), `draws` (`PerImageRandom` and the
derived seeds), `attacks` (building and running an attack, the eps-ball check) and `metrics`
(per-image outcomes, metrics and summaries).
"""
from __future__ import annotations

from .attacks import (PERT_ATOL, PERT_RTOL, attack_kwargs, build_attack, check_perturbation, perturbation_norms,
                      run_attack)
from .draws import PerImageRandom, batch_seed, restart_seeds
from .metrics import (METRIC_STATISTICS, METRICS, MetricValue, image_outcomes, per_image_metrics, summarise,
                      targets_for)
from .specs import (AUTOATTACK_STEPS, AUTOATTACK_TARGET_CLASSES, DEFAULT_EPS, DEFAULT_STEPS, L2, LINF, NORMS,
                    AttackSpec, in_units, make_spec, make_specs, offered_attacks, parse_magnitude, resolve_attack,
                    unit_scale)

__all__ = [
    "AUTOATTACK_STEPS", "AUTOATTACK_TARGET_CLASSES", "DEFAULT_EPS", "DEFAULT_STEPS", "L2", "LINF", "METRICS",
    "METRIC_STATISTICS", "NORMS", "PERT_ATOL", "PERT_RTOL", "AttackSpec", "MetricValue", "PerImageRandom",
    "attack_kwargs", "batch_seed", "build_attack", "check_perturbation", "image_outcomes", "in_units", "make_spec",
    "make_specs", "offered_attacks", "parse_magnitude", "per_image_metrics", "perturbation_norms",
    "resolve_attack", "restart_seeds", "run_attack", "summarise", "targets_for", "unit_scale",
]
