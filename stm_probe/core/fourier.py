"""The grid of the Fourier heat map (Yin et al., NeurIPS 2019, "A Fourier perspective on model robustness
in computer vision"), shared by the `bias` probe's method and its figure.

The map is a square grid of frequency offsets (i, j) from the centre of the spectrum, i vertical
and j horizontal, in cycles per image side: every ``step``-th offset up to Nyquist (side // 2) on
both sides, so the grid has 2m + 1 cells a side with the zero frequency in the middle. (i, j) and
(-i, -j) (modulo the side) give the same real basis image, so the method measures one cell per
class (`representatives`) and the map fills every cell from its class (`heat_map`). No torch.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

def grid_offsets(size: int, step: int) -> np.ndarray:
    """Signed offsets of one axis: every ``step``-th frequency up to Nyquist, (2m + 1,) int64."""
    m = (size // 2) // step
    return step * np.arange(-m, m + 1, dtype=np.int64)


def frequency_class(i: int, j: int, size: int) -> tuple[int, int]:
    """Key shared by (i, j) and (-i, -j) modulo ``size``: the same real basis image."""
    return min((i % size, j % size), (-i % size, -j % size))


def representatives(size: int, step: int) -> list[tuple[int, int]]:
    """One grid cell per distinct basis image: i > 0, or i = 0 and j >= 0; within a class the
    first by (i, |j|, positive j first), e.g. (112, 5) stands for (112, -5) at side 224."""
    offsets = grid_offsets(size, step).tolist()
    upper = [(i, j) for i in offsets for j in offsets if i > 0 or (i == 0 and j >= 0)]
    seen: dict[tuple[int, int], tuple[int, int]] = {}
    for i, j in sorted(upper, key=lambda c: (c[0], abs(c[1]), -c[1])):
        seen.setdefault(frequency_class(i, j, size), (i, j))
    return list(seen.values())


def heat_map(cells: Mapping[tuple[int, int], float], size: int, step: int) -> np.ndarray:
    """The full (2m + 1, 2m + 1) float64 map from values at `representatives` (row = i, column = j,
    both from -m * step to m * step); cells without a value are NaN."""
    by_class = {frequency_class(int(i), int(j), size): float(v) for (i, j), v in cells.items()}
    offsets = grid_offsets(size, step).tolist()
    return np.array([[by_class.get(frequency_class(i, j, size), np.nan) for j in offsets] for i in offsets])

