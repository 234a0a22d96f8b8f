"""Halo attention ("U-HaloNet") as the token mixer of the unified backbone.

Blocked local self-attention after HaloNet ("Scaling Local Self-Attention for Parameter Efficient
Visual Backbones"): the map is cut into non-overlapping ``block x block`` query blocks and every
block attends to the ``(block + 2 * halo)``-wide square neighbourhood around it (13 x 13 for the
released models). Numerics follow the STM-Evaluation ``UnifiedHaloBlock`` (query-related relative
position embedding):

- q is a Linear, kv a 1x1 conv, both without bias; the kv channels are grouped per head as
  ``[k | v]``; ``scale = head_dim ** -0.5``;
- logits = ``(q * scale) @ k^T`` + relative logits computed from the *unscaled* q with separate
  height / width tables of shape ``(2 * win - 1, head_dim)``;
- halo keys outside the map are set to the most negative float before the softmax;
- output projection with bias; pre-norm block with ``nn.LayerNorm`` (eps 1e-5) and layer scales
  of shape ``(1, 1, 1, C)`` applied channels-last.

Any map size is accepted: the normalised map is zero-padded on the bottom/right to a multiple
of the block size, and keys coming from that padding are masked exactly like the halo beyond
the border, so outputs at real pixels do not depend on the padding. At sizes that are already
multiples of the block size (all stages at 224 and 448) no padding happens and the computation
is the original one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import DropPath, Mlp, layer_scale, make_divisible
from ..resize import halo_relative_table


def _round_up(size: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``size``."""
    return -(-size // multiple) * multiple


def relative_logit_index(block_size: int, win_size: int, device: torch.device | None = None) -> torch.Tensor:
    """Table rows used by the relative logits along one axis: (block_size, win_size) int64.

    Entry ``[i, j] = win_size - 1 + j - i`` for a query at offset ``i`` inside its block and a key
    at offset ``j`` inside the neighbourhood window (both counted from their own top/left edge).
    This is the indexing the original inherits from timm's ``rel_logits_1d`` (relative-to-absolute
    "skewing" trick): a key at the same image position as the query reads row ``win - 1 + halo``.
    """
    query = torch.arange(block_size, device=device)
    key = torch.arange(win_size, device=device)
    return key[None, :] - query[:, None] + (win_size - 1)


class QueryRelPosEmbed(nn.Module):
    """Query-dependent relative position logits for one query block.

    Args:
        block_size: query block side ``bs``.
        win_size: neighbourhood window side ``win``.
        dim_head: per-head q/k width ``d``.
        scale: init scale of the tables (``d ** -0.5`` in the original).

    ``forward(q)``: q (..., bs * bs, d), unscaled, queries in row-major block order ->
    logits (..., bs * bs, win * win) with
    ``out[.., (qy, qx), (ky, kx)] = q . height_rel[idx[qy, ky]] + q . width_rel[idx[qx, kx]]``
    and ``idx`` from :func:`relative_logit_index`.
    """

    def __init__(self, block_size: int, win_size: int, dim_head: int, scale: float) -> None:
        super().__init__()
        self.block_size = block_size
        self.win_size = win_size
        self.dim_head = dim_head
        self.height_rel = nn.Parameter(torch.randn(2 * win_size - 1, dim_head) * scale)
        self.width_rel = nn.Parameter(torch.randn(2 * win_size - 1, dim_head) * scale)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        bs, win = self.block_size, self.win_size
        lead = q.shape[:-2]
        q = q.reshape(-1, bs, bs, self.dim_head)  # (N, qy, qx, d)
        n = q.shape[0]
        index = relative_logit_index(bs, win, q.device)  # (bs, win)

        # (N, qy, qx, 2*win-1): dot products with every table row, then pick the rows per key.
        rel_h = q @ self.height_rel.transpose(0, 1)
        rel_h = rel_h.gather(-1, index[None, :, None, :].expand(n, bs, bs, win))  # [.., qy, qx, ky]
        rel_w = q @ self.width_rel.transpose(0, 1)
        rel_w = rel_w.gather(-1, index[None, None, :, :].expand(n, bs, bs, win))  # [.., qy, qx, kx]

        logits = rel_h[..., :, None] + rel_w[..., None, :]  # (N, qy, qx, ky, kx)
        return logits.reshape(*lead, bs * bs, win * win)


class HaloAttention(nn.Module):
    """Halo attention on channels-last maps: (B, H, W, C) -> (B, H, W, C).

    Args:
        dim: channels C (input and output).
        num_heads: attention heads.
        block_size: query block side (7).
        halo_size: halo width on each side (3); the key window is ``block + 2 * halo``.
        qk_ratio: q/k width relative to ``dim`` (1), rounded to a multiple of 8 as the original.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        block_size: int = 7,
        halo_size: int = 3,
        qk_ratio: float = 1.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.dim_head_qk = make_divisible(dim * qk_ratio, divisor=8) // num_heads
        self.dim_head_v = dim // num_heads
        self.scale = self.dim_head_qk ** -0.5
        self.block_size = block_size
        self.halo_size = halo_size
        self.win_size = block_size + 2 * halo_size

        qk_dim = num_heads * self.dim_head_qk
        v_dim = num_heads * self.dim_head_v
        self.kv = nn.Conv2d(dim, qk_dim + v_dim, kernel_size=1, bias=False)
        self.q = nn.Linear(dim, qk_dim, bias=False)
        self.pos_embed = QueryRelPosEmbed(block_size, self.win_size, self.dim_head_qk, self.scale)
        self.proj = nn.Linear(v_dim, v_dim)
        # (H, W, Hp, Wp, device) -> key mask; a plain cache, never part of the state dict.
        self._mask_cache: dict[tuple, torch.Tensor] = {}

    def key_mask(self, valid_hw: tuple[int, int], padded_hw: tuple[int, int], device: torch.device) -> torch.Tensor:
        """Keys to hide, (1, num_blocks, 1, win * win) bool, True outside the valid H x W map.

        Covers both the halo beyond the (padded) map and the bottom/right padding of a map whose
        size is not a multiple of the block size. Cached per sizes and device.
        """
        key = (*valid_hw, *padded_hw, device)
        mask = self._mask_cache.get(key)
        if mask is None:
            (h, w), (hp, wp) = valid_hw, padded_hw
            with torch.inference_mode(False):  # a normal tensor even if first built under inference mode
                valid = torch.zeros(1, 1, hp, wp, device=device)
                valid[..., :h, :w] = 1.0
                valid = F.pad(valid, [self.halo_size] * 4)
                valid = valid.unfold(2, self.win_size, self.block_size).unfold(3, self.win_size, self.block_size)
                num_blocks = (hp // self.block_size) * (wp // self.block_size)
                mask = valid.reshape(1, num_blocks, 1, self.win_size ** 2) == 0
            if len(self._mask_cache) >= 8:
                self._mask_cache.clear()
            self._mask_cache[key] = mask
        return mask

    def forward(self, x: torch.Tensor, padded_size: tuple[int, int] | None = None) -> torch.Tensor:
        """x: (B, H, W, C) normalised map -> (B, H, W, C).

        ``padded_size`` overrides the internal padded size (a multiple of the block size, at
        least H x W); by default the next multiples of the block size. Used by tests only.
        """
        b, h, w, _ = x.shape
        bs, win, heads = self.block_size, self.win_size, self.num_heads
        dqk, dv = self.dim_head_qk, self.dim_head_v
        hp, wp = padded_size or (_round_up(h, bs), _round_up(w, bs))
        if hp % bs or wp % bs or hp < h or wp < w:
            raise ValueError(f"padded size {(hp, wp)} must be multiples of {bs} covering {(h, w)}")
        if (hp, wp) != (h, w):
            x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
        nbh, nbw = hp // bs, wp // bs
        num_blocks = nbh * nbw

        # queries: (B, heads, blocks, bs*bs, dqk), blocks and pixels in row-major order
        q = self.q(x).reshape(b, nbh, bs, nbw, bs, heads, dqk)
        q = q.permute(0, 5, 1, 3, 2, 4, 6).reshape(b, heads, num_blocks, bs * bs, dqk)

        # keys/values: zero-pad the kv map by the halo, cut the win x win neighbourhood of each block
        kv = self.kv(x.permute(0, 3, 1, 2).contiguous())  # (B, heads*(dqk+dv), Hp, Wp)
        kv = F.pad(kv, [self.halo_size] * 4)
        kv = kv.unfold(2, win, bs).unfold(3, win, bs)  # (B, heads*(dqk+dv), nbh, nbw, win, win)
        kv = kv.reshape(b, heads, dqk + dv, num_blocks, win * win).permute(0, 1, 3, 4, 2)
        k, v = torch.split(kv, [dqk, dv], dim=-1)  # (B, heads, blocks, win*win, d)

        attn = (q * self.scale) @ k.transpose(-1, -2) + self.pos_embed(q)
        attn = attn.masked_fill(self.key_mask((h, w), (hp, wp), x.device), -torch.finfo(attn.dtype).max)
        attn = attn.softmax(dim=-1)

        out = attn @ v  # (B, heads, blocks, bs*bs, dv)
        out = out.reshape(b, heads, nbh, nbw, bs, bs, dv).permute(0, 2, 4, 3, 5, 1, 6)
        out = out.reshape(b, hp, wp, heads * dv)
        if (hp, wp) != (h, w):
            out = out[:, :h, :w]
        return self.proj(out)


class HaloBlock(nn.Module):
    """Pre-norm halo-attention block of the unified backbone: (B, C, H, W) -> (B, C, H, W).

    ``x = x + DropPath(gamma_1 * HaloAttn(LN(x)))``; ``x = x + DropPath(gamma_2 * MLP(LN(x)))``,
    computed channels-last inside the block (the original permutes once per stage instead; the
    values are the same).

    Args:
        dim: channels C.
        drop_path: stochastic-depth rate (shared by both branches).
        layer_scale_init_value: initial layer scale; ``gamma_1`` / ``gamma_2`` have shape
            (1, 1, 1, C); none if <= 0.
        input_resolution, stage, index: part of the block contract, unused (any size works).
        num_heads: heads of this stage.
        block_size, halo_size: 7 and 3 in every released model.
        mlp_ratio: MLP expansion (4).
        pos_embed_type: only ``"query_related"`` (the released models) is implemented.
    """

    @staticmethod
    def resize_checkpoint_tensor(key: str, value: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
        """A checkpoint's relative tables at another window size, resized linearly (key relative to the block)."""
        return halo_relative_table(key, value, shape)

    def __init__(
        self,
        dim: int,
        drop_path: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        input_resolution: tuple[int, int] | None = None,
        stage: int = 0,
        index: int = 0,
        num_heads: int = 1,
        block_size: int = 7,
        halo_size: int = 3,
        mlp_ratio: float = 4.0,
        pos_embed_type: str = "query_related",
    ) -> None:
        super().__init__()
        if pos_embed_type != "query_related":
            raise NotImplementedError(f"halo pos_embed_type {pos_embed_type!r} (only 'query_related')")
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = HaloAttention(dim, num_heads=num_heads, block_size=block_size, halo_size=halo_size)
        self.gamma_1 = layer_scale(layer_scale_init_value, 1, 1, 1, dim)
        self.gamma_2 = layer_scale(layer_scale_init_value, 1, 1, 1, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1).contiguous()  # (B, H, W, C)
        y = self.attn(self.norm1(x))
        if self.gamma_1 is not None:
            y = self.gamma_1 * y
        x = x + self.drop_path(y)

        y = self.mlp(self.norm2(x))
        if self.gamma_2 is not None:
            y = self.gamma_2 * y
        x = x + self.drop_path(y)
        return x.permute(0, 3, 1, 2).contiguous()
