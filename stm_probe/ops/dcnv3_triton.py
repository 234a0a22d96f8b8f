"""DCNv3 sampling (`dcnv3_core`) as two Triton kernels, forward and backward.

One program handles ``BLOCK_R`` rows, a row being one (batch, query, group) triple, and all
``D`` channels of its group: for each of the ``P`` points it computes the bilinear corners
once, gathers the four channels-last D-vectors of the value map and adds them, weighted by
``attention weight x bilinear weight``, into the row's output. Nothing of size (B, L, C, P) is
ever materialised. The backward recomputes the corners, accumulates the value gradient with
atomic adds (as the original CUDA op does) and reduces the location and weight gradients over
the channels inside the program.

Semantics are those of the ``grid_sample`` reference (`stm_probe.ops.dcnv3.dcnv3_core`):
pixel coordinate ``x = ((2 * loc_x - 1 + 1) * W - 1) / 2`` (``align_corners=False``), corners
outside the map read zero and receive no gradient, and ``d x / d loc_x = W``. Arithmetic is
float32 (float64 for float64 inputs); other floating dtypes are computed in float32 and cast
back. Double backward is not supported.

On CUDA tensors the kernels are compiled by Triton. With ``TRITON_INTERPRET=1`` in the
environment before triton is first imported, they run instead in Triton's interpreter (numpy,
slow) on CPU tensors, which is how the CPU test-suite checks them. Importing this module
requires ``triton``; `stm_probe.ops.dcnv3` imports it only when asked for it.
"""
import contextlib

import torch
import triton
import triton.language as tl

from ..errors import UsageError

__all__ = ["dcnv3_core_triton"]


@triton.jit
def _corners(loc_ptr, attn_ptr, r, p, rmask, d, dmask, base, height, width, channels, POINTS: tl.constexpr):
    """Point ``p`` of rows ``r``: its weight ``a``, bilinear fractions ``fx, fy``, the value offsets of
    its four corners (BLOCK_R, BLOCK_D) and their in-map masks (corners 00, 01 = right, 10 = below, 11)."""
    lx = tl.load(loc_ptr + (r * POINTS + p) * 2, mask=rmask, other=0.0)
    ly = tl.load(loc_ptr + (r * POINTS + p) * 2 + 1, mask=rmask, other=0.0)
    a = tl.load(attn_ptr + r * POINTS + p, mask=rmask, other=0.0)
    # grid_sample's unnormalisation (align_corners=False) of grid = 2 * loc - 1
    x = ((2 * lx - 1 + 1) * width - 1) * 0.5
    y = ((2 * ly - 1 + 1) * height - 1) * 0.5
    # clamp far-away points before the integer conversion; all their corners stay outside
    x0f = tl.floor(tl.minimum(tl.maximum(x, -2.0), width + 1.0))
    y0f = tl.floor(tl.minimum(tl.maximum(y, -2.0), height + 1.0))
    fx = x - x0f
    fy = y - y0f
    x0 = x0f.to(tl.int64)
    y0 = y0f.to(tl.int64)
    in_x0 = (x0 >= 0) & (x0 < width)
    in_x1 = (x0 + 1 >= 0) & (x0 + 1 < width)
    in_y0 = (y0 >= 0) & (y0 < height)
    in_y1 = (y0 + 1 >= 0) & (y0 + 1 < height)
    pix = base + (y0 * width + x0) * channels
    p00 = pix[:, None] + d[None, :]
    p01 = (pix + channels)[:, None] + d[None, :]
    p10 = (pix + width * channels)[:, None] + d[None, :]
    p11 = (pix + (width + 1) * channels)[:, None] + d[None, :]
    m00 = (rmask & in_y0 & in_x0)[:, None] & dmask[None, :]
    m01 = (rmask & in_y0 & in_x1)[:, None] & dmask[None, :]
    m10 = (rmask & in_y1 & in_x0)[:, None] & dmask[None, :]
    m11 = (rmask & in_y1 & in_x1)[:, None] & dmask[None, :]
    return a, fx, fy, p00, p01, p10, p11, m00, m01, m10, m11


@triton.jit
def _forward_kernel(
    value_ptr, loc_ptr, attn_ptr, out_ptr,
    rows, length, height, width, channels, groups,
    DIM: tl.constexpr, POINTS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """out[r, :] = sum_p attn[r, p] * bilinear(value[b, :, :, g*D:(g+1)*D], loc[r, p])."""
    r = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
    d = tl.arange(0, BLOCK_D)
    rmask = r < rows
    dmask = d < DIM
    # row r = (b * length + l) * groups + g; value offset of channel g*D of pixel (0, 0) of image b
    base = (r // (groups * length)) * (height * width * channels) + (r % groups) * DIM
    acc = tl.zeros((BLOCK_R, BLOCK_D), dtype=out_ptr.dtype.element_ty)
    for p in tl.static_range(POINTS):
        a, fx, fy, p00, p01, p10, p11, m00, m01, m10, m11 = _corners(
            loc_ptr, attn_ptr, r, p, rmask, d, dmask, base, height, width, channels, POINTS)
        v00 = tl.load(value_ptr + p00, mask=m00, other=0.0)
        v01 = tl.load(value_ptr + p01, mask=m01, other=0.0)
        v10 = tl.load(value_ptr + p10, mask=m10, other=0.0)
        v11 = tl.load(value_ptr + p11, mask=m11, other=0.0)
        w00 = a * (1 - fx) * (1 - fy)
        w01 = a * fx * (1 - fy)
        w10 = a * (1 - fx) * fy
        w11 = a * fx * fy
        acc += w00[:, None] * v00 + w01[:, None] * v01 + w10[:, None] * v10 + w11[:, None] * v11
    tl.store(out_ptr + r[:, None] * DIM + d[None, :], acc, mask=rmask[:, None] & dmask[None, :])


@triton.jit
def _backward_kernel(
    value_ptr, loc_ptr, attn_ptr, grad_out_ptr, grad_value_ptr, grad_loc_ptr, grad_attn_ptr,
    rows, length, height, width, channels, groups,
    DIM: tl.constexpr, POINTS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Gradients of `_forward_kernel` w.r.t. value (atomic adds), locations and weights."""
    r = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
    d = tl.arange(0, BLOCK_D)
    rmask = r < rows
    dmask = d < DIM
    base = (r // (groups * length)) * (height * width * channels) + (r % groups) * DIM
    go = tl.load(grad_out_ptr + r[:, None] * DIM + d[None, :], mask=rmask[:, None] & dmask[None, :], other=0.0)
    for p in tl.static_range(POINTS):
        a, fx, fy, p00, p01, p10, p11, m00, m01, m10, m11 = _corners(
            loc_ptr, attn_ptr, r, p, rmask, d, dmask, base, height, width, channels, POINTS)
        v00 = tl.load(value_ptr + p00, mask=m00, other=0.0)
        v01 = tl.load(value_ptr + p01, mask=m01, other=0.0)
        v10 = tl.load(value_ptr + p10, mask=m10, other=0.0)
        v11 = tl.load(value_ptr + p11, mask=m11, other=0.0)
        gx = 1 - fx
        gy = 1 - fy
        sample = gy[:, None] * (gx[:, None] * v00 + fx[:, None] * v01) + fy[:, None] * (gx[:, None] * v10 + fx[:, None] * v11)
        d_dx = gy[:, None] * (v01 - v00) + fy[:, None] * (v11 - v10)
        d_dy = gx[:, None] * (v10 - v00) + fx[:, None] * (v11 - v01)
        tl.store(grad_attn_ptr + r * POINTS + p, tl.sum(go * sample, axis=1), mask=rmask)
        # d x / d loc_x = width, d y / d loc_y = height
        tl.store(grad_loc_ptr + (r * POINTS + p) * 2, a * width * tl.sum(go * d_dx, axis=1), mask=rmask)
        tl.store(grad_loc_ptr + (r * POINTS + p) * 2 + 1, a * height * tl.sum(go * d_dy, axis=1), mask=rmask)
        tl.atomic_add(grad_value_ptr + p00, (a * gx * gy)[:, None] * go, mask=m00)
        tl.atomic_add(grad_value_ptr + p01, (a * fx * gy)[:, None] * go, mask=m01)
        tl.atomic_add(grad_value_ptr + p10, (a * gx * fy)[:, None] * go, mask=m10)
        tl.atomic_add(grad_value_ptr + p11, (a * fx * fy)[:, None] * go, mask=m11)


def _interpreting() -> bool:
    """Whether the kernels were built for Triton's interpreter (``TRITON_INTERPRET=1``)."""
    return not isinstance(_forward_kernel, triton.runtime.JITFunction)


def _check_device(value: torch.Tensor) -> None:
    if value.is_cuda or (value.device.type == "cpu" and _interpreting()):
        return
    raise UsageError(f"the DCNv3 'triton' implementation runs on CUDA tensors, got {value.device}; set"
                     f" STM_PROBE_DCNV3=reference (on CPU it runs only under TRITON_INTERPRET=1, for tests)")


# (BLOCK_R, num_warps) per kernel on the GPU; chosen by `benchmarks/dcnv3_tune.py` (docs/scale.md).
GPU_LAUNCH = {"forward": (64, 4), "backward": (32, 4)}


def _launch_config(group_dim: int, rows: int, kernel: str) -> tuple[int, int, int]:
    """(BLOCK_R rows per program, BLOCK_D, num_warps) of ``kernel`` ("forward" or "backward"):
    `GPU_LAUNCH` on the GPU (BLOCK_R capped so that a tile holds at most 4096 elements); in the
    interpreter, whose cost is per operation, as few programs as possible."""
    block_d = triton.next_power_of_2(group_dim)
    if _interpreting():
        return triton.next_power_of_2(max(1, min(rows, 8192))), block_d, 1
    block_r, warps = GPU_LAUNCH[kernel]
    return max(1, min(block_r, 4096 // block_d)), block_d, warps


def _on_device(tensor: torch.Tensor) -> contextlib.AbstractContextManager:
    """Triton launches on the current CUDA device: make it the tensor's (e.g. cuda:1)."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


class _DCNv3Sampling(torch.autograd.Function):
    """Autograd wrapper of the kernels; inputs already contiguous in the compute dtype."""

    @staticmethod
    def forward(ctx, value: torch.Tensor, locations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = value.shape
        _, length, groups, points, _ = locations.shape
        dim = channels // groups
        rows = batch * length * groups
        out = value.new_empty(batch, length, channels)
        block_r, block_d, warps = _launch_config(dim, rows, "forward")
        if rows:
            with _on_device(value):
                _forward_kernel[(triton.cdiv(rows, block_r),)](
                    value, locations, weights, out, rows, length, height, width, channels, groups,
                    DIM=dim, POINTS=points, BLOCK_R=block_r, BLOCK_D=block_d, num_warps=warps,
                )
        ctx.save_for_backward(value, locations, weights)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        value, locations, weights = ctx.saved_tensors
        batch, height, width, channels = value.shape
        _, length, groups, points, _ = locations.shape
        dim = channels // groups
        rows = batch * length * groups
        grad_out = grad_out.to(value.dtype).contiguous()
        grad_value = torch.zeros_like(value)
        grad_locations = torch.empty_like(locations)
        grad_weights = torch.empty_like(weights)
        block_r, block_d, warps = _launch_config(dim, rows, "backward")
        if rows:
            with _on_device(value):
                _backward_kernel[(triton.cdiv(rows, block_r),)](
                    value, locations, weights, grad_out, grad_value, grad_locations, grad_weights,
                    rows, length, height, width, channels, groups,
                    DIM=dim, POINTS=points, BLOCK_R=block_r, BLOCK_D=block_d, num_warps=warps,
                )
        return grad_value, grad_locations, grad_weights


def dcnv3_core_triton(
    value: torch.Tensor, sampling_locations: torch.Tensor, attention_weights: torch.Tensor
) -> torch.Tensor:
    """`dcnv3_core` by the Triton kernels: same arguments, shapes, semantics and output dtype.

    Args:
        value: (B, H, W, C) map (already zero-padded in DCNv3), C = G * D.
        sampling_locations: (B, L, G, P, 2) normalised ``(x, y)``.
        attention_weights: (B, L, G, P).

    Returns:
        (B, L, C) in ``value.dtype``.
    """
    _check_device(value)
    batch, _, _, channels = value.shape
    _, length, groups, points, _ = sampling_locations.shape
    if channels % groups:
        raise ValueError(f"channels {channels} not divisible by groups {groups}")
    if attention_weights.shape != (batch, length, groups, points):
        raise ValueError(f"attention weights {tuple(attention_weights.shape)} do not match locations"
                         f" {tuple(sampling_locations.shape)}")
    compute = torch.float64 if value.dtype == torch.float64 else torch.float32
    out = _DCNv3Sampling.apply(
        value.to(compute).contiguous(),
        sampling_locations.to(compute).contiguous(),
        attention_weights.to(compute).contiguous(),
    )
    return out.to(value.dtype)
