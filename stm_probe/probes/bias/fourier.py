"""`fourier`: the Fourier heat map (Yin et al., NeurIPS 2019, "A Fourier perspective on model
robustness in computer vision").

For each frequency (i, j) of a grid over the centred spectrum (every ``--fourier-grid``-th offset
up to Nyquist, see `stm_probe.plots.bias_fourier`), every image gets the real Fourier basis image
U_ij (S x S, unit L2 norm, its 2-D FFT nonzero only at (i, j) and (-i, -j)) times ``eps``, the same
basis on every channel with a seeded random sign per channel, then is clipped to [0, 1]:

    x~_c = clip(x_c + r_c * eps * U_ij, 0, 1),   r_c = +-1,   c = R, G, B.

``eps`` is the L2 norm per channel on [0, 1] pixels: Yin et al. use 4 on CIFAR-10 (32 px) and 15.7
on ImageNet (224 px), both [0, 1] pixels, i.e. a root-mean-square change of eps / S = 0.07 per
pixel at 224; the default keeps that: 15.7 * S / 224.

Per image and frequency: ``error`` (100 if the top-1 class is not the label; NaN without a label,
only where the data has labels) and ``flip`` (100 if the top-1 class differs from the clean one);
both are rates. Keys ("", i, j, metric) for one cell per distinct basis image (the map fills the
mirrored cells). Artefact ``fourier/<model>.npy``: the (2m + 1, 2m + 1) map of the error rate in
percent (the flip rate when no image has a label), rows i, columns j, zero frequency centred.

Speed: each loader batch is measured over every frequency in forward passes of ``--batch-size``
(image, frequency) pairs built on the device (the bases of a chunk of frequencies by table look-up
of exact cosines, the signs drawn once per batch), with predictions kept on the device until the
batch is done.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import UsageError
from ...core.seeds import per_image_bits
from ..base import require_finite
from .base import BiasMethod, Key
from .files import MAP_METRICS, fourier_map_path

#: Yin et al.'s ImageNet eps: L2 norm per channel on [0, 1] pixels at 224 px
IMAGENET_EPS = 15.7
IMAGENET_SIDE = 224


def default_eps(input_size: int) -> float:
    """Yin et al.'s ImageNet eps scaled to ``input_size``: the same per-pixel RMS change (0.07)."""
    return IMAGENET_EPS * input_size / IMAGENET_SIDE


def fourier_basis(freqs: torch.Tensor, size: int) -> torch.Tensor:
    """Real Fourier basis images U_ij, (F, S, S) float32 on ``freqs``' device, for signed integer
    frequencies ``freqs`` (F, 2) = (i vertical, j horizontal) in cycles per image side.

    U_ij[y, x] = sqrt(2) / S * cos(2 pi (i y + j x) / S + pi / 4), so that its FFT is nonzero only
    at (i, j) and (-i, -j) (modulo S) and ||U_ij||_2 = 1; where (i, j) = (-i, -j) modulo S (the
    zero and Nyquist frequencies) the sine part vanishes and U_ij = cos(2 pi (i y + j x) / S) / S.
    The phase index (i y + j x) mod S is exact integer arithmetic, the cosines come from a table.
    """
    device = freqs.device
    n = torch.arange(size, device=device, dtype=torch.int64)
    phase = (freqs[:, 0, None, None] * n[None, :, None] + freqs[:, 1, None, None] * n[None, None, :]) % size
    self_conjugate = ((2 * freqs) % size == 0).all(dim=1)  # (F,)
    angles = 2 * math.pi * torch.arange(size, dtype=torch.float64, device=device) / size  # made on the device
    table = torch.stack([torch.cos(angles + math.pi / 4) * math.sqrt(2) / size,
                         torch.cos(angles) / size]).float()  # (2, S)
    return table[self_conjugate.long()[:, None, None], phase]


def perturb(images: torch.Tensor, bases: torch.Tensor, signs: torch.Tensor, eps: float) -> torch.Tensor:
    """Every (frequency, image) pair: clip(x + sign * eps * U, 0, 1).

    images (B, C, S, S) in [0, 1]; bases (F, S, S); signs (F, B, C) of +-1. Returns (F * B, C, S, S),
    frequency-major (pair f * B + b is image b at frequency f)."""
    scaled = (eps * signs)[..., None, None] * bases[:, None, None]  # (F, B, C, S, S)
    return (images[None] + scaled).clamp_(0.0, 1.0).flatten(0, 1)


class FourierHeatMap(BiasMethod):
    """Error / flip rate under one Fourier basis perturbation per frequency (see module docstring)."""
    per_image_values = False  # cells x metrics x images rows: the heat maps carry them

    name = "fourier"
    statistics = {"error": "rate", "flip": "rate"}
    randomised = True  # the signs per channel

    def __init__(self, config: Any, session: Any) -> None:
        super().__init__(config, session)
        from ...core.fourier import representatives

        self.step = config.fourier_grid
        self.eps = config.fourier_eps if config.fourier_eps is not None else default_eps(self.input_size)
        self.cells: list[tuple[int, int]] = representatives(self.input_size, self.step)
        self.labelled = bool(getattr(session.source, "has_labels", False))

    def check(self) -> list[str]:
        if self.step > self.input_size // 2:
            raise UsageError(f"--fourier-grid {self.step}: a step above Nyquist ({self.input_size // 2} at "
                             f"--input-size {self.input_size}) leaves only the zero frequency; use at most "
                             f"{self.input_size // 2} (1 = every frequency)")
        return []

    def signs(self, indices: Any, repeat: int) -> torch.Tensor:
        """Seeded signs (F, B, 3) float32 of +-1 per cell, image and channel (CPU)."""
        bits = np.stack([per_image_bits(self.stream(i, j, repeat), indices, 3) for i, j in self.cells])
        return torch.from_numpy((bits & np.uint64(1)).astype(np.float32) * 2 - 1)

    def chunk_size(self, batch_images: int) -> int:
        """Frequencies per forward pass: ``--batch-size`` pairs (at least one frequency)."""
        return max(1, self.session.options.batch_size // max(batch_images, 1))

    @torch.inference_mode()
    def measure(self, model: Any, batch: Any, repeat: int) -> dict[Key, np.ndarray]:
        device = self.session.device
        images = batch.images.to(device, non_blocking=True)
        labels = batch.labels.to(device)
        freqs = torch.tensor(self.cells, dtype=torch.int64, device=device)  # (F, 2)
        signs = self.signs(batch.indices, repeat).to(device, non_blocking=True)  # (F, B, 3)
        clean = model.net(images)
        require_finite(clean, model.name)
        clean_top1 = clean.argmax(-1)
        top1 = torch.empty(len(self.cells), images.shape[0], dtype=torch.int64, device=device)  # (F, B)
        non_finite = torch.zeros((), dtype=torch.int64, device=device)  # counted on the device: no sync per chunk
        step = self.chunk_size(images.shape[0])
        for first in range(0, len(self.cells), step):
            chunk = slice(first, first + step)
            pixels = perturb(images, fourier_basis(freqs[chunk], self.input_size), signs[chunk], self.eps)
            logits = model.net(pixels)
            non_finite += (~torch.isfinite(logits)).sum()
            top1[chunk] = logits.argmax(-1).view(-1, images.shape[0])
        if int(non_finite):
            require_finite(torch.full((int(non_finite),), float("nan")), model.name)  # its one-line message
        flip = ((top1 != clean_top1[None]).double() * 100).cpu().numpy()  # (F, B)
        known = (labels >= 0).cpu().numpy()
        error = np.where(known[None], ((top1 != labels[None]).double() * 100).cpu().numpy(), np.nan)
        values: dict[Key, np.ndarray] = {}
        for f, (i, j) in enumerate(self.cells):
            if self.labelled:
                values[("", i, j, "error")] = error[f]
            values[("", i, j, "flip")] = flip[f]
        return values

    def artefacts(self, out_dir: Path, model: str, values: dict[Key, np.ndarray]) -> list[Path]:
        """``fourier/<model>.npy``: the heat map (rate in percent per cell, zero frequency centred)."""
        from ...core.fourier import heat_map
        from ...files import atomic_path

        rates: dict[str, dict[tuple[int, int], float]] = {}
        for (_, i, j, metric), per_image in values.items():
            known = per_image[~np.isnan(per_image)]
            if known.size:
                rates.setdefault(metric, {})[(int(i), int(j))] = 100.0 * float((known > 0).mean())
        metric = next((m for m in MAP_METRICS if len(rates.get(m, {})) == len(self.cells)), None)
        if metric is None:
            return []
        path = fourier_map_path(out_dir, model)
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.save(handle, heat_map(rates[metric], self.input_size, self.step))
        return [path]
