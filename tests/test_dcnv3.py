"""DCNv3 in plain PyTorch against a naive loop implementation, analytic cases, and the block."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from stm_probe.models.blocks.dcn_v3 import DCNv3, DCNv3Block
from stm_probe.ops import dcnv3_base_grid, dcnv3_core, dcnv3_from_offsets, dcnv3_reference_points

B, H, W, G, D, P = 2, 5, 6, 2, 3, 9


# --- naive reference: explicit loops, hand-written bilinear interpolation ----------------------

def _bilinear(vmap: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sample vmap (Hv, Wv, D) at pixel-centre coordinates (x, y); zeros outside the map."""
    height, width = vmap.shape[:2]
    x0, y0 = math.floor(x.item()), math.floor(y.item())
    fx, fy = x - x0, y - y0
    out = vmap.new_zeros(vmap.shape[-1])
    for yy, wy in ((y0, 1 - fy), (y0 + 1, fy)):
        for xx, wx in ((x0, 1 - fx), (x0 + 1, fx)):
            if 0 <= yy < height and 0 <= xx < width:
                out = out + wy * wx * vmap[yy, xx]
    return out


def naive_core(value: torch.Tensor, locations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """value (B, Hv, Wv, G*D), locations (B, L, G, P, 2) normalised (x, y), weights (B, L, G, P)."""
    batch, height, width, channels = value.shape
    _, length, groups, points, _ = locations.shape
    dim = channels // groups
    rows = []
    for b in range(batch):
        per_query = []
        for q in range(length):
            per_group = []
            for g in range(groups):
                vmap = value[b, :, :, g * dim:(g + 1) * dim]
                acc = value.new_zeros(dim)
                for p in range(points):
                    x = locations[b, q, g, p, 0] * width - 0.5
                    y = locations[b, q, g, p, 1] * height - 0.5
                    acc = acc + weights[b, q, g, p] * _bilinear(vmap, x, y)
                per_group.append(acc)
            per_query.append(torch.cat(per_group))
        rows.append(torch.stack(per_query))
    return torch.stack(rows)


def naive_from_offsets(value: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """DCNv3 in pixel units: query (i, j), point k samples the 1-padded map at
    (x, y) = (j + 1 + k // 3 - 1 + off_x, i + 1 + k % 3 - 1 + off_y)  (docs/protocols.md §1)."""
    batch, height, width, channels = value.shape
    groups = offsets.shape[2]
    dim = channels // groups
    padded = value.new_zeros(batch, height + 2, width + 2, channels)
    padded[:, 1:height + 1, 1:width + 1] = value
    rows = []
    for b in range(batch):
        per_query = []
        for i in range(height):
            for j in range(width):
                q = i * width + j
                per_group = []
                for g in range(groups):
                    vmap = padded[b, :, :, g * dim:(g + 1) * dim]
                    acc = value.new_zeros(dim)
                    for k in range(9):
                        x = j + 1 + (k // 3 - 1) + offsets[b, q, g, k, 0]
                        y = i + 1 + (k % 3 - 1) + offsets[b, q, g, k, 1]
                        acc = acc + weights[b, q, g, k] * _bilinear(vmap, x, y)
                    per_group.append(acc)
                per_query.append(torch.cat(per_group))
        rows.append(torch.stack(per_query))
    return torch.stack(rows)


def _grads(fn, inputs: tuple[torch.Tensor, ...], probe: torch.Tensor) -> tuple[torch.Tensor, ...]:
    out = fn(*inputs)
    return (out,) + torch.autograd.grad((out * probe).sum(), inputs)


def _inputs(offset_scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    value = torch.randn(B, H, W, G * D, dtype=torch.float64, requires_grad=True)
    offsets = (offset_scale * torch.randn(B, H * W, G, P, 2, dtype=torch.float64)).requires_grad_()
    weights = torch.randn(B, H * W, G, P, dtype=torch.float64).softmax(-1).requires_grad_()
    return value, offsets, weights


# --- tests --------------------------------------------------------------------------------------

def test_core_matches_naive_values_and_grads() -> None:
    """Random locations, some outside the map (zeros there); padded-map sampling as in DCNv3."""
    hv, wv = H + 2, W + 2
    value = torch.randn(B, hv, wv, G * D, dtype=torch.float64, requires_grad=True)
    locations = (torch.rand(B, H * W, G, P, 2, dtype=torch.float64) * 1.4 - 0.2).requires_grad_()
    weights = torch.randn(B, H * W, G, P, dtype=torch.float64).requires_grad_()
    probe = torch.randn(B, H * W, G * D, dtype=torch.float64)

    ours = _grads(dcnv3_core, (value, locations, weights), probe)
    ref = _grads(naive_core, (value, locations, weights), probe)
    assert (locations < 0).any() and (locations > 1).any()
    torch.testing.assert_close(ours[0], ref[0], atol=1e-5, rtol=0)
    for name, a, b in zip(("value", "locations", "weights"), ours[1:], ref[1:]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0, msg=f"grad wrt {name}")


def test_offsets_path_matches_naive_values_and_grads() -> None:
    """Full DCNv3 sampling (padding, float32 reference points, swapped base grid) vs pixel loops."""
    value, offsets, weights = _inputs(offset_scale=1.5)
    probe = torch.randn(B, H * W, G * D, dtype=torch.float64)

    ours = _grads(dcnv3_from_offsets, (value, offsets, weights), probe)
    ref = _grads(naive_from_offsets, (value, offsets, weights), probe)
    torch.testing.assert_close(ours[0], ref[0], atol=1e-5, rtol=0)
    for name, a, b in zip(("value", "offsets", "weights"), ours[1:], ref[1:]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0, msg=f"grad wrt {name}")


def test_zero_offsets_uniform_weights_is_padded_3x3_mean() -> None:
    for dtype, tol in ((torch.float64, 1e-6), (torch.float32, 1e-5)):
        value = torch.randn(B, H, W, G * D, dtype=dtype)
        offsets = torch.zeros(B, H * W, G, P, 2, dtype=dtype)
        weights = torch.full((B, H * W, G, P), 1 / 9, dtype=dtype)
        out = dcnv3_from_offsets(value, offsets, weights)
        mean = F.avg_pool2d(value.permute(0, 3, 1, 2), 3, stride=1, padding=1, count_include_pad=True)
        torch.testing.assert_close(out, mean.flatten(2).transpose(1, 2), atol=tol, rtol=0)


@pytest.mark.parametrize("k", range(9))
def test_single_point_reads_swapped_grid(k: int) -> None:
    """Point k alone reads the neighbour at dx = k // 3 - 1, dy = k % 3 - 1 (zero outside)."""
    value = torch.randn(1, H, W, 4, dtype=torch.float64)
    weights = F.one_hot(torch.full((1, H * W, 2), k), P).to(torch.float64)
    out = dcnv3_from_offsets(value, torch.zeros(1, H * W, 2, P, 2, dtype=torch.float64), weights)
    padded = F.pad(value, (0, 0, 1, 1, 1, 1))
    dx, dy = k // 3 - 1, k % 3 - 1
    expected = padded[:, 1 + dy:1 + dy + H, 1 + dx:1 + dx + W].reshape(1, H * W, 4)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_grid_helpers() -> None:
    grid = dcnv3_base_grid(9)
    assert grid.dtype == torch.float32
    assert grid.tolist() == [[k // 3 - 1, k % 3 - 1] for k in range(9)]
    ref = dcnv3_reference_points(3, 4)  # padded 5 x 6
    assert ref.dtype == torch.float32 and ref.shape == (12, 2)
    expected = torch.tensor([[(j + 1.5) / 6, (i + 1.5) / 5] for i in range(3) for j in range(4)])
    torch.testing.assert_close(ref, expected, atol=0, rtol=0)


def test_block_zero_predictors_average_value_projection() -> None:
    """With the original's block-level init (zero offset/weight predictors) DCNv3 is
    output_proj(3x3 zero-padded mean of value_proj(x)), on a non-square map."""
    dim, height, width = 8, 4, 7
    mixer = DCNv3(dim, num_heads=2).double()
    x = torch.randn(2, height, width, dim, dtype=torch.float64)
    v = mixer.value_proj(x).permute(0, 3, 1, 2)
    mean = F.avg_pool2d(v, 3, stride=1, padding=1, count_include_pad=True).permute(0, 2, 3, 1)
    torch.testing.assert_close(mixer(x), mixer.output_proj(mean), atol=1e-6, rtol=0)


def test_block_runs_any_size_and_caches_grids() -> None:
    block = DCNv3Block(16, layer_scale_init_value=1.0, num_heads=2)
    for p in (block.attn.sampling_offsets.weight, block.attn.attention_weights.weight):
        torch.nn.init.normal_(p, std=0.5)
    for height, width in ((8, 8), (4, 10), (8, 8)):
        x = torch.randn(2, 16, height, width, requires_grad=True)
        y = block(x)
        assert y.shape == x.shape and torch.isfinite(y).all()
        y.square().sum().backward()
        assert torch.isfinite(x.grad).all() and block.attn.sampling_offsets.weight.grad.abs().sum() > 0
    assert set(k[:2] for k in block.attn._grid_cache) == {(8, 8), (4, 10)}
    assert not any("grid" in k for k in block.state_dict())
    with torch.autocast("cpu", dtype=torch.bfloat16):  # core runs in float32, like the original op
        assert torch.isfinite(block(torch.randn(1, 16, 4, 4))).all()


def test_backbone_init_overrides_zero_init() -> None:
    """As in the original, the backbone's trunc_normal(0.02) init overwrites the block's zero init."""
    from stm_probe.models.unified import UnifiedNet

    net = UnifiedNet(DCNv3Block, dict(num_heads=(2, 4, 8, 16), points=9, kernel_size=3),
                     depths=(1, 1, 1, 1), dims=(32, 64, 128, 256), num_classes=10)
    attn = net.stages[0][0].attn
    for layer in (attn.sampling_offsets, attn.attention_weights, attn.value_proj):
        assert 0.015 < layer.weight.std().item() < 0.025
        assert layer.bias.abs().max() == 0


# --- the faster implementations against the grid_sample reference ------------------------------
# "gather" runs everywhere; the Triton kernels run on CUDA, or on CPU in Triton's interpreter,
# which must be switched on before triton is first imported: test_triton_kernels_in_interpreter
# re-runs the "triton" cases below in a subprocess with TRITON_INTERPRET=1.

def _triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _impl_device(impl: str) -> torch.device:
    """Where `impl` can be tested here, or skip."""
    if impl == "triton":
        if not _triton_importable():
            pytest.skip("triton not installed")
        if torch.cuda.is_available():
            return torch.device("cuda")
        if os.environ.get("TRITON_INTERPRET") != "1":
            pytest.skip("Triton kernels on CPU only in the interpreter (test_triton_kernels_in_interpreter)")
    return torch.device("cpu")


FAST_IMPLS = ("gather", "triton")


def _compare(impl: str, fn, inputs: tuple[torch.Tensor, ...], probe: torch.Tensor, atol: float, rtol: float) -> None:
    """Values and gradients of fn(*inputs, impl=impl) against impl="reference" on the same device."""
    device = _impl_device(impl)
    moved = tuple(t.detach().to(device).requires_grad_() for t in inputs)
    probe = probe.to(device)
    ours = _grads(lambda *a: fn(*a, impl=impl), moved, probe)
    ref = _grads(lambda *a: fn(*a, impl="reference"), moved, probe)
    for name, a, b in zip(("output", "grad 0", "grad 1", "grad 2"), ours, ref):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol, msg=f"{impl}: {name}")


@pytest.mark.parametrize("impl", FAST_IMPLS)
def test_fast_core_matches_reference_float64(impl: str) -> None:
    """Locations inside and outside the map; values and grads w.r.t. value, locations, weights."""
    value = torch.randn(B, H + 2, W + 2, G * D, dtype=torch.float64)
    locations = torch.rand(B, H * W, G, P, 2, dtype=torch.float64) * 1.6 - 0.3
    weights = torch.randn(B, H * W, G, P, dtype=torch.float64)
    assert (locations < 0).any() and (locations > 1).any()
    _compare(impl, dcnv3_core, (value, locations, weights), torch.randn(B, H * W, G * D, dtype=torch.float64),
             atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("impl", FAST_IMPLS)
def test_fast_offsets_path_matches_naive_float64(impl: str) -> None:
    """Full DCNv3 sampling (padding, reference points, swapped base grid) vs the pixel loops."""
    device = _impl_device(impl)
    value, offsets, weights = (t.to(device) for t in _inputs(offset_scale=1.5))
    probe = torch.randn(B, H * W, G * D, dtype=torch.float64, device=device)
    ours = _grads(lambda *a: dcnv3_from_offsets(*a, impl=impl), (value, offsets, weights), probe)
    ref = _grads(naive_from_offsets, (value, offsets, weights), probe)
    # float32 reference points (as in the original) put the locations ~1e-7 px off the naive ones
    for name, a, b, tol in zip(("output", "value", "offsets", "weights"), ours, ref, (1e-5, 1e-4, 1e-4, 1e-4)):
        torch.testing.assert_close(a, b, atol=tol, rtol=0, msg=f"{impl}: {name}")


@pytest.mark.parametrize("dtype", (torch.float64, torch.float32))
@pytest.mark.parametrize("impl", FAST_IMPLS)
def test_fast_exact_integer_positions(impl: str, dtype: torch.dtype) -> None:
    """Points exactly on pixel centres and half-way between them, on the border and outside.

    A 6 x 6 map padded to 8 x 8 (a power of two) with integer and half-integer offsets keeps
    every coordinate exact in all formulations, so all pick the same bilinear cell and the same
    one-sided slope for the offset gradient at integer positions (where bilinear has a kink).
    """
    height = width = 6
    value = torch.randn(B, height, width, G * D, dtype=dtype)
    offsets = torch.randint(-8, 9, (B, height * width, G, P, 2)).to(dtype) / 2  # -4 .. 4 px
    weights = torch.randn(B, height * width, G, P, dtype=dtype).softmax(-1)
    pixel = offsets.new_tensor([[k // 3 - 1, k % 3 - 1] for k in range(P)]) + offsets
    assert (pixel.frac() == 0).float().mean() > 0.4 and (pixel.frac().abs() == 0.5).float().mean() > 0.4
    assert (offsets.abs() == 4).any()  # some points fall outside the padded map
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    _compare(impl, dcnv3_from_offsets, (value, offsets, weights),
             torch.randn(B, height * width, G * D, dtype=dtype), atol=tol, rtol=tol)


def _interpreted(impl: str) -> bool:
    """Whether `impl` runs in Triton's (slow) interpreter here: tests then use smaller shapes."""
    return impl == "triton" and not torch.cuda.is_available()


@pytest.mark.parametrize("impl", FAST_IMPLS)
def test_fast_core_block_sized_float32(impl: str) -> None:
    """Stage 1 of the tiny model: 64 channels in 4 groups (D = 16) on a 14 x 14 map (8 x 8 in
    the interpreter), offsets ~N(0, 2) px, float32."""
    batch, size, groups, channels = (1, 8, 4, 64) if _interpreted(impl) else (2, 14, 4, 64)
    value = torch.randn(batch, size, size, channels)
    offsets = 2 * torch.randn(batch, size * size, groups, P, 2)
    weights = torch.randn(batch, size * size, groups, P).softmax(-1)
    _compare(impl, dcnv3_from_offsets, (value, offsets, weights), torch.randn(batch, size * size, channels),
             atol=2e-5, rtol=1e-5)


def exercise_dcn_mixers(model: torch.nn.Module) -> torch.nn.Module:
    """Layer scales 1 (not 1e-6, which hides the mixers from logits and input gradients) and
    offset predictors x10 (offsets of pixels, not tenths) in every DCNv3 block, in place."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, DCNv3Block):
                module.gamma1.fill_(1.0)
                module.gamma2.fill_(1.0)
                module.attn.sampling_offsets.weight.mul_(10)
    return model


@pytest.mark.parametrize("impl", FAST_IMPLS)
def test_micro_model_logits_and_erf_gradient_match_reference(impl: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """unified_dcn_v3_micro (seeded random init made to exercise the sampling, 2 images at 32 px):
    logits and the input gradients of the centre of every stage (what the ERF maps are made of), new vs reference."""
    from stm_probe.models import create_model
    from stm_probe.models.features import Normalized, stage_outputs

    device = _impl_device(impl)
    torch.manual_seed(0)
    net = Normalized(exercise_dcn_mixers(create_model("unified_dcn_v3_micro"))).to(device).eval()
    pixels = torch.rand(2, 3, 32, 32, device=device)

    def run(name: str) -> list[torch.Tensor]:
        monkeypatch.setenv("STM_PROBE_DCNV3", name)
        with torch.no_grad():
            results = [net(pixels)]
        x = net.normalize(pixels).detach().requires_grad_(True)
        for k, feat in enumerate(stage_outputs(net.model, x, [0, 3])):
            h, w = feat.shape[-2:]
            score = feat[:, :, h // 2, w // 2].relu().sum()
            results.append(torch.autograd.grad(score, x, retain_graph=k == 0)[0])
        return results

    # strict fp32 on CUDA: cuDNN's default TF32 convolutions round the sampled maps to 10 bits,
    # which turns the implementations' 1e-7 differences into 1e-4 ones in the logits
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        ours, ref = run(impl), run("reference")
    assert all(r.abs().sum() > 0 for r in ref)
    for name, a, b in zip(("logits", "stage 0", "stage 3"), ours, ref):
        torch.testing.assert_close(a, b, atol=1e-5 * b.abs().max().item(), rtol=1e-4,
                                   msg=lambda detail, name=name: f"{impl}: {name}: {detail}")


def test_implementation_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    from stm_probe.errors import UsageError
    from stm_probe.ops import resolve_dcnv3_impl

    cpu = torch.device("cpu")
    monkeypatch.delenv("STM_PROBE_DCNV3", raising=False)
    assert resolve_dcnv3_impl(None, cpu) == "reference"  # auto: grid_sample is the fastest on CPU
    assert resolve_dcnv3_impl("gather", cpu) == "gather"
    monkeypatch.setenv("STM_PROBE_DCNV3", "gather")
    assert resolve_dcnv3_impl(None, cpu) == "gather"
    assert resolve_dcnv3_impl("reference", cpu) == "reference"  # the argument wins over the variable
    monkeypatch.setenv("STM_PROBE_DCNV3", "cuda-kernel")
    with pytest.raises(UsageError, match="STM_PROBE_DCNV3"):
        resolve_dcnv3_impl(None, cpu)
    if _triton_importable():
        if torch.cuda.is_available():
            assert resolve_dcnv3_impl("auto", torch.device("cuda")) == "triton"
        if os.environ.get("TRITON_INTERPRET") != "1":  # compiled kernels refuse CPU tensors
            value = torch.zeros(1, 3, 3, 2)
            with pytest.raises(UsageError, match="CUDA"):
                dcnv3_core(value, torch.zeros(1, 1, 1, P, 2), torch.zeros(1, 1, 1, P), impl="triton")


def test_auto_self_check_passes_triton_kernels() -> None:
    """The check "auto" runs before using the kernels passes for the real ones (on CUDA, or on
    CPU in the interpreter)."""
    from stm_probe.ops import dcnv3 as ops

    device = _impl_device("triton")
    ops._triton_passes_self_check.cache_clear()
    assert ops._triton_passes_self_check(device)
    ops._triton_passes_self_check.cache_clear()


def test_auto_self_check_refuses_wrong_or_crashing_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels 0.1% off or failing to run are refused with a warning naming the reason."""
    if not _triton_importable():
        pytest.skip("triton not installed")
    import stm_probe.ops.dcnv3_triton as kernels
    from stm_probe.ops import dcnv3 as ops

    def off_by_a_bit(value, locations, weights):
        return ops.dcnv3_core_reference(value, locations, weights * 1.001)

    def crashing(value, locations, weights):
        raise RuntimeError("no kernel image is available")

    for broken, reason in ((off_by_a_bit, "differ"), (crashing, "no kernel image")):
        monkeypatch.setattr(kernels, "dcnv3_core_triton", broken)
        ops._triton_passes_self_check.cache_clear()
        with pytest.warns(UserWarning, match=reason):
            assert not ops._triton_passes_self_check(torch.device("cpu"))
    ops._triton_passes_self_check.cache_clear()


@pytest.mark.slow  # Triton's interpreter: the full suite
def test_triton_kernels_in_interpreter() -> None:
    """The "triton" cases of this file, run on CPU in Triton's interpreter (a subprocess, since
    the interpreter must be chosen before triton is imported)."""
    if not _triton_importable():
        pytest.skip("triton not installed")
    if os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available():
        pytest.skip("the triton cases run directly in this process")
    env = dict(os.environ, TRITON_INTERPRET="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
           "-k", "triton and not interpreter"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]
