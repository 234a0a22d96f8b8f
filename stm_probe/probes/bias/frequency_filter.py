"""`frequency-filter`: predictions on low-pass and high-pass images (Wang et al., CVPR 2020,
"High-frequency component helps explain the generalization of convolutional neural networks").

Each standard view x (S x S) is split in the centred 2-D spectrum by a radial cutoff r, in
frequency offsets (cycles per image side, the px of the centred spectrum) from the zero frequency:

    low  = IFFT(FFT(x) * [d < r]),   high = IFFT(FFT(x) * [d >= r]),   d = sqrt(i^2 + j^2),

per channel, so low + high = x; as Wang et al., a strict ``d < r`` keeps the low frequencies and
neither image is clipped (a high-pass image has no zero frequency: mean 0 in pixel space). The
whole spectrum lies within d <= sqrt(2) * S / 2 (the corners), so a low pass is the identity only
for r above that; r = S / 2 keeps the disc inscribed in the spectrum. Default r = 4, 8, 16, 32,
64, 112 at 224 px (Wang et al.'s 4, 8, 12, 16 at 32 px cover a similar range), scaled by S / 224.

Keys ("low-pass" | "high-pass", r, None, metric) with `stm_probe.core.invariance.prediction_metrics`
against the clean view: top1 / top5 (labelled images), consistency, soft_ce, kl.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ...errors import UsageError
from ...core.invariance import METRIC_STATISTICS, prediction_metrics
from ..base import require_finite
from .base import BiasMethod, Key

#: Wang et al.-style cutoffs at 224 px (px of the centred spectrum)
DEFAULT_RADII_224 = (4, 8, 16, 32, 64, 112)
FILTERS = ("low-pass", "high-pass")


def default_radii(input_size: int) -> tuple[float, ...]:
    """The default cutoffs scaled from 224 px to ``input_size``."""
    return tuple(round(r * input_size / 224, 3) for r in DEFAULT_RADII_224)


def radial_distance(size: int, device: Any = None) -> torch.Tensor:
    """Distance of each FFT bin from the zero frequency, (S, S) float64, in the unshifted FFT
    layout (bin k <-> signed offset k, or k - S above Nyquist)."""
    offsets = torch.fft.fftfreq(size, d=1.0 / size, dtype=torch.float64, device=device)
    return torch.sqrt(offsets[:, None] ** 2 + offsets[None, :] ** 2)


def split_frequencies(images: torch.Tensor, radii: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Low-pass and high-pass versions of ``images`` (B, C, S, S) for every cutoff in ``radii``
    (R,): two (R, B, C, S, S) tensors in the images' dtype, low keeping d < r, high d >= r."""
    size = images.shape[-1]
    spectrum = torch.fft.fft2(images)  # (B, C, S, S) complex
    keep = radial_distance(size, images.device)[None] < radii.double()[:, None, None]  # (R, S, S)
    keep = keep[:, None, None].to(spectrum.dtype)  # (R, 1, 1, S, S)
    low = torch.fft.ifft2(spectrum[None] * keep).real
    high = torch.fft.ifft2(spectrum[None] * (1 - keep)).real
    return low.to(images.dtype), high.to(images.dtype)


class FrequencyFilter(BiasMethod):
    """Prediction metrics on low-pass and high-pass images vs the cutoff (see module docstring)."""

    name = "frequency-filter"
    statistics = {m: METRIC_STATISTICS[m] for m in ("top1", "top5", "consistency", "soft_ce", "kl")}
    randomised = False

    def __init__(self, config: Any, session: Any) -> None:
        super().__init__(config, session)
        self.radii = tuple(float(r) for r in (config.radii or default_radii(self.input_size)))
        largest = float(radial_distance(self.input_size).max())
        beyond = [r for r in self.radii if r > largest]
        if beyond:
            raise UsageError(f"--radii {beyond[0]:g} is beyond the spectrum of a {self.input_size} px input (its "
                             f"largest frequency radius is {largest:.2f}): give radii up to {largest:.2f}")

    @torch.inference_mode()
    def measure(self, model: Any, batch: Any, repeat: int) -> dict[Key, np.ndarray]:
        device = self.session.device
        images = batch.images.to(device, non_blocking=True)
        labels = batch.labels.to(device)
        clean = model.net(images)
        require_finite(clean, model.name)
        views = dict(zip(FILTERS, split_frequencies(images, torch.tensor(self.radii, device=device))))
        values: dict[Key, np.ndarray] = {}
        for name, filtered in views.items():
            for radius, pixels in zip(self.radii, filtered):
                logits = model.net(pixels)
                require_finite(logits, model.name)
                for metric, value in prediction_metrics(clean, logits, labels).items():
                    values[(name, radius, None, metric)] = value.numpy()
        return values
