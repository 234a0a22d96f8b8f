"""Classification metrics from logits: top-k correctness, negative log-likelihood, confidence, and the
expected calibration error (ECE) with equal-width confidence bins.

Per-image values follow the project's convention for rates: 100 where the image counts as a hit,
0 where it does not, NaN where it has no label (``-1``). NLL is in nats; confidence is the top-1
softmax probability in [0, 1].

ECE (Guo et al., "On Calibration of Modern Neural Networks", 2017; Naeini et al. 2015): the
confidences are put into ``bins`` equal-width bins over (0, 1] (bin b holds confidences in
(b / bins, (b + 1) / bins]); ECE = sum over bins of |bin| / n * |accuracy(bin) - mean confidence(bin)|,
a fraction in [0, 1].
"""
from __future__ import annotations

import numpy as np
import torch

ECE_BINS = 15


def classification_values(logits: torch.Tensor, labels: torch.Tensor, k: int = 5) -> dict[str, np.ndarray]:
    """Per-image values of logits (B, C) against labels (B,) (``-1`` = unknown), each (B,) float64.

    ``top1``, ``top<k>``: 100 if the label is among the top 1 / k classes, else 0 (NaN where the label is
    unknown; top-k all NaN when the model has no more than k classes: it would always be 100);
    ``nll``: -log softmax(logits)[label] in nats; ``confidence``: max softmax probability (NaN where
    the label is unknown, so it is summarised over the same images as top-1).
    """
    logits = logits.detach().to(torch.float64)
    labels = labels.detach().to(logits.device).long()
    known = labels >= 0
    safe = torch.where(known, labels, torch.zeros_like(labels))
    log_probs = torch.log_softmax(logits, dim=1)
    nan = torch.full_like(log_probs[:, 0], float("nan"))
    num_classes = logits.shape[1]
    ranked = logits.topk(min(k, num_classes), dim=1).indices
    hits = ranked == safe[:, None]
    top1 = torch.where(known, hits[:, 0].double() * 100, nan)
    topk = torch.where(known, hits.any(1).double() * 100, nan) if num_classes > k else nan
    nll = torch.where(known, -log_probs.gather(1, safe[:, None])[:, 0], nan)
    confidence = torch.where(known, log_probs.max(1).values.exp(), nan)
    return {"top1": top1.cpu().numpy(), f"top{k}": topk.cpu().numpy(), "nll": nll.cpu().numpy(),
            "confidence": confidence.cpu().numpy()}


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE (fraction in [0, 1]) of per-image ``confidence`` (N,) in [0, 1] and ``correct`` (N,) (> 0 = right).

    Equal-width bins over (0, 1]; a confidence of exactly 0 goes into the first bin. NaN for no image.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = (np.asarray(correct, dtype=np.float64) > 0).astype(np.float64)
    n = confidence.size
    if n == 0:
        return float("nan")
    # bin b holds (b / bins, (b + 1) / bins]: ceil(c * bins) - 1, with c = 0 in bin 0
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    gap = np.abs(np.bincount(index, weights=correct, minlength=bins) - np.bincount(index, weights=confidence,
                                                                                  minlength=bins))
    # sum_b |B_b| / n * |acc_b - conf_b| = sum_b |hits_b - sum conf_b| / n
    return float(gap[count > 0].sum() / n)


def ece_summary(confidence: np.ndarray, correct: np.ndarray, n_boot: int, seed: int, bins: int = ECE_BINS,
                level: float = 0.95) -> tuple[float, float, float, int]:
    """(ECE, ci_low, ci_high, n) in percent over the images where both values are known.

    The interval is the seeded percentile bootstrap over images, each replicate recomputing the ECE.
    ECE is biased upwards in small samples, so the replicates can all lie above the estimate; the
    interval is then widened to hold the estimate (never narrowed).
    """
    from .stats import bootstrap_ci

    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    keep = ~(np.isnan(confidence) | np.isnan(correct))
    pairs = np.stack([confidence[keep], correct[keep]], axis=1)
    n = int(pairs.shape[0])
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    value = expected_calibration_error(pairs[:, 0], pairs[:, 1], bins)
    low, high = bootstrap_ci(pairs, lambda v: expected_calibration_error(v[:, 0], v[:, 1], bins), n_boot, level,
                             seed)
    return 100 * value, 100 * min(low, value), 100 * max(high, value), n
