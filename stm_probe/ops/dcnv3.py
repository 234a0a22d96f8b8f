"""Deformable convolution v3 (DCNv3) sampling in plain PyTorch.

The unified InternImage blocks of "Demystify Transformers & Convolutions" sample a zero-padded
value map at ``points`` locations per query and group, each a learned offset from a fixed 3x3
grid around the query, and sum the samples weighted by softmax-normalised attention weights.
The original relies on a compiled CUDA op (the multi-scale deformable attention kernel of
Deformable DETR, single level); here the same function is computed with ``F.grid_sample``
(bilinear, zero padding, ``align_corners=False``), so it runs on any device, in any floating
dtype, and is differentiable with respect to the value map, the locations and the weights.

Coordinate conventions (kept from the original so released weights compute the same function):

* locations are ``(x, y)`` pairs normalised to ``[0, 1]`` over the *padded* map, where pixel
  ``j`` covers ``[j / W, (j + 1) / W)``; ``loc * size - 0.5`` is the pixel-centre coordinate;
* the reference point of query ``(i, j)`` of an ``H x W`` map padded by ``p`` is
  ``((j + p + 0.5) / (W + 2p), (i + p + 0.5) / (H + 2p))``, built in float32;
* the base grid is generated as ``(row, col)`` pairs but read as ``(x, y)``, so point ``k`` of
  a ``k x k`` kernel sits at ``dx = r[k // ks]``, ``dy = r[k % ks]`` (``r = -1, 0, 1`` for 3x3);
* offsets are in pixels and are added to the base grid before normalising by the padded size.

Implementations of the sampling (`dcnv3_core`, ``impl=`` or the ``STM_PROBE_DCNV3`` environment
variable; all compute the same function and its gradients, tested against each other):

* ``"reference"``: ``F.grid_sample`` per group (any device and dtype; the fastest on CPU);
* ``"gather"``: one ``F.embedding_bag`` over all groups, points and bilinear corners, the
  aggregation fused as per-sample weights (plain PyTorch, no (B, L, C, P) intermediate);
* ``"triton"``: the Triton kernels of `stm_probe.ops.dcnv3_triton` (CUDA; on CPU they run in
  Triton's interpreter, which is only for tests);
* ``"auto"`` (default): ``"triton"`` on CUDA when Triton is importable and the kernels pass a
  self-check against the reference on that device (once per process; on failure a warning and
  ``"reference"``), else ``"reference"``.
"""
from __future__ import annotations

import functools
import math
import os
import warnings

import torch
import torch.nn.functional as F

from ..errors import UsageError

__all__ = [
    "DCNV3_IMPL_ENV",
    "DCNV3_IMPLS",
    "dcnv3_base_grid",
    "dcnv3_core",
    "dcnv3_core_gather",
    "dcnv3_core_reference",
    "dcnv3_from_offsets",
    "dcnv3_reference_points",
    "dcnv3_sampling_locations",
    "resolve_dcnv3_impl",
]

DCNV3_IMPL_ENV = "STM_PROBE_DCNV3"
DCNV3_IMPLS = ("auto", "reference", "gather", "triton")


def dcnv3_base_grid(points: int = 9, device: torch.device | str | None = None) -> torch.Tensor:
    """The fixed sampling grid, (points, 2) float32 ``(dx, dy)`` in pixels.

    For 9 points: ``dx = k // 3 - 1`` and ``dy = k % 3 - 1`` (the original's row/column swap).
    """
    ks = math.isqrt(points)
    if ks * ks != points:
        raise ValueError(f"points must be a square number, got {points}")
    # taps -ks//2+1 .. ks//2, as the original's linspace (-1, 0, 1 for a 3x3 kernel)
    taps = torch.linspace(-ks // 2 + 1, ks // 2, ks, dtype=torch.float32, device=device)
    first, second = torch.meshgrid(taps, taps, indexing="ij")
    return torch.stack((first.reshape(-1), second.reshape(-1)), dim=-1)


def dcnv3_reference_points(
    height: int, width: int, padding: int = 1, device: torch.device | str | None = None
) -> torch.Tensor:
    """Normalised pixel centres of an unpadded ``height x width`` map, (H * W, 2) float32 ``(x, y)``.

    Normalised by the padded size: ``x = (j + padding + 0.5) / (width + 2 * padding)``.
    """
    padded_h, padded_w = height + 2 * padding, width + 2 * padding
    ys = torch.linspace(padding + 0.5, padded_h - padding - 0.5, height, dtype=torch.float32, device=device)
    xs = torch.linspace(padding + 0.5, padded_w - padding - 0.5, width, dtype=torch.float32, device=device)
    ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((ref_x.reshape(-1) / padded_w, ref_y.reshape(-1) / padded_h), dim=-1)


def dcnv3_sampling_locations(
    offsets: torch.Tensor,
    reference_points: torch.Tensor,
    base_grid: torch.Tensor,
    padded_size: tuple[int, int],
) -> torch.Tensor:
    """Sampling locations ``ref + (grid + offsets) / (W_pad, H_pad)``, normalised ``(x, y)``.

    Args:
        offsets: (B, L, G, P, 2) pixel offsets ``(x, y)`` from the base grid.
        reference_points: (L, 2) normalised query centres (`dcnv3_reference_points`).
        base_grid: (P, 2) base grid in pixels (`dcnv3_base_grid`).
        padded_size: (H_pad, W_pad) of the value map being sampled.

    Returns:
        (B, L, G, P, 2) locations in the promoted dtype of the inputs.
    """
    padded_h, padded_w = padded_size
    normalizer = torch.tensor([padded_w, padded_h], dtype=torch.float32, device=offsets.device)
    return reference_points[None, :, None, None, :] + (base_grid + offsets) / normalizer


def dcnv3_core_reference(
    value: torch.Tensor, sampling_locations: torch.Tensor, attention_weights: torch.Tensor
) -> torch.Tensor:
    """Weighted bilinear sampling of a channels-last map, grouped over channels (``grid_sample``).

    Args:
        value: (B, H, W, C) map to sample (already zero-padded in DCNv3), C = G * D.
        sampling_locations: (B, L, G, P, 2) normalised ``(x, y)`` in [0, 1] over (W, H);
            samples outside the map read zeros.
        attention_weights: (B, L, G, P) weight of each sample.

    Returns:
        (B, L, C): ``sum_p w[b, l, g, p] * bilinear(value[b, :, :, g*D:(g+1)*D], loc[b, l, g, p])``.
    """
    batch, height, width, channels = value.shape
    _, length, groups, points, _ = sampling_locations.shape
    if channels % groups:
        raise ValueError(f"channels {channels} not divisible by groups {groups}")
    group_dim = channels // groups
    # (B, H, W, G, D) -> (B * G, D, H, W)
    value = value.reshape(batch, height * width, groups, group_dim).permute(0, 2, 3, 1)
    value = value.reshape(batch * groups, group_dim, height, width)
    # [0, 1] -> [-1, 1]: with align_corners=False, grid_sample reads pixel loc * size - 0.5
    grid = 2 * sampling_locations.to(value.dtype) - 1
    grid = grid.transpose(1, 2).reshape(batch * groups, length, points, 2)
    sampled = F.grid_sample(value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # sampled: (B * G, D, L, P)
    weights = attention_weights.to(value.dtype).transpose(1, 2).reshape(batch * groups, 1, length, points)
    out = (sampled * weights).sum(-1)  # (B * G, D, L)
    return out.reshape(batch, channels, length).transpose(1, 2)


def _pixel_coordinates(grid: torch.Tensor, size: int) -> torch.Tensor:
    """grid_sample's unnormalisation (align_corners=False) of a [-1, 1] coordinate, in its
    arithmetic, so that points within rounding of an integer fall in the same bilinear cell
    (the gradient w.r.t. the location takes the slope of that cell).

    On CPU the vectorised kernel computes ``(in + 1) * scale - 0.5`` contracted to
    ``fma(grid + 1, size / 2, -0.5)`` (checked on torch 2.14, AVX2): emulated for float32 by one
    rounding of the exact float64 result (a product of two float32 values is exact in float64).
    CUDA's kernel computes ``((grid + 1) * size - 1) / 2``.
    """
    if grid.device.type == "cpu":
        shifted = grid + 1
        if shifted.dtype == torch.float64:
            return shifted * (size / 2) - 0.5
        return (shifted.double() * (size / 2) - 0.5).to(grid.dtype)
    return ((grid + 1) * size - 1) / 2


def dcnv3_core_gather(
    value: torch.Tensor, sampling_locations: torch.Tensor, attention_weights: torch.Tensor
) -> torch.Tensor:
    """`dcnv3_core_reference` as one ``embedding_bag``: same arguments, shapes and semantics.

    The value map is read as a table of (B * H * W * G) rows of D channels; each output row
    (b, l, g) is a bag of its P x 4 bilinear corners, weighted by ``attention x bilinear``
    (zero, with a clamped index, for corners outside the map).
    """
    batch, height, width, channels = value.shape
    _, length, groups, points, _ = sampling_locations.shape
    if channels % groups:
        raise ValueError(f"channels {channels} not divisible by groups {groups}")
    grid = 2 * sampling_locations.to(value.dtype) - 1
    x = _pixel_coordinates(grid[..., 0], width)  # (B, L, G, P)
    y = _pixel_coordinates(grid[..., 1], height)
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    x0 = x0.clamp(-2, width + 1).long()  # far-away points stay outside, indices stay small
    y0 = y0.clamp(-2, height + 1).long()
    # corners (x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1) on a trailing axis of 4
    cx = torch.stack((x0, x0 + 1, x0, x0 + 1), dim=-1)
    cy = torch.stack((y0, y0, y0 + 1, y0 + 1), dim=-1)
    wx = torch.stack((1 - fx, fx, 1 - fx, fx), dim=-1)
    wy = torch.stack((1 - fy, 1 - fy, fy, fy), dim=-1)
    inside = (cx >= 0) & (cx < width) & (cy >= 0) & (cy < height)
    weights = wx * wy * attention_weights.to(value.dtype)[..., None] * inside
    image = torch.arange(batch, device=value.device).view(batch, 1, 1, 1, 1)
    group = torch.arange(groups, device=value.device).view(1, 1, groups, 1, 1)
    rows = ((image * height + cy.clamp(0, height - 1)) * width + cx.clamp(0, width - 1)) * groups + group
    out = F.embedding_bag(
        rows.reshape(batch * length * groups, points * 4),
        value.reshape(batch * height * width * groups, channels // groups),
        mode="sum",
        per_sample_weights=weights.reshape(batch * length * groups, points * 4),
    )
    return out.reshape(batch, length, channels)


@functools.cache
def _triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _triton_passes_self_check(device: torch.device) -> bool:
    """Whether the Triton kernels compile on ``device`` and match the reference (values and
    gradients, float32) on a small problem with points outside the map and D = 12 channels."""
    gen = torch.Generator().manual_seed(0)
    value = torch.randn(2, 6, 7, 24, generator=gen)
    locations = torch.rand(2, 20, 2, 9, 2, generator=gen) * 1.6 - 0.3
    weights = torch.randn(2, 20, 2, 9, generator=gen)
    probe = torch.randn(2, 20, 24, generator=gen)
    try:
        from .dcnv3_triton import dcnv3_core_triton

        with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device.type, enabled=False):
            inputs = [t.to(device).requires_grad_() for t in (value, locations, weights)]
            results = []
            for core in (dcnv3_core_reference, dcnv3_core_triton):
                out = core(*inputs)
                results.append((out, *torch.autograd.grad((out * probe.to(device)).sum(), inputs)))
        ok = all(torch.allclose(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())
                 for a, b in zip(*results))
        problem = "its results differ from the grid_sample reference"
    except Exception as error:  # any failure to compile or run: fall back, say why
        ok, problem = False, f"it failed ({type(error).__name__}: {error})"
    if not ok:
        warnings.warn(f"DCNv3 Triton kernels not used on {device}: {problem}; using the grid_sample"
                      f" reference (set ${DCNV3_IMPL_ENV}=reference to skip this check)", stacklevel=3)
    return ok


def resolve_dcnv3_impl(impl: str | None, device: torch.device) -> str:
    """The implementation ``impl`` (None: ``$STM_PROBE_DCNV3``, else "auto") stands for on ``device``."""
    name = impl if impl is not None else os.environ.get(DCNV3_IMPL_ENV, "auto")
    if name not in DCNV3_IMPLS:
        raise UsageError(f"unknown DCNv3 implementation {name!r}; use one of {', '.join(DCNV3_IMPLS)}"
                         f" (argument impl= or ${DCNV3_IMPL_ENV})")
    if name == "auto":
        use_triton = device.type == "cuda" and _triton_importable() and _triton_passes_self_check(device)
        return "triton" if use_triton else "reference"
    if name == "triton" and not _triton_importable():
        raise UsageError(f"DCNv3 implementation 'triton' needs the triton package; install it or set"
                         f" ${DCNV3_IMPL_ENV}=reference")
    return name


def dcnv3_core(
    value: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    impl: str | None = None,
) -> torch.Tensor:
    """Weighted bilinear sampling of a channels-last map, grouped over channels.

    Args:
        value: (B, H, W, C) map to sample (already zero-padded in DCNv3), C = G * D.
        sampling_locations: (B, L, G, P, 2) normalised ``(x, y)`` in [0, 1] over (W, H);
            samples outside the map read zeros.
        attention_weights: (B, L, G, P) weight of each sample.
        impl: "reference", "gather", "triton" or "auto" (None: ``$STM_PROBE_DCNV3``, else "auto").

    Returns:
        (B, L, C): ``sum_p w[b, l, g, p] * bilinear(value[b, :, :, g*D:(g+1)*D], loc[b, l, g, p])``.
    """
    name = resolve_dcnv3_impl(impl, value.device)
    if name == "gather":
        return dcnv3_core_gather(value, sampling_locations, attention_weights)
    if name == "triton":
        from .dcnv3_triton import dcnv3_core_triton

        return dcnv3_core_triton(value, sampling_locations, attention_weights)
    return dcnv3_core_reference(value, sampling_locations, attention_weights)


def dcnv3_from_offsets(
    value: torch.Tensor,
    offsets: torch.Tensor,
    attention_weights: torch.Tensor,
    padding: int = 1,
    impl: str | None = None,
) -> torch.Tensor:
    """DCNv3 sampling of an unpadded map with pixel offsets, as the unified InternImage block does.

    Args:
        value: (B, H, W, C) unpadded value map; zero-padded by ``padding`` here.
        offsets: (B, H * W, G, P, 2) pixel offsets ``(x, y)`` from the base grid, queries row-major.
        attention_weights: (B, H * W, G, P) (already normalised over P in DCNv3).
        impl: sampling implementation, as in `dcnv3_core`.

    Returns:
        (B, H * W, C).
    """
    _, height, width, _ = value.shape
    points = offsets.shape[-2]
    value = F.pad(value, (0, 0, padding, padding, padding, padding))
    ref = dcnv3_reference_points(height, width, padding, device=value.device)
    grid = dcnv3_base_grid(points, device=value.device)
    locations = dcnv3_sampling_locations(offsets, ref, grid, (height + 2 * padding, width + 2 * padding))
    return dcnv3_core(value, locations, attention_weights, impl=impl)
