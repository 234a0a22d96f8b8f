"""Shifted-window attention ("U-Swin") as the token mixer of the unified backbone.

Window multi-head self-attention with a relative position bias table (Swin Transformer v1), in
the pre-norm double-residual block of the unified backbone. Numerics follow the STM-Evaluation
``SwinBlock`` (timm 0.6 ``WindowAttention``): ``softmax((q * scale) @ k^T + bias + mask) @ v``
with the bias gathered from a ``((2w-1)^2, heads)`` table, the mask 0 / -100 for token pairs of a
shifted window that come from different image regions, block norms ``LayerNorm2d`` (eps 1e-6)
and layer scales of shape ``(C,)`` applied channels-last.

Window and shift rule (decided per forward from the actual map size H x W):

- ``window_size`` is the window the bias table was built for: the configured window (7),
  or, as in the original, the smaller build-map side when that side is not larger than it
  (``min(input_resolution)``).
- If ``min(H, W) <= window_size``: window ``= min(H, W)`` and no shift (the original's
  "window = map, no shift" rule; at 224 the 7 x 7 last stage is never shifted).
- Otherwise: window ``= window_size`` and shift ``= window_size // 2`` on odd blocks of a stage.

The original takes the same decision once, at construction, from ``input_resolution``, and
then silently misapplies its build-size shift masks at other sizes. Evaluated per forward, the
rule gives the original's windows and shifts at every size where the original, built at that
size, runs (e.g. 224, 448, 224 x 448), so 224 is unchanged. A window smaller than the table's
(e.g. 4 x 4 in stage 3 of a 64 px input, or a 6 x 10 last-stage map) uses the table resized
bicubically to that window, exactly what the original's loader does to a 224 checkpoint for a
model built at that size (`stm_probe.models.resize.resize_bias_table`); so a model built at 224
and run at 64 equals one built at 64 that loaded the same checkpoint.

Maps that are not a multiple of the window are zero-padded on the bottom/right after the norm,
processed and cropped back (as Swin's detection backbones do). The shift mask is built for the
actual padded map, and padded tokens get a region of their own, so real tokens never attend to
padding (fill -100, like cross-region pairs).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import DropPath, LayerNorm2d, Mlp, layer_scale, trunc_normal_
from ..resize import resize_bias_table, swin_bias_table

MASK_VALUE = -100.0
_MAX_CACHED = 8


def _round_up(size: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``size``."""
    return -(-size // multiple) * multiple


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of ``window`` -> (B * nW, window * window, C), row-major windows."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * nW, window * window, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.reshape(-1, height // window, width // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, height, width, c)


def relative_position_index(window: int, table_window: int | None = None,
                            device: torch.device | None = None) -> torch.Tensor:
    """Bias-table rows for every token pair of a ``window x window`` window: (w*w, w*w) int64.

    Entry ``[i, j]`` indexes the offset ``(y_i - y_j, x_i - x_j)`` in a table built for
    ``table_window`` (default ``window``), laid out row-major over ``(2t-1) x (2t-1)`` offsets.
    With ``table_window == window`` this is Swin's ``relative_position_index``.
    """
    t = window if table_window is None else table_window
    if window > t:
        raise ValueError(f"window {window} is larger than the bias table's window {t}")
    ys, xs = torch.meshgrid(torch.arange(window, device=device), torch.arange(window, device=device), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + (t - 1)
    dx = xs[:, None] - xs[None, :] + (t - 1)
    return dy * (2 * t - 1) + dx


def window_attention_mask(
    padded_hw: tuple[int, int],
    valid_hw: tuple[int, int],
    window: int,
    shift: int,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor | None:
    """Additive attention mask of the (shifted) windows of a padded map: (nW, w*w, w*w) or None.

    Tokens are labelled on the *shifted* padded map (Hp, Wp): with a shift, the three bands of
    each axis (``[0, Hp-w)``, ``[Hp-w, Hp-s)``, ``[Hp-s, Hp)``) give 9 regions as in Swin; tokens
    from the bottom/right padding (rows >= H or columns >= W before the shift) get a label of
    their own. Pairs with different labels get -100, others 0. None when there is neither a
    shift nor padding (nothing to mask).
    """
    (hp, wp), (h, w) = padded_hw, valid_hw
    padded = (hp, wp) != (h, w)
    if shift == 0 and not padded:
        return None
    labels = torch.zeros(hp, wp, device=device)
    if shift > 0:
        bands = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
        region = 0
        for rows in bands:
            for cols in bands:
                labels[rows, cols] = region
                region += 1
    if padded:
        valid = torch.zeros(hp, wp, dtype=torch.bool, device=device)
        valid[:h, :w] = True
        valid = torch.roll(valid, shifts=(-shift, -shift), dims=(0, 1))
        labels[~valid] = -1.0
    labels = window_partition(labels[None, :, :, None], window).squeeze(-1)  # (nW, w*w)
    diff = labels[:, None, :] - labels[:, :, None]
    return torch.zeros(diff.shape, device=device, dtype=dtype).masked_fill(diff != 0, MASK_VALUE)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a relative position bias.

    Args:
        dim: channels C.
        num_heads: attention heads.
        window_size: window side the bias table is built for.
        qkv_bias: bias of the qkv projection (True).

    ``forward(x, window, mask)``: x (B * nW, window^2, C) -> (B * nW, window^2, C); ``window`` may be
    smaller than ``window_size`` (the table is resized bicubically to it); mask (nW, window^2,
    window^2) additive or None.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.window_size = window_size
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        trunc_normal_(self.relative_position_bias_table, std=0.02)
        # Kept (persistent) for state-dict compatibility with the original; the forward derives the
        # index from the window size (plain cache below), so a checkpoint's value never matters.
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self._index_cache: dict[tuple[int, torch.device], torch.Tensor] = {}

    def bias_table(self, window: int) -> torch.Tensor:
        """The bias table for a ``window``-wide window: ((2w-1)^2, heads); the parameter itself at
        ``window_size``, bicubically resized (as the original loader) for a smaller window."""
        if window == self.window_size:
            return self.relative_position_bias_table
        return resize_bias_table(self.relative_position_bias_table, 2 * window - 1)

    def relative_position_bias(self, window: int) -> torch.Tensor:
        """Bias of every token pair of a ``window``-wide window: (heads, w*w, w*w)."""
        device = self.relative_position_bias_table.device
        index = self._index_cache.get((window, device))
        if index is None:
            with torch.inference_mode(False):  # a normal tensor even if first built under inference mode
                index = relative_position_index(window, device=device)
            if len(self._index_cache) >= _MAX_CACHED:
                self._index_cache.clear()
            self._index_cache[(window, device)] = index
        n = window * window
        bias = self.bias_table(window)[index.reshape(-1)].reshape(n, n, -1)
        return bias.permute(2, 0, 1).contiguous()

    def forward(self, x: torch.Tensor, window: int, mask: torch.Tensor | None = None) -> torch.Tensor:
        b_, n, c = x.shape
        qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B*nW, heads, N, head_dim)
        q = q * self.scale
        attn = q @ k.transpose(-2, -1)
        attn = attn + self.relative_position_bias(window).unsqueeze(0)
        if mask is not None:
            num_windows = mask.shape[0]
            attn = attn.view(-1, num_windows, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, n, n)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(b_, n, -1)
        return self.proj(x)


class SwinBlock(nn.Module):
    """Pre-norm (shifted-)window attention block: (B, C, H, W) -> (B, C, H, W).

    ``x = x + DropPath(gamma_1 * WMSA(LN2d(x)))``; ``x = x + DropPath(gamma_2 * MLP(LN2d(x)))``.
    Window and shift follow the per-forward rule in the module docstring (see
    :meth:`window_and_shift`).

    Args:
        dim: channels C.
        drop_path: stochastic-depth rate (shared by both branches).
        layer_scale_init_value: initial layer scale; ``gamma_1`` / ``gamma_2`` have shape (C,);
            none if <= 0.
        input_resolution: (H, W) of the stage map at the build size; sets the bias-table window
            (as the original) and the registered ``attn_mask`` buffer. None: no build size known
            (table for ``window_size``, no registered mask).
        stage: part of the block contract, unused.
        index: block index in the stage; odd blocks are the shifted ones.
        num_heads: heads of this stage.
        window_size: configured window (7).
        mlp_ratio: MLP expansion (4).
        qkv_bias: bias of the qkv projection (True).
    """

    @staticmethod
    def resize_checkpoint_tensor(key: str, value: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
        """A checkpoint's bias table at another window size, resized bicubically (key relative to the block)."""
        return swin_bias_table(key, value, shape)

    def __init__(
        self,
        dim: int,
        drop_path: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        input_resolution: tuple[int, int] | None = None,
        stage: int = 0,
        index: int = 0,
        num_heads: int = 1,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.input_resolution = tuple(input_resolution) if input_resolution is not None else None
        if self.input_resolution is not None and min(self.input_resolution) <= window_size:
            window_size = min(self.input_resolution)  # the original's construction-time rule
        self.window_size = window_size
        self.shift_size = window_size // 2 if index % 2 == 1 else 0  # used when the map > window

        self.norm1 = LayerNorm2d(dim, eps=1e-6)
        self.attn = WindowAttention(dim, num_heads=num_heads, window_size=window_size, qkv_bias=qkv_bias)
        self.gamma_1 = layer_scale(layer_scale_init_value, dim)
        self.gamma_2 = layer_scale(layer_scale_init_value, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = LayerNorm2d(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

        # The original registers the shift mask of the build size on shifted blocks and None on
        # the others (so unshifted blocks have no `attn_mask` key). Used only as a cache for maps
        # of exactly the build size; every other size builds its own mask (plain dict below).
        build_mask = None
        if self.input_resolution is not None:
            window, shift = self.window_and_shift(*self.input_resolution)
            if shift > 0:
                build_mask = self._build_mask(self.input_resolution, window, shift, None, torch.float32)
        self.register_buffer("attn_mask", build_mask)
        self._mask_cache: dict[tuple, torch.Tensor | None] = {}

    def window_and_shift(self, height: int, width: int) -> tuple[int, int]:
        """(window, shift) for an (unpadded) H x W map; see the module docstring."""
        side = min(height, width)
        if side <= self.window_size:
            return side, 0
        return self.window_size, self.shift_size

    @staticmethod
    def _build_mask(valid_hw: tuple[int, int], window: int, shift: int, device: torch.device | None,
                    dtype: torch.dtype) -> torch.Tensor | None:
        padded_hw = (_round_up(valid_hw[0], window), _round_up(valid_hw[1], window))
        return window_attention_mask(padded_hw, tuple(valid_hw), window, shift, device, dtype)

    def attention_mask(self, height: int, width: int, window: int, shift: int,
                       device: torch.device) -> torch.Tensor | None:
        """Additive mask for an H x W map (padded internally): (nW, w*w, w*w) or None."""
        if (height, width) == self.input_resolution and self.attn_mask is not None:
            return self.attn_mask.to(device)
        dtype = self.attn.relative_position_bias_table.dtype  # follows the model, like a buffer
        key = (height, width, window, shift, device, dtype)
        if key not in self._mask_cache:
            if len(self._mask_cache) >= _MAX_CACHED:
                self._mask_cache.clear()
            with torch.inference_mode(False):  # a normal tensor even if first built under inference mode
                self._mask_cache[key] = self._build_mask((height, width), window, shift, device, dtype)
        return self._mask_cache[key]

    def token_mixer(self, x: torch.Tensor) -> torch.Tensor:
        """(Shifted-)window attention on a normalised channels-last map: (B, H, W, C) -> (B, H, W, C)."""
        _, h, w, _ = x.shape
        window, shift = self.window_and_shift(h, w)
        hp, wp = _round_up(h, window), _round_up(w, window)
        if (hp, wp) != (h, w):
            x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
        if shift > 0:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        mask = self.attention_mask(h, w, window, shift, x.device)
        windows = self.attn(window_partition(x, window), window, mask)
        x = window_reverse(windows, window, hp, wp)
        if shift > 0:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        if (hp, wp) != (h, w):
            x = x[:, :h, :w]
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        y = self.token_mixer(self.norm1(x).permute(0, 2, 3, 1).contiguous())
        if self.gamma_1 is not None:
            y = self.gamma_1 * y
        x = shortcut + self.drop_path(y.permute(0, 3, 1, 2).contiguous())

        y = self.mlp(self.norm2(x).permute(0, 2, 3, 1).contiguous())
        if self.gamma_2 is not None:
            y = self.gamma_2 * y
        return x + self.drop_path(y.permute(0, 3, 1, 2).contiguous())
