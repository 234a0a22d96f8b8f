"""ConvNeXt and PVT blocks against references written out with torch.nn.functional, and the
state-dict layout of the ConvNeXt, PVT and DCNv3 blocks against the original models' manifest."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stm_probe.models.blocks.convnext import ConvNeXtBlock
from stm_probe.models.blocks.dcn_v3 import DCNv3Block
from stm_probe.models.blocks.pvt import PvtBlock


def _randomize(module: nn.Module) -> None:
    """Every parameter random (incl. norms and layer scales), so no term can hide."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn_like(p))


def _ln(x: torch.Tensor, norm: nn.LayerNorm, eps: float) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, eps)


# --- ConvNeXt -----------------------------------------------------------------------------------

def test_convnext_block_matches_functional_reference() -> None:
    dim = 8
    block = ConvNeXtBlock(dim, layer_scale_init_value=1.0).double()
    _randomize(block)
    x = torch.randn(2, dim, 9, 12, dtype=torch.float64)

    y = _ln(x.permute(0, 2, 3, 1), block.dw_norm, 1e-6).permute(0, 3, 1, 2)
    y = F.conv2d(y, block.dw_input_proj.weight, block.dw_input_proj.bias)
    y = F.conv2d(y, block.dwconv.weight, block.dwconv.bias, padding=3, groups=dim)
    y = F.conv2d(y, block.dw_out_proj.weight, block.dw_out_proj.bias)
    mid = (x + block.gamma_1.reshape(1, dim, 1, 1) * y).permute(0, 2, 3, 1)
    z = _ln(mid, block.pw_norm, 1e-6)
    z = F.linear(F.gelu(F.linear(z, block.pwconv1.weight, block.pwconv1.bias)), block.pwconv2.weight, block.pwconv2.bias)
    expected = (mid + block.gamma_2.reshape(dim) * z).permute(0, 3, 1, 2)

    torch.testing.assert_close(block(x), expected)
    assert block.dw_norm.eps == 1e-6 and block.pw_norm.eps == 1e-6


# --- PVT ----------------------------------------------------------------------------------------

def reference_sr_attention(attn: nn.Module, x: torch.Tensor, size: tuple[int, int], heads: int, sr: int) -> torch.Tensor:
    """Spatial-reduction attention written out head by head; x (B, N, C) -> (B, N, C)."""
    batch, _, dim = x.shape
    head_dim = dim // heads
    kv_in = x
    if sr > 1:
        m = x.transpose(1, 2).reshape(batch, dim, *size)
        m = F.conv2d(m, attn.sr.weight, attn.sr.bias, stride=sr)
        kv_in = _ln(m.flatten(2).transpose(1, 2), attn.norm, 1e-5)
    q = F.linear(x, attn.q.weight, attn.q.bias)
    kv = F.linear(kv_in, attn.kv.weight, attn.kv.bias)
    k_all, v_all = kv[..., :dim], kv[..., dim:]  # [k of every head | v of every head]
    outs = []
    for h in range(heads):
        sl = slice(h * head_dim, (h + 1) * head_dim)
        logits = q[..., sl] @ k_all[..., sl].transpose(1, 2) / head_dim ** 0.5
        outs.append(torch.softmax(logits, -1) @ v_all[..., sl])
    return F.linear(torch.cat(outs, -1), attn.proj.weight, attn.proj.bias)


def reference_pvt_block(block: PvtBlock, x: torch.Tensor, heads: int, sr: int, pos: torch.Tensor | None) -> torch.Tensor:
    batch, dim, height, width = x.shape
    if pos is not None:
        x = x + pos
    t = x.flatten(2).transpose(1, 2)
    t = t + block.gamma_1 * reference_sr_attention(block.attn, _ln(t, block.norm1, 1e-5), (height, width), heads, sr)
    h = _ln(t, block.norm2, 1e-5)
    h = F.linear(F.gelu(F.linear(h, block.mlp.fc1.weight, block.mlp.fc1.bias)), block.mlp.fc2.weight, block.mlp.fc2.bias)
    t = t + block.gamma_2 * h
    return t.transpose(1, 2).reshape(batch, dim, height, width)


@pytest.mark.parametrize("heads,sr", [(2, 2), (3, 1)])
def test_sr_attention_matches_reference(heads: int, sr: int) -> None:
    dim, size = 4 * heads, (4, 6)
    block = PvtBlock(dim, input_resolution=size, num_heads=heads, mlp_ratio=2, sr_ratio=sr).double()
    _randomize(block)
    x = torch.randn(2, size[0] * size[1], dim, dtype=torch.float64)
    torch.testing.assert_close(block.attn(x, size), reference_sr_attention(block.attn, x, size, heads, sr))
    assert block.attn.scale == (dim // heads) ** -0.5


def test_pvt_block_resizes_position_embedding() -> None:
    """Built for 4x4, run at 8x12: the embedding is resized bilinearly with align_corners=True
    (the original loader's resize for a model built at the new size)."""
    dim, heads, sr = 8, 2, 2
    block = PvtBlock(dim, layer_scale_init_value=1.0, input_resolution=(4, 4), index=0,
                     num_heads=heads, mlp_ratio=2, sr_ratio=sr).double()
    _randomize(block)
    assert block.pos_embed.shape == (1, dim, 4, 4)

    x = torch.randn(2, dim, 8, 12, dtype=torch.float64)
    pos = F.interpolate(block.pos_embed, size=(8, 12), mode="bilinear", align_corners=True)
    out = block(x)
    torch.testing.assert_close(out, reference_pvt_block(block, x, heads, sr, pos))
    other = F.interpolate(block.pos_embed, size=(8, 12), mode="bilinear", align_corners=False)
    assert not torch.allclose(out, reference_pvt_block(block, x, heads, sr, other))

    x = torch.randn(1, dim, 4, 4, dtype=torch.float64)  # build size: the embedding as is
    torch.testing.assert_close(block(x), reference_pvt_block(block, x, heads, sr, block.pos_embed))


def test_pvt_later_blocks_have_no_position_embedding() -> None:
    block = PvtBlock(8, layer_scale_init_value=1.0, input_resolution=(4, 4), index=1, num_heads=2,
                     mlp_ratio=2, sr_ratio=1).double()
    _randomize(block)
    assert block.pos_embed is None
    x = torch.randn(2, 8, 4, 6, dtype=torch.float64)
    torch.testing.assert_close(block(x), reference_pvt_block(block, x, 2, 1, None))


# --- state-dict layout vs the original models ----------------------------------------------------

# (model, stage, index, block class, kwargs of that stage in the original factory call)
_BLOCK_CASES = [
    ("unified_pvt_micro", 0, 0, PvtBlock, dict(num_heads=1, mlp_ratio=8, sr_ratio=8, qkv_bias=True)),
    ("unified_pvt_micro", 2, 1, PvtBlock, dict(num_heads=5, mlp_ratio=4, sr_ratio=2, qkv_bias=True)),
    ("unified_pvt_micro", 3, 0, PvtBlock, dict(num_heads=8, mlp_ratio=4, sr_ratio=1, qkv_bias=True)),
    ("unified_pvt_micro", 3, 1, PvtBlock, dict(num_heads=8, mlp_ratio=4, sr_ratio=1, qkv_bias=True)),
    ("unified_convnext_micro", 0, 0, ConvNeXtBlock, {}),
    ("unified_convnext_micro", 3, 2, ConvNeXtBlock, {}),
    ("unified_dcn_v3_micro", 0, 0, DCNv3Block, dict(num_heads=2, points=9, kernel_size=3)),
    ("unified_dcn_v3_micro", 3, 1, DCNv3Block, dict(num_heads=16, points=9, kernel_size=3)),
]


@pytest.mark.parametrize("model,stage,index,cls,kwargs", _BLOCK_CASES,
                         ids=[f"{c[0]}-stages.{c[1]}.{c[2]}" for c in _BLOCK_CASES])
def test_block_state_dict_matches_manifest(model, stage, index, cls, kwargs, manifest) -> None:
    entry = manifest[model]
    dim = entry["stage_shapes_224"][f"stage{stage}"][1]
    resolution = tuple(entry["stage_shapes_224"][f"stage{stage}"][2:])
    block = cls(dim=dim, drop_path=0.0, layer_scale_init_value=1e-6, input_resolution=resolution,
                stage=stage, index=index, **kwargs)
    prefix = f"stages.{stage}.{index}."
    expected = {k[len(prefix):]: (tuple(shape), dtype) for k, shape, dtype, _ in entry["state_dict"]
                if k.startswith(prefix)}
    ours = {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in block.state_dict().items()}
    assert ours == expected


@pytest.mark.parametrize("cls,kwargs", [
    (PvtBlock, dict(num_heads=(1, 2, 5, 8), mlp_ratio=(8, 8, 4, 4), sr_ratio=(8, 4, 2, 1), qkv_bias=True)),
    (ConvNeXtBlock, {}),
    (DCNv3Block, dict(num_heads=(2, 4, 8, 16), points=9, kernel_size=3)),
], ids=["pvt", "convnext", "dcn_v3"])
def test_blocks_run_in_backbone_at_non_square_sizes(cls, kwargs) -> None:
    """Narrow backbones (built at 224) run at 224x448 and 256x320, every stage the expected shape."""
    from stm_probe.models.unified import UnifiedNet

    dims = (16, 32, 80, 128) if cls is PvtBlock else (16, 32, 64, 128)
    net = UnifiedNet(cls, kwargs, depths=(2, 1, 1, 1), dims=dims, num_classes=5).eval()
    for height, width in ((224, 448), (256, 320)):
        with torch.no_grad():
            stages = net.forward_stages(torch.randn(1, 3, height, width))
        for i, s in enumerate(stages):
            assert s.shape == (1, dims[i], height // 2 ** (i + 2), width // 2 ** (i + 2))
            assert torch.isfinite(s).all()
