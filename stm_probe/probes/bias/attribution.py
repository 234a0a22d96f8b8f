"""`attribution`: captum attribution maps per model (Saliency, IntegratedGradients, Occlusion).

For every image the map of the target class (the label where known, else the clean top-1) is
taken with respect to the pixels in [0, 1] and reduced to one value per pixel: |attribution|
summed over the three channels, (B, H, W). The same `attribution_maps` gives patch-drop its
salient order.

* Saliency: |d logit / d pixel| (Simonyan et al., 2014).
* IntegratedGradients: from a black image (all-zero pixels), `IG_STEPS` Gauss-Legendre steps,
  ``internal_batch_size`` = the views per pass (Sundararajan et al., 2017).
* Occlusion: a black square slid over the image; 16 px windows at stride 8 px at 224, scaled
  with the side (stride = the divisor of the side closest below side / 28, window = 2 x
  stride, so the windows tile the image exactly); ``perturbations_per_eval`` keeps about
  ``4 x --batch-size`` occluded views per forward pass (Zeiler and Fergus, 2014).

Per image: the *concentration*, the fraction of the map's total in its top 10% of pixels
(`TOP_FRACTION`; 0.1 for a uniform map, 1 when 10% of the pixels hold everything; mean and
bootstrap CI). Per model: the centre of mass of the mean map (each image's map normalised to
unit total first, so every image weighs the same; by linearity that centre is the mean of the
per-image centres) and its distance from the image centre, in px (``com_distance_px``) and as a
fraction of the side (``com_distance_frac``), with a bootstrap CI over images. Images whose
map is zero everywhere have neither and are counted as skipped. The first
``--attribution-images`` images of each model are saved to ``attribution/<model>.npz`` (image,
map, label, prediction, target; `files.attribution_path`) for the figure (`stm_probe.plots.bias_attribution`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...models.features import frozen_parameters
from ...core.stats import bootstrap_ci, summarise_values
from ..base import Extra, clean_forward, is_extra, require_finite
from .base import BiasMethod, Key
from .files import attribution_path

COM = Extra("com")  # per-image centre of mass (row, col) px of the map: the mean map's centre distance comes from it
EXAMPLE = "example_"  # Extra(EXAMPLE + field): the first images' maps for attribution/<model>.npz

#: fraction of pixels whose share of the total attribution is the concentration
TOP_FRACTION = 0.1
#: integration steps of IntegratedGradients (captum's default)
IG_STEPS = 50
#: occluded views per forward pass, in multiples of --batch-size
OCCLUSION_VIEWS_PER_BATCH = 4


def attribution_targets(labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The class explained for each image (B,): the label where known (>= 0), else the clean top-1."""
    return torch.where(labels >= 0, labels, logits.argmax(1))


def occlusion_window(side: int) -> tuple[int, int]:
    """(window, stride) in px of the occluding square: (16, 8) at 224, scaled with ``side``.

    The stride is the largest divisor of ``side`` not above ``round(side / 28)`` (at least 1) and
    the window twice the stride: the windows tile the image exactly, covering the outer strip (one stride
    wide) once and the interior twice; captum averages over the windows covering a pixel."""
    target = max(1, round(side / 28))
    stride = max(d for d in range(1, target + 1) if side % d == 0)
    return 2 * stride, stride


def attribute(net: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor, method: str,
              views_per_pass: int = 16) -> torch.Tensor:
    """captum attributions of ``targets`` (B,) for pixels ``images`` (B, 3, H, W) in [0, 1]:
    (B, 3, H, W), in logit units per pixel (Saliency: |gradient|; IG and Occlusion: signed).

    ``method``: saliency, integrated-gradients (black baseline) or occlusion (black square, see
    `occlusion_window`); ``views_per_pass`` bounds the images of one forward/backward pass."""
    from captum.attr import IntegratedGradients, Occlusion, Saliency

    batch = images.shape[0]
    if method in ("saliency", "integrated-gradients"):
        images = images.detach().requires_grad_(True)
    if method == "saliency":
        with frozen_parameters(net):
            return Saliency(net).attribute(images, target=targets, abs=True).detach()
    if method == "integrated-gradients":
        with frozen_parameters(net):
            return IntegratedGradients(net).attribute(images, baselines=0.0, target=targets, n_steps=IG_STEPS,
                                                      internal_batch_size=max(1, views_per_pass)).detach()
    if method == "occlusion":
        window, stride = occlusion_window(images.shape[-1])
        per_eval = max(1, OCCLUSION_VIEWS_PER_BATCH * views_per_pass // batch)
        with torch.no_grad():
            return Occlusion(net).attribute(images.detach(), sliding_window_shapes=(3, window, window),
                                            strides=(3, stride, stride), baselines=0.0, target=targets,
                                            perturbations_per_eval=per_eval)
    raise ValueError(f"unknown attribution method {method!r}")


def attribution_maps(net: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor, method: str,
                     views_per_pass: int = 16) -> torch.Tensor:
    """One value per pixel, (B, H, W) float32 >= 0: |`attribute`| summed over the channels."""
    return attribute(net, images, targets, method, views_per_pass).abs().sum(1).float()


def concentration(maps: torch.Tensor, top_fraction: float = TOP_FRACTION) -> np.ndarray:
    """Fraction of each map's total (maps (B, H, W) >= 0) held by its ``round(top_fraction x H x W)``
    largest pixels (at least one): (B,) float64 in [top_fraction, 1]; NaN for an all-zero map."""
    flat = maps.detach().double().flatten(1).cpu()
    k = max(1, round(top_fraction * flat.shape[1]))
    total = flat.sum(1)
    top = flat.topk(k, dim=1).values.sum(1)
    return torch.where(total > 0, top / total, torch.full_like(total, float("nan"))).numpy()


def centre_of_mass(maps: torch.Tensor) -> np.ndarray:
    """Centre of mass (y, x) in px of each map (B, H, W) >= 0, from the top-left corner with pixel
    i's centre at i + 0.5 (so a uniform map's centre is (H/2, W/2)): (B, 2) float64; NaN for an
    all-zero map."""
    maps = maps.detach().double().cpu()
    total = maps.sum((1, 2))
    ys = torch.arange(maps.shape[1], dtype=torch.float64) + 0.5
    xs = torch.arange(maps.shape[2], dtype=torch.float64) + 0.5
    com = torch.stack([(maps.sum(2) * ys).sum(1), (maps.sum(1) * xs).sum(1)], 1) / total[:, None]
    com[total <= 0] = float("nan")
    return com.numpy()


def centre_distance(com: np.ndarray, side: int) -> float:
    """Distance in px of the mean of centres ``com`` (N, 2) from the centre of a ``side`` px image."""
    return float(np.hypot(*(com.mean(0) - side / 2)))


class Attribution(BiasMethod):
    """Attribution maps, their concentration and the mean map's centre of mass (module docstring)."""

    name = "attribution"
    statistics = {"concentration": "mean", "com_distance_px": "mean", "com_distance_frac": "mean"}
    skip_reason = "every attribution map was zero"

    def measure(self, model: Any, batch: Any, repeat: int) -> dict[Key, np.ndarray]:
        images, labels, logits = clean_forward(model, batch, self.session.device)
        targets = attribution_targets(labels, logits)
        maps = attribution_maps(model.net, images, targets, self.config.method, self.session.options.batch_size)
        require_finite(maps, model.name, "attributions")
        variant = self.config.method
        out = {(variant, None, None, "concentration"): concentration(maps),
               (variant, None, None, COM): centre_of_mass(maps)}
        keep = (batch.indices < self.config.attribution_images).cpu()
        examples = {"image": (images.cpu()[keep] * 255).round().clamp(0, 255).to(torch.uint8), "map": maps.cpu()[keep],
                    "label": labels.cpu()[keep], "prediction": logits.argmax(1).cpu()[keep],
                    "target": targets.cpu()[keep], "index": batch.indices.cpu()[keep]}
        out.update({(variant, None, None, Extra(f"{EXAMPLE}{k}")): v.numpy() for k, v in examples.items()})
        return out

    def summarise(self, values: dict[Key, np.ndarray], seed: int, n_boot: int) -> dict[Key, tuple]:
        """concentration: mean and bootstrap CI; the mean map's centre distance from the centres of mass (``COM``)."""
        from ...core.seeds import stream_seed

        out: dict[Key, tuple] = {}
        side = self.input_size
        for key, per_image in values.items():
            variant, metric = key[0], key[-1]
            if metric == "concentration":
                value, low, high, n = summarise_values(per_image, "mean", n_boot,
                                                       seed=stream_seed(seed, "bootstrap", self.name, *key))
                out[key] = (value, low, high, n, len(per_image) - n)
            elif metric == COM:
                com = per_image[np.isfinite(per_image).all(1)]
                skipped = len(per_image) - len(com)
                if not len(com):
                    continue
                boot_seed = stream_seed(seed, "bootstrap", self.name, variant, "com_distance")
                distance = centre_distance(com, side)
                low, high = bootstrap_ci(com, lambda c: centre_distance(c, side), n_boot, seed=boot_seed)
                out[(variant, None, None, "com_distance_px")] = (distance, low, high, len(com), skipped)
                out[(variant, None, None, "com_distance_frac")] = (distance / side, low / side, high / side,
                                                                   len(com), skipped)
        return out

    def artefacts(self, out_dir: Path, model: str, values: dict[Key, np.ndarray]) -> list[Path]:
        """``attribution/<model>.npz``: image (K, 3, S, S) uint8, map (K, S, S) float32, label,
        prediction, target, index (K,) int64, method (text)."""
        from ...files import atomic_path

        data = {k[-1].name.removeprefix(EXAMPLE): v for k, v in values.items()
                if is_extra(k) and k[-1].name.startswith(EXAMPLE)}
        if not data or not len(data["image"]):
            return []
        order = np.argsort(data["index"], kind="stable")
        data = {k: v[order] for k, v in data.items()}
        data["method"] = np.array(self.config.method)
        path = attribution_path(out_dir, model)
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, **data)
        return [path]
