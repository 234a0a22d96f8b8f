"""ImageNet-C's noise corruptions (gaussian, shot, impulse and speckle noise), as make_imagenet_c.py
defines them.

Each ``_name(x, severity, rng)`` takes an (H, W, 3) uint8 image and a numpy ``RandomState`` and returns
the corrupted image as floats on the 0-255 scale (clipped and truncated by `corrupt`). The parameters
per severity are the benchmark's (pixels of 224 px images), and the random numbers are drawn in the
order the authors' code draws them, so a RandomState seeded like their global RNG makes the same draws.
"""
from __future__ import annotations

import numpy as np


def _gaussian_noise(x: np.ndarray, s: int, rng: np.random.RandomState) -> np.ndarray:
    scale = (0.08, 0.12, 0.18, 0.26, 0.38)[s - 1]
    x = x / 255.0
    return np.clip(x + rng.normal(size=x.shape, scale=scale), 0, 1) * 255


def _shot_noise(x: np.ndarray, s: int, rng: np.random.RandomState) -> np.ndarray:
    photons = (60, 25, 12, 5, 3)[s - 1]
    return np.clip(rng.poisson(x / 255.0 * photons) / photons, 0, 1) * 255


def _impulse_noise(x: np.ndarray, s: int, rng: np.random.RandomState) -> np.ndarray:
    """Salt and pepper on each value independently (skimage's 's&p' noise of the authors' time:
    a share ``amount`` of the values flipped, half of them to 1, half to 0)."""
    amount = (0.03, 0.06, 0.09, 0.17, 0.27)[s - 1]
    x = x / 255.0
    flipped = rng.random_sample(x.shape) < amount
    salted = rng.random_sample(x.shape) < 0.5
    return np.where(flipped, np.where(salted, 1.0, 0.0), x) * 255


def _speckle_noise(x: np.ndarray, s: int, rng: np.random.RandomState) -> np.ndarray:
    scale = (0.15, 0.2, 0.35, 0.45, 0.6)[s - 1]
    x = x / 255.0
    return np.clip(x + x * rng.normal(size=x.shape, scale=scale), 0, 1) * 255
