"""Centred kernel alignment (CKA) between representations, from Gram matrices (docs/protocols.md, "CKA").

A representation is a layer's output flattened per image, X (n, d). Everything here works on Gram
matrices over images, never on features across models: a layer's linear Gram matrix of centred
features, G = Xc Xc^T (n, n), holds all that linear and RBF CKA need, and is small (n^2 numbers,
8 MB at 1,000 images in float64) where the features are large (stage 1 of a tiny model at 224 px:
96 x 56 x 56 floats per image).

* ``full`` estimator (Kornblith et al., ICML 2019): with centred Gram matrices Kc = H K H,
  CKA(K, L) = <Kc, Lc>_F / (||Kc||_F ||Lc||_F), over all n images at once.
* ``minibatch`` estimator (Nguyen et al., ICLR 2021): the unbiased HSIC estimator of Song et al.
  (JMLR 2012) on each minibatch b, summed over minibatches:
  CKA = sum_b HSIC_1(K_b, L_b) / sqrt(sum_b HSIC_1(K_b, K_b) sum_b HSIC_1(L_b, L_b)).
* kernels: ``linear`` (K = G) and ``rbf`` (K_ij = exp(-|x_i - x_j|^2 / (2 sigma^2)), sigma the median
  distance between distinct images of the Gram matrix's own images: the median heuristic).

Intervals: a bias-corrected percentile bootstrap over images (full: n images drawn with replacement,
the same draw for every layer and model, i.e. rows and columns of every Gram matrix; minibatch: whole
minibatches drawn with replacement). All arithmetic is float64.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..models.features import stage_outputs
from ..models.unified import UnifiedNet

LAYERS = ("stages", "blocks")
KERNELS = ("linear", "rbf")
ESTIMATORS = ("full", "minibatch")
#: float64 feature columns per step of the Gram accumulation, per image (bounds its working memory to 512 MB)
_GRAM_ELEMENTS = 1 << 26


# --- representations -----------------------------------------------------------------------------
def layer_names(net: torch.nn.Module, layers: str) -> list[str]:
    """Names of the layers read: ``stage1..`` (stage outputs) or ``stage1.block1..`` (every block, unified only)."""
    from ..models.features import num_stages

    if layers == "stages":
        return [f"stage{i + 1}" for i in range(num_stages(net))]
    if not isinstance(net, UnifiedNet):
        raise ValueError(f"{type(net).__name__} is not a unified model: only its stages can be read")
    return [f"stage{i + 1}.block{j + 1}" for i, stage in enumerate(net.stages) for j in range(len(stage))]


def layer_outputs(net: torch.nn.Module, x: torch.Tensor, layers: str) -> list[torch.Tensor]:
    """Outputs (B, ...) of the layers `layer_names` lists, for normalised images ``x`` (B, 3, H, W).

    stages: `stage_outputs` (unified: after each stage norm; timm: the ``features_only`` stages).
    blocks: the output of every block of a unified model (before the stage norm).
    """
    if layers == "stages":
        from ..models.features import num_stages

        return stage_outputs(net, x, list(range(num_stages(net))))
    outputs = []
    for i, stage in enumerate(net.stages):
        x = net.downsample_layers[i](x)
        for block in stage:
            x = block(x)
            outputs.append(x)
        x = net.stage_norms[i](x)
    return outputs


def centred_gram(features: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """Linear Gram matrix of column-centred features: (n, d) float32 -> Xc Xc^T (n, n) float64 on the CPU.

    Accumulated over blocks of feature columns moved to ``device`` in float64, so only one block
    (at most 2^26 / n columns) is ever held there in double precision.
    """
    n, d = features.shape
    step = max(1, _GRAM_ELEMENTS // max(n, 1))
    gram = torch.zeros(n, n, dtype=torch.float64, device=device)
    for start in range(0, d, step):
        block = features[:, start:start + step].to(device=device, dtype=torch.float64)
        block = block - block.mean(0, keepdim=True)
        gram += block @ block.T
    return gram.cpu()


def batch_grams(net: torch.nn.Module, images: torch.Tensor, layers: str, batch_size: int,
                device: torch.device) -> list[torch.Tensor]:
    """Per layer, the centred linear Gram matrix (n, n) float64 of the images ``images`` (n, 3, H, W).

    ``net``: a `stm_probe.models.features.Normalized` model (pixels in [0, 1]). The forward runs in
    sub-batches of ``batch_size`` images on ``device``; the flattened features of every layer are
    gathered on the CPU (float32, preallocated: n x sum of layer sizes x 4 bytes), then reduced to
    Gram matrices one layer at a time.
    """
    n = images.shape[0]
    store: list[torch.Tensor] = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            x = net.normalize(images[start:start + batch_size].to(device))
            outs = layer_outputs(net.model, x, layers)
            if not store:
                store = [torch.empty(n, out[0].numel(), dtype=torch.float32) for out in outs]
            for held, out in zip(store, outs):
                held[start:start + out.shape[0]] = out.reshape(out.shape[0], -1).float().cpu()
    grams = []
    while store:
        features = store.pop(0)
        grams.append(centred_gram(features, device))
        del features
    return grams


# --- kernels and estimators (float64 tensors) ----------------------------------------------------
def centre(gram: torch.Tensor) -> torch.Tensor:
    """H K H over the last two axes (..., n, n), H = I - 11^T / n."""
    return (gram - gram.mean(-1, keepdim=True) - gram.mean(-2, keepdim=True)
            + gram.mean((-2, -1), keepdim=True))


def rbf_from_linear(gram: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """RBF Gram matrix from a linear one (n, n): squared distances D_ij = G_ii + G_jj - 2 G_ij, and
    K = exp(-D / (2 sigma^2)) with sigma = ``scale`` x the median distance over pairs i < j (the mean of
    the two middle ones for an even count; NaN when every distance is 0: no bandwidth)."""
    diag = torch.diagonal(gram)
    sq = (diag[:, None] + diag[None, :] - 2 * gram).clamp_min(0)
    n = gram.shape[0]
    distances = sq[torch.triu_indices(n, n, 1, device=gram.device).unbind()].sqrt().sort().values
    count = distances.numel()
    median = float(distances[(count - 1) // 2] + distances[count // 2]) / 2 if count else 0.0
    if median <= 0:
        return torch.full_like(gram, float("nan"))
    return torch.exp(-sq / (2 * (scale * median) ** 2))


def kernel_grams(grams: torch.Tensor, kernel: str) -> torch.Tensor:
    """(P, n, n) linear Gram matrices -> the kernel's (linear: as they are; rbf: `rbf_from_linear` each)."""
    if kernel == "linear":
        return grams
    return torch.stack([rbf_from_linear(g) for g in grams])


def _normalise(hsic: torch.Tensor) -> torch.Tensor:
    """(..., P, P) HSIC values -> CKA: each divided by the square roots of its two diagonal entries."""
    scale = torch.sqrt(torch.diagonal(hsic, dim1=-2, dim2=-1).clamp_min(0))
    return hsic / (scale[..., :, None] * scale[..., None, :])


def cka_full(grams: torch.Tensor) -> torch.Tensor:
    """CKA between every pair of P kernel Gram matrices (P, n, n) over the same n images -> (P, P)."""
    flat = centre(grams).reshape(grams.shape[0], -1)
    return _normalise(flat @ flat.T)


def hsic_unbiased(grams: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC_1 (Song et al. 2012, eq. 5) between every pair of P Gram matrices (P, m, m), m >= 4:

    [tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((m-1)(m-2)) - 2/(m-2) 1^T K~ L~ 1] / (m (m-3)), K~ = K with a zero diagonal.
    """
    m = grams.shape[-1]
    tilde = grams * (1 - torch.eye(m, dtype=grams.dtype, device=grams.device))
    flat = tilde.reshape(grams.shape[0], -1)
    sums = flat.sum(1)
    rows = tilde.sum(2)  # K~ 1, (P, m)
    return (flat @ flat.T + torch.outer(sums, sums) / ((m - 1) * (m - 2)) - 2 / (m - 2) * rows @ rows.T) / (m * (m - 3))


def cka_minibatch(blocks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Minibatch CKA (P, P) from each minibatch's P Gram matrices (P, m_b, m_b): unbiased HSIC summed."""
    return _normalise(torch.stack([hsic_unbiased(b) for b in blocks]).sum(0))


# --- intervals -----------------------------------------------------------------------------------
def _interval(samples: torch.Tensor, value: np.ndarray, level: float,
              bounds: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """Bias-corrected percentile interval from (draws, P, P) bootstrap replicates of ``value`` (P, P).

    Resampling images with replacement repeats some of them, which moves CKA (duplicates align
    perfectly); the replicates are shifted by the bootstrap's bias estimate, mean(replicates) - value
    (Efron and Tibshirani 1993, ch. 10), before the percentiles are read; NaN replicates (degenerate
    resamples) are left out. ``bounds``: the range the statistic can take, to clip the interval to.
    """
    import warnings

    draws = samples.cpu().numpy()
    alpha = (1.0 - level) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        shifted = draws - (np.nanmean(draws, axis=0) - value)
        low, high = np.nanquantile(shifted, [alpha, 1.0 - alpha], axis=0)
    if bounds is not None:
        low, high = np.clip(low, *bounds), np.clip(high, *bounds)
    return low, high


def bootstrap_full(grams: torch.Tensor, n_boot: int, seed: int, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval (low, high), each (P, P), of `cka_full` over ``n_boot`` resamples of the n images:
    each draw takes the same n images (with replacement) for every Gram matrix, rows and columns."""
    n = grams.shape[-1]
    if n_boot <= 0 or n < 2:
        value = cka_full(grams).cpu().numpy()
        return value, value
    rng = np.random.default_rng(seed)
    samples = torch.empty(n_boot, grams.shape[0], grams.shape[0], dtype=torch.float64)
    for draw in range(n_boot):
        idx = rng.integers(0, n, size=n)
        if len(np.unique(idx)) < 2:  # one image n times: CKA is undefined (0 / 0)
            samples[draw] = float("nan")
            continue
        idx = torch.as_tensor(idx, device=grams.device)
        resampled = grams[:, idx[:, None], idx[None, :]]  # one copy; centred in place
        row, col = resampled.mean(-1, keepdim=True), resampled.mean(-2, keepdim=True)
        resampled -= row
        resampled -= col - row.mean(-2, keepdim=True)
        flat = resampled.reshape(grams.shape[0], -1)
        samples[draw] = _normalise(flat @ flat.T).cpu()
    return _interval(samples, cka_full(grams).cpu().numpy(), level, (0.0, 1.0))


def bootstrap_minibatch(blocks: Sequence[torch.Tensor], n_boot: int, seed: int,
                        level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval (low, high), each (P, P), of `cka_minibatch` over ``n_boot`` resamples of the
    minibatches (with replacement; NaN bounds with fewer than two minibatches)."""
    hsic = torch.stack([hsic_unbiased(b) for b in blocks])  # (batches, P, P)
    if n_boot <= 0:
        value = _normalise(hsic.sum(0)).cpu().numpy()
        return value, value
    if hsic.shape[0] < 2:
        nan = np.full(hsic.shape[1:], np.nan)
        return nan, nan
    rng = np.random.default_rng(seed)
    counts = torch.as_tensor(rng.multinomial(hsic.shape[0], np.full(hsic.shape[0], 1.0 / hsic.shape[0]),
                                             size=n_boot), dtype=torch.float64, device=hsic.device)
    samples = _normalise(torch.einsum("rb,bpq->rpq", counts, hsic))
    return _interval(samples, _normalise(hsic.sum(0)).cpu().numpy(), level, None)
