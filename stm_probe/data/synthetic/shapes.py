"""Shapes: signed distance fields in unit coordinates (negative inside, bounding radius <= 1), one per class."""
from __future__ import annotations

from typing import Callable

import numpy as np

#: Shape of each class, in class order (the first ``K`` are used).
SHAPES: tuple[str, ...] = ("disc", "square", "triangle", "star", "cross", "ring", "crescent", "hexagon",
                           "heart", "arrow", "semicircle", "ellipse", "frame", "lshape", "tshape", "drop")

Field = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _box(u: np.ndarray, v: np.ndarray, cx: float, cy: float, hx: float, hy: float) -> np.ndarray:
    """Rectangle centred at (cx, cy) with half sides (hx, hy); exact distance outside too."""
    qx, qy = np.abs(u - cx) - hx, np.abs(v - cy) - hy
    return np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0)) + np.minimum(np.maximum(qx, qy), 0.0)


def _circle(u: np.ndarray, v: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    return np.hypot(u - cx, v - cy) - r


def _segment_distance(u: np.ndarray, v: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from (u, v) to the segment a-b."""
    d = b - a
    h = np.clip(((u - a[0]) * d[0] + (v - a[1]) * d[1]) / (d @ d), 0.0, 1.0)
    return np.hypot(u - a[0] - h * d[0], v - a[1] - h * d[1])


def _convex(vertices: list[tuple[float, float]]) -> Field:
    """Convex polygon: inside, the largest signed distance to its edge lines; outside, the
    distance to the nearest edge (exact on both sides, so corners are not drawn as spikes)."""
    pts = np.asarray(vertices, dtype=np.float64)
    centre = pts.mean(axis=0)
    edges = []
    for a, b in zip(pts, np.roll(pts, -1, axis=0)):
        normal = np.array([b[1] - a[1], a[0] - b[0]]) / np.hypot(*(b - a))
        if normal @ (centre - a) > 0:
            normal = -normal  # point outwards
        edges.append((a, b, normal))

    def field(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        lines = np.max([n[0] * (u - a[0]) + n[1] * (v - a[1]) for a, _, n in edges], axis=0)
        outside = np.min([_segment_distance(u, v, a, b) for a, b, _ in edges], axis=0)
        return np.where(lines > 0, outside, lines)

    return field


def _regular(n: int, radius: float) -> Field:
    """Regular ``n``-gon with circumradius ``radius``, a vertex on the +v axis."""
    angles = [np.pi / 2 + 2 * np.pi * k / n for k in range(n)]
    return _convex([(radius * np.cos(a), radius * np.sin(a)) for a in angles])


def _star(points: int = 5, outer: float = 1.0, inner: float = 0.45) -> Field:
    """Star polygon: the angle is folded into half a sector, then the signed distance to one edge
    (from a point, radius ``outer``, to the next inner corner, radius ``inner``)."""
    sector = 2 * np.pi / points
    a = np.array([outer, 0.0])
    b = inner * np.array([np.cos(sector / 2), np.sin(sector / 2)])
    normal = np.array([b[1] - a[1], a[0] - b[0]])
    if normal @ a < 0:
        normal = -normal  # away from the centre

    def field(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        r = np.hypot(u, v)
        phi = np.mod(np.arctan2(u, v), sector)  # a point on the +v axis
        phi = np.minimum(phi, sector - phi)
        x, y = r * np.cos(phi), r * np.sin(phi)
        side = np.sign(normal[0] * (x - a[0]) + normal[1] * (y - a[1]))
        return side * _segment_distance(x, y, a, b)

    return field


def _crescent(outer: float = 0.9, bite_x: float = 0.4, bite: float = 0.75) -> Field:
    """A disc of radius ``outer`` less a disc of radius ``bite`` at (bite_x, 0); outside, the distance
    to the outer arc where its nearest point is kept, else to the nearer tip."""
    tip_u = (outer ** 2 - bite ** 2 + bite_x ** 2) / (2 * bite_x)
    tip_v = np.sqrt(outer ** 2 - tip_u ** 2)

    def field(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        r = np.hypot(u, v)
        inner = np.maximum(r - outer, bite - np.hypot(u - bite_x, v))
        scale = outer / np.maximum(r, 1e-12)  # nearest point of the outer circle
        arc_kept = np.hypot(u * scale - bite_x, v * scale) >= bite
        to_tip = np.hypot(u - tip_u, np.abs(v) - tip_v)
        outside = np.where((r > outer) & arc_kept, r - outer, to_tip)
        return np.where(inner > 0, outside, inner)

    return field


_TRIANGLE = _regular(3, 1.0)
_HEXAGON = _regular(6, 0.95)
_STAR = _star()
_HEART_TIP = _convex([(-0.78, 0.05), (0.78, 0.05), (0.0, -0.92)])
_ARROW_HEAD = _convex([(0.95, 0.0), (0.25, 0.55), (0.25, -0.55)])
_DROP_TIP = _convex([(0.0, -0.95), (0.52, -0.05), (-0.52, -0.05)])

_SHAPE_FIELDS: dict[str, Field] = {
    "disc": lambda u, v: np.hypot(u, v) - 0.85,
    "square": lambda u, v: _box(u, v, 0.0, 0.0, 0.68, 0.68),
    "triangle": _TRIANGLE,
    "star": _STAR,
    "cross": lambda u, v: np.minimum(_box(u, v, 0, 0, 0.94, 0.3), _box(u, v, 0, 0, 0.3, 0.94)),
    "ring": lambda u, v: np.abs(np.hypot(u, v) - 0.65) - 0.25,
    "crescent": _crescent(),
    "hexagon": _HEXAGON,
    "heart": lambda u, v: np.minimum.reduce([_circle(u, v, -0.36, 0.28, 0.46), _circle(u, v, 0.36, 0.28, 0.46),
                                             _HEART_TIP(u, v)]),
    "arrow": lambda u, v: np.minimum(_box(u, v, -0.35, 0.0, 0.6, 0.16), _ARROW_HEAD(u, v)),
    "semicircle": lambda u, v: np.maximum(_circle(u, v, 0.0, -0.35, 0.9), -(v + 0.35)),
    "ellipse": lambda u, v: (np.hypot(u / 0.95, v / 0.45) - 1.0) * 0.45,
    "frame": lambda u, v: np.abs(_box(u, v, 0.0, 0.0, 0.55, 0.55)) - 0.15,
    "lshape": lambda u, v: np.minimum(_box(u, v, -0.4, 0.05, 0.22, 0.7), _box(u, v, 0.05, 0.53, 0.67, 0.22)),
    "tshape": lambda u, v: np.minimum(_box(u, v, 0.0, -0.5, 0.7, 0.2), _box(u, v, 0.0, 0.2, 0.2, 0.5)),
    "drop": lambda u, v: np.minimum(_circle(u, v, 0.0, 0.25, 0.6), _DROP_TIP(u, v)),
}
assert tuple(_SHAPE_FIELDS) == SHAPES


def shape_field(shape: int) -> Field:
    """Signed distance field of class ``shape`` in unit coordinates (negative inside)."""
    return _SHAPE_FIELDS[SHAPES[shape]]
