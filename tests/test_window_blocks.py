"""Halo and Swin blocks against independent naive references (docs/protocols.md §1).

Every reference below is written from the definition (loops over pixels / windows, explicit
token pairs), not from the blocks' code. Weights are randomised with layer scales near 1 so the
attention branch dominates the outputs (the default 1e-6 layer scale would hide any error).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from timm.layers.halo_attn import rel_logits_1d

from stm_probe.models.blocks.halo import HaloBlock
from stm_probe.models.blocks.swin import SwinBlock, window_attention_mask
from stm_probe.models.unified import UnifiedNet

ATOL = 1e-5


def _randomise(block: torch.nn.Module) -> torch.nn.Module:
    """Random weights of order 1 (layer scales ~1, norm weights ~1), eval mode."""
    with torch.no_grad():
        for name, p in block.named_parameters():
            if name.startswith("gamma") or name.endswith("norm1.weight") or name.endswith("norm2.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    return block.eval()


def _mlp_branch(block: torch.nn.Module, x: torch.Tensor, eps: float) -> torch.Tensor:
    """x + gamma_2 * MLP(LN(x)) on a channels-last map (B, H, W, C)."""
    y = F.layer_norm(x, x.shape[-1:], block.norm2.weight, block.norm2.bias, eps)
    y = F.gelu(F.linear(y, block.mlp.fc1.weight, block.mlp.fc1.bias))
    y = F.linear(y, block.mlp.fc2.weight, block.mlp.fc2.bias)
    return x + block.gamma_2.reshape(-1) * y


# --------------------------------------------------------------------------------------------
# Swin
# --------------------------------------------------------------------------------------------
def _swin_bias(table: torch.Tensor, table_window: int, dy: int, dx: int) -> torch.Tensor:
    """Bias (heads,) of a (query - key) offset (dy, dx) in a ((2t-1)^2, heads) table."""
    t = table_window
    return table[(dy + t - 1) * (2 * t - 1) + (dx + t - 1)]


def _table_for_window(block: SwinBlock, window: int) -> tuple[torch.Tensor, int]:
    """The bias table a ``window``-wide window uses and its window: the block's own table, or for a
    smaller window the table resized as the original loader does for a model built at that size
    (the (heads, 2t-1, 2t-1) offset grid, F.interpolate bicubic, align_corners=False)."""
    table, t = block.attn.relative_position_bias_table, block.window_size
    if window == t:
        return table, t
    heads, side = table.shape[1], 2 * window - 1
    grid = table.T.reshape(1, heads, 2 * t - 1, 2 * t - 1)
    return F.interpolate(grid, size=(side, side), mode="bicubic").reshape(heads, side * side).T, window


def _wrap_labels(size: int, shift: int) -> list[int]:
    """Per shifted coordinate r: 1 if the token was wrapped around by the cyclic shift, else 0."""
    return [int(shift > 0 and r >= size - shift) for r in range(size)]


def swin_reference_rolled(block: SwinBlock, x: torch.Tensor, window: int, shift: int) -> torch.Tensor:
    """Swin block by the book on a map whose sides are multiples of ``window``.

    Explicit cyclic roll, loop over windows, per-pair relative bias and -100 mask for pairs that
    come from different sides of a wrap, softmax, window reverse, roll back, residuals.
    """
    b, c, h, w = x.shape
    heads = block.attn.num_heads
    hd = c // heads
    scale = hd ** -0.5
    n = window * window
    table, table_window = _table_for_window(block, window)

    xl = x.permute(0, 2, 3, 1)
    y = F.layer_norm(xl, (c,), block.norm1.weight, block.norm1.bias, 1e-6)
    y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
    row_wrap, col_wrap = _wrap_labels(h, shift), _wrap_labels(w, shift)

    bias = torch.empty(heads, n, n)
    for i in range(n):
        for j in range(n):
            bias[:, i, j] = _swin_bias(table, table_window, i // window - j // window, i % window - j % window)

    out = torch.empty_like(y)
    for wy in range(h // window):
        for wx in range(w // window):
            rows = range(wy * window, (wy + 1) * window)
            cols = range(wx * window, (wx + 1) * window)
            labels = torch.tensor([(row_wrap[r], col_wrap[cc]) for r in rows for cc in cols])
            same = (labels[:, None, :] == labels[None, :, :]).all(-1)
            mask = torch.where(same, 0.0, -100.0)
            tokens = y[:, wy * window:(wy + 1) * window, wx * window:(wx + 1) * window].reshape(b, n, c)
            qkv = F.linear(tokens, block.attn.qkv.weight, block.attn.qkv.bias)
            q, k, v = qkv[..., :c], qkv[..., c:2 * c], qkv[..., 2 * c:]
            head_out = []
            for hh in range(heads):
                sl = slice(hh * hd, (hh + 1) * hd)
                logits = (q[..., sl] * scale) @ k[..., sl].transpose(1, 2) + bias[hh] + mask
                head_out.append(logits.softmax(-1) @ v[..., sl])
            o = F.linear(torch.cat(head_out, -1), block.attn.proj.weight, block.attn.proj.bias)
            out[:, wy * window:(wy + 1) * window, wx * window:(wx + 1) * window] = o.reshape(b, window, window, c)
    out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))

    xl = xl + block.gamma_1 * out
    return _mlp_branch(block, xl, 1e-6).permute(0, 3, 1, 2)


def swin_reference_pixels(block: SwinBlock, x: torch.Tensor, window: int, shift: int) -> torch.Tensor:
    """Swin block per query pixel, for any map size, in image coordinates (no roll, no padding).

    The map is tiled from the top-left by windows of side ``window`` displaced by ``shift``
    (cyclically, over the map padded to a multiple of the window); a query attends to the real
    pixels of its window that are not on the other side of a wrap. Masked pairs are excluded
    outright (the block adds -100, a difference of e^-100).
    """
    b, c, h, w = x.shape
    heads = block.attn.num_heads
    hd = c // heads
    scale = hd ** -0.5
    hp, wp = -(-h // window) * window, -(-w // window) * window
    table, table_window = _table_for_window(block, window)

    def segment(i: int, size: int) -> tuple[int, int]:
        r = (i - shift) % size  # coordinate on the shifted map
        return r // window, int(shift > 0 and r >= size - shift)

    groups = {}
    for i in range(h):
        for j in range(w):
            groups.setdefault(segment(i, hp) + segment(j, wp), []).append((i, j))

    xl = x.permute(0, 2, 3, 1)
    y = F.layer_norm(xl, (c,), block.norm1.weight, block.norm1.bias, 1e-6)
    qkv = F.linear(y, block.attn.qkv.weight, block.attn.qkv.bias)
    out = torch.empty_like(y)
    for members in groups.values():
        rows = torch.tensor([p[0] for p in members])
        cols = torch.tensor([p[1] for p in members])
        for i, j in members:
            bias = torch.stack([_swin_bias(table, table_window, i - ii, j - jj) for ii, jj in members], -1)
            head_out = []
            for hh in range(heads):
                q = qkv[:, i, j, hh * hd:(hh + 1) * hd]
                k = qkv[:, rows, cols, c + hh * hd:c + (hh + 1) * hd]
                v = qkv[:, rows, cols, 2 * c + hh * hd:2 * c + (hh + 1) * hd]
                logits = scale * (k @ q[:, :, None])[..., 0] + bias[hh]
                head_out.append((logits.softmax(-1)[:, :, None] * v).sum(1))
            out[:, i, j] = F.linear(torch.cat(head_out, -1), block.attn.proj.weight, block.attn.proj.bias)
    xl = xl + block.gamma_1 * out
    return _mlp_branch(block, xl, 1e-6).permute(0, 3, 1, 2)


def _swin(dim: int = 32, heads: int = 2, index: int = 1, resolution: tuple[int, int] = (14, 14)) -> SwinBlock:
    return _randomise(SwinBlock(dim, 0.0, 1e-6, resolution, stage=0, index=index, num_heads=heads, window_size=7))


@pytest.mark.parametrize("index", [0, 1])
def test_swin_matches_rolled_reference_14x14(index: int) -> None:
    block = _swin(index=index)
    x = torch.randn(2, 32, 14, 14)
    shift = 3 if index == 1 else 0
    assert block.window_and_shift(14, 14) == (7, shift)
    with torch.no_grad():
        out = block(x)
        ref = swin_reference_rolled(block, x, 7, shift)
        ref_pixels = swin_reference_pixels(block, x, 7, shift)
    assert torch.allclose(ref, ref_pixels, atol=ATOL)  # the two references agree
    assert torch.allclose(out, ref, atol=ATOL), (out - ref).abs().max()


def test_swin_window_and_shift_rule() -> None:
    shifted = SwinBlock(32, 0.0, 1e-6, (56, 56), stage=0, index=1, num_heads=1, window_size=7)
    assert shifted.window_and_shift(56, 56) == (7, 3)
    assert shifted.window_and_shift(10, 12) == (7, 3)
    assert shifted.window_and_shift(7, 7) == (7, 0)  # stage 4 at 224: never shifted
    assert shifted.window_and_shift(7, 14) == (7, 0)  # 224 x 448: min side 7 -> no shift
    assert shifted.window_and_shift(10, 6) == (6, 0)  # window = smaller side
    assert shifted.window_and_shift(4, 4) == (4, 0)
    assert SwinBlock(32, 0.0, 1e-6, (56, 56), stage=0, index=0, num_heads=1).window_and_shift(56, 56) == (7, 0)
    last = SwinBlock(32, 0.0, 1e-6, (7, 7), stage=3, index=1, num_heads=1)
    assert last.attn_mask is None and "attn_mask" not in last.state_dict()
    assert last.window_and_shift(14, 14) == (7, 3)  # a larger input makes the last stage shift


def test_swin_mask_on_non_multiple_map_matches_explicit_labels() -> None:
    """10 x 12 map, window 7, shift 3: padded to 14 x 14; regions labelled explicitly."""
    h, w, hp, wp, window, shift = 10, 12, 14, 14, 7, 3
    block = _swin(index=1, resolution=(56, 56))
    mask = block.attention_mask(h, w, window, shift, torch.device("cpu"))
    assert mask.shape == (4, 49, 49)

    # label every token of the shifted padded map: (wrapped row?, wrapped col?) or "padding"
    labels = {}
    for r in range(hp):
        for s in range(wp):
            i, j = (r + shift) % hp, (s + shift) % wp  # image coordinates before the shift
            labels[r, s] = "pad" if (i >= h or j >= w) else (r >= hp - shift, s >= wp - shift)
    expected = torch.zeros(4, 49, 49)
    for win in range(4):
        r0, s0 = (win // 2) * window, (win % 2) * window
        tokens = [(r0 + a // window, s0 + a % window) for a in range(49)]
        for a, ta in enumerate(tokens):
            for bb, tb in enumerate(tokens):
                if labels[ta] != labels[tb]:
                    expected[win, a, bb] = -100.0
    assert torch.equal(mask, expected)
    assert (mask[0] == 0).all()  # shifted rows/cols 0..6 = image rows/cols 3..9: all real, no wrap
    # window 1 holds image columns 10..11 (real), 12..13 (padding) and 0..2 (wrapped): 3 regions
    assert len({labels[0, s] for s in range(7, 14)}) == 3 and (mask[1] == -100).any()


@pytest.mark.parametrize("size", [(10, 12), (10, 6)])
@pytest.mark.parametrize("index", [0, 1])
def test_swin_non_multiple_sizes_match_pixel_reference(size: tuple[int, int], index: int) -> None:
    block = _swin(index=index, resolution=(56, 56))
    x = torch.randn(1, 32, *size)
    window, shift = block.window_and_shift(*size)
    with torch.no_grad():
        out = block(x)
        ref = swin_reference_pixels(block, x, window, shift)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert torch.allclose(out, ref, atol=ATOL), (out - ref).abs().max()


def test_swin_registered_mask_and_larger_maps() -> None:
    """The build-size buffer equals the explicit mask; other sizes use their own masks."""
    block = _swin(index=1, resolution=(14, 14))
    assert block.attn_mask.shape == (4, 49, 49)
    assert torch.equal(block.attn_mask, window_attention_mask((14, 14), (14, 14), 7, 3))
    # a 14 x 28 map (as at 224 x 448) gets an 8-window mask built for its own size
    assert block.attention_mask(14, 28, 7, 3, torch.device("cpu")).shape == (8, 49, 49)
    x = torch.randn(1, 32, 14, 28)
    with torch.no_grad():
        out = block(x)
        ref = swin_reference_rolled(block, x, 7, 3)
    assert torch.allclose(out, ref, atol=ATOL)
    # the unpadded 224 path never builds a mask for unshifted blocks
    assert _swin(index=0).attention_mask(14, 14, 7, 0, torch.device("cpu")) is None


# --------------------------------------------------------------------------------------------
# Halo
# --------------------------------------------------------------------------------------------
def halo_reference(block: HaloBlock, x: torch.Tensor) -> torch.Tensor:
    """Halo block by the book, per query pixel, for any map size.

    A query in block (by, bx) (7 x 7 blocks from the top-left) sees the 13 x 13 window starting 3
    pixels above/left of its block; window pixels outside the H x W map are excluded. Logit of
    key (ky, kx) (window coordinates) for query (qy, qx) (block coordinates):
    scale * q.k + q.height_rel[12 + ky - qy] + q.width_rel[12 + kx - qx], q unscaled
    (indexing checked against timm's rel_logits_1d in ``test_halo_relative_logits_match_timm``).
    The kv 1x1 conv's channels are [k | v] per head.
    """
    attn = block.attn
    b, c, h, w = x.shape
    heads, d = attn.num_heads, c // attn.num_heads
    bs, halo, win = attn.block_size, attn.halo_size, attn.win_size
    scale = d ** -0.5
    xl = x.permute(0, 2, 3, 1)
    y = F.layer_norm(xl, (c,), block.norm1.weight, block.norm1.bias, 1e-5)
    q = F.linear(y, attn.q.weight)
    kv = F.linear(y, attn.kv.weight[:, :, 0, 0])
    hrel, wrel = attn.pos_embed.height_rel, attn.pos_embed.width_rel

    out = torch.empty(b, h, w, c)
    for i in range(h):
        for j in range(w):
            by, bx = i // bs * bs, j // bs * bs
            qy, qx = i - by, j - bx
            keys = [(ky, kx) for ky in range(win) for kx in range(win)
                    if 0 <= by - halo + ky < h and 0 <= bx - halo + kx < w]
            rows = torch.tensor([by - halo + ky for ky, _ in keys])
            cols = torch.tensor([bx - halo + kx for _, kx in keys])
            hidx = torch.tensor([win - 1 + ky - qy for ky, _ in keys])
            widx = torch.tensor([win - 1 + kx - qx for _, kx in keys])
            head_out = []
            for hh in range(heads):
                qv = q[:, i, j, hh * d:(hh + 1) * d]  # (B, d)
                k = kv[:, rows, cols, hh * 2 * d:hh * 2 * d + d]  # (B, K, d)
                v = kv[:, rows, cols, hh * 2 * d + d:(hh + 1) * 2 * d]
                logits = scale * (k @ qv[:, :, None])[..., 0] + qv @ hrel[hidx].T + qv @ wrel[widx].T
                head_out.append((logits.softmax(-1)[:, :, None] * v).sum(1))
            out[:, i, j] = F.linear(torch.cat(head_out, -1), attn.proj.weight, attn.proj.bias)
    xl = xl + block.gamma_1.reshape(-1) * out
    return _mlp_branch(block, xl, 1e-5).permute(0, 3, 1, 2)


def _halo(dim: int = 16, heads: int = 2) -> HaloBlock:
    return _randomise(HaloBlock(dim, 0.0, 1e-6, (14, 14), stage=0, index=0, num_heads=heads))


def test_halo_relative_logits_match_timm() -> None:
    """The query-related logits equal the original's use of timm's rel_logits_1d."""
    block = _halo(dim=16, heads=1)
    pe = block.attn.pos_embed
    q = torch.randn(3, 49, 16)
    q4 = q.reshape(-1, 7, 7, 16)
    rel_w = rel_logits_1d(q4, pe.width_rel, permute_mask=(0, 1, 3, 2, 4))
    rel_h = rel_logits_1d(q4.transpose(1, 2), pe.height_rel, permute_mask=(0, 3, 1, 4, 2))
    expected = (rel_h + rel_w).reshape(3, 49, 169)
    with torch.no_grad():
        assert torch.allclose(pe(q), expected, atol=1e-6)


@pytest.mark.parametrize("heads", [1, 2])
def test_halo_matches_naive_reference_14x14(heads: int) -> None:
    block = _halo(heads=heads)
    x = torch.randn(2, 16, 14, 14)
    with torch.no_grad():
        out = block(x)
        ref = halo_reference(block, x)
    assert torch.allclose(out, ref, atol=ATOL), (out - ref).abs().max()


def test_halo_non_multiple_map_matches_naive_reference() -> None:
    """10 x 12: zero padding to 14 x 14 inside the block, padded keys masked like the halo."""
    block = _halo(heads=2)
    x = torch.randn(2, 16, 10, 12)
    with torch.no_grad():
        out = block(x)
        ref = halo_reference(block, x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert torch.allclose(out, ref, atol=ATOL), (out - ref).abs().max()


@pytest.mark.parametrize("size", [(14, 14), (10, 12)])
def test_halo_output_does_not_depend_on_padding(size: tuple[int, int]) -> None:
    """Forcing extra padding (a no-op at 14 x 14 by default) leaves every real pixel unchanged."""
    block = _halo(heads=2)
    with torch.no_grad():
        y = block.norm1(torch.randn(2, *size, 16))
        default = block.attn(y)
        padded = block.attn(y, padded_size=(21, 28))
    assert default.shape == padded.shape == y.shape
    assert torch.allclose(default, padded, atol=1e-6)


# --------------------------------------------------------------------------------------------
# State dict vs the original layout, and the backbone at sizes other than 224
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model,cls", [("unified_halo_micro", HaloBlock), ("unified_swin_micro", SwinBlock)])
def test_block_state_dict_matches_manifest(manifest: dict, model: str, cls: type) -> None:
    rows = manifest[model]["state_dict"]
    extra = dict(block_size=7, halo_size=3) if cls is HaloBlock else dict(window_size=7)
    for index in (0, 1):
        block = cls(32, 0.0, 1e-6, (56, 56), stage=0, index=index, num_heads=1, **extra)
        prefix = f"stages.0.{index}."
        expected = [(k[len(prefix):], tuple(s), dt) for k, s, dt, _ in rows if k.startswith(prefix)]
        got = [(k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in block.state_dict().items()]
        assert got == expected
        kinds = {k[len(prefix):]: kind for k, _, _, kind in rows if k.startswith(prefix)}
        params = dict(block.named_parameters())
        assert all((kinds[k] == "param") == (k in params) for k, _, _ in got)


@pytest.mark.parametrize("cls,kwargs", [
    (HaloBlock, dict(num_heads=1, block_size=7, halo_size=3)),
    (SwinBlock, dict(num_heads=1, window_size=7)),
])
def test_small_backbone_runs_at_non_224_sizes(cls: type, kwargs: dict) -> None:
    model = UnifiedNet(cls, kwargs, depths=(1, 2, 1, 2), dims=(8, 8, 16, 16), num_classes=5).eval()
    with torch.no_grad():
        for size in [(224, 448), (256, 256), (320, 192), (64, 96)]:
            feats = model.forward_stages(torch.randn(1, 3, *size))
            assert [f.shape[-2:] for f in feats] == [(size[0] // 2**i, size[1] // 2**i) for i in (2, 3, 4, 5)]
            assert all(torch.isfinite(f).all() for f in feats)


# --------------------------------------------------------------------------------------------
# Swin below the build size: the bias table is resized bicubically, as the original loader does
# --------------------------------------------------------------------------------------------
def test_swin_bias_for_a_smaller_window_is_the_bicubic_resized_table() -> None:
    """A 4 x 4 window (stage 3 at 64 px) of a block whose table is for 7 x 7: every pair's bias
    comes from the 13 x 13 offset grid resized to 7 x 7 with F.interpolate (bicubic), not from
    the central 7 x 7 crop."""
    block = _swin(dim=16, heads=2, resolution=(56, 56))
    table = block.attn.relative_position_bias_table.detach()
    resized = F.interpolate(table.T.reshape(1, 2, 13, 13), size=(7, 7), mode="bicubic")[0]  # (heads, 7, 7)
    expected = torch.empty(2, 16, 16)
    cropped = torch.empty(2, 16, 16)
    for i in range(16):
        for j in range(16):
            dy, dx = i // 4 - j // 4, i % 4 - j % 4
            expected[:, i, j] = resized[:, dy + 3, dx + 3]
            cropped[:, i, j] = table[(dy + 6) * 13 + dx + 6]
    with torch.no_grad():
        bias = block.attn.relative_position_bias(4)
    assert torch.allclose(bias, expected, atol=1e-6)
    assert not torch.allclose(bias, cropped, atol=1e-2)  # the test tells resizing from cropping
    assert torch.equal(block.attn.relative_position_bias(7), block.attn.relative_position_bias(7))


def test_swin_at_64_px_equals_a_model_built_at_64_from_the_224_checkpoint(tmp_path) -> None:
    """Built at 224 and run at 64, a Swin model gives what the original gives when built at 64
    and loaded from the same 224 checkpoint (tables resized by the loader)."""
    from stm_probe.models import create_model
    from stm_probe.models.layers import set_layer_scales

    trained = create_model("unified_swin_micro")
    set_layer_scales(trained, 1.0)  # so the attention branches, and their biases, matter
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.copy_(torch.randn_like(p))
    path = tmp_path / "swin224.pth"
    torch.save({"model": trained.state_dict()}, path)
    at_224 = create_model("unified_swin_micro", checkpoint=path).eval()
    at_64 = create_model("unified_swin_micro", img_size=64, checkpoint=path).eval()
    assert at_64.stages[2][0].attn.relative_position_bias_table.shape == (49, 4)  # 4 x 4 window
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = at_224.forward_stages(x), at_64.forward_stages(x)
    for stage, (fa, fb) in enumerate(zip(a, b)):
        assert torch.allclose(fa, fb, atol=1e-4), (stage, (fa - fb).abs().max())
