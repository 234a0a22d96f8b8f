"""Per-image outcomes of an attack (`image_outcomes`), the metrics they give (`per_image_metrics`) and
their summaries over images (`summarise`: Wilson intervals for rates, a seeded bootstrap for means)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..stats import Statistic, summarise_values


# how each metric is summarised over images (stats.summarise_values): rates get Wilson intervals
METRIC_STATISTICS: dict[str, Statistic] = {
    "clean_acc": "rate", "robust_acc": "rate", "success_rate": "rate", "flip_rate": "rate",
    "pert_norm_mean": "mean", "pert_norm_max": "max", "loss_increase": "mean"}
METRICS = tuple(METRIC_STATISTICS)


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
