"""A training split decoded once and held in memory (`DecodedImages`, `decode`), the memory cap, and the
seeded train-time augmentation (`augment`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import UsageError

if TYPE_CHECKING:
    import torch

CACHE_LIMIT_GIB = 8  # decoded images (both splits) held in memory at most


@dataclass
class DecodedImages:
    """One split held in memory: ``pixels`` (N, 3, S, S), uint8 0..255 (8-bit sources, exact) or float32
    in [0, 1]; ``labels`` (N,) int64; ``skipped`` the files that could not be read."""

    pixels: "torch.Tensor"
    labels: "torch.Tensor"
    skipped: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, index: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
        """Images (B, 3, S, S) float32 in [0, 1] and labels (B,) for positions ``index`` (B,)."""
        import torch

        index = index.to(self.pixels.device)
        x = self.pixels[index]
        return (x.float().div_(255) if x.dtype == torch.uint8 else x), self.labels[index]


def decode(source: Any, input_size: int, workers: int, device: "torch.device", quiet: bool, what: str) -> DecodedImages:
    """Decode every image of ``source`` once with the evaluation transform and keep it on ``device``."""
    import torch
    from tqdm.auto import tqdm

    from ..data import eval_transform, make_loader

    loader = make_loader(source, batch_size=64, transform=eval_transform(input_size), num_workers=workers)
    chunks, labels, exact = [], [], True
    with tqdm(total=len(source), desc=f"decoding {what} images", unit="img", disable=quiet, leave=False) as bar:
        for batch in loader:
            scaled = batch.images * 255
            whole = scaled.round()
            if exact and float((scaled - whole).abs().max()) < 1e-3:
                chunks.append(whole.to(torch.uint8))
            else:
                exact = False
                chunks.append(batch.images)
            labels.append(batch.labels)
            bar.update(len(batch.labels))
    if not chunks:
        raise UsageError(f"{what} images: none of the {len(source)} files could be read ({loader.skip_summary()})")
    if not exact:
        chunks = [c.float().div_(255) if c.dtype == torch.uint8 else c for c in chunks]
    pixels = torch.cat(chunks).to(device)
    return DecodedImages(pixels, torch.cat(labels).to(device), [s.path for s in loader.skipped])


def check_memory(count: int, input_size: int) -> None:
    """Refuse a decoded set over `CACHE_LIMIT_GIB` (at one byte per pixel channel)."""
    gib = count * 3 * input_size * input_size / 2**30
    if gib > CACHE_LIMIT_GIB:
        raise UsageError(f"{count} images at {input_size} px take {gib:.1f} GiB decoded, over the {CACHE_LIMIT_GIB} "
                         "GiB that training holds in memory: lower --num-images or --input-size")


def augment(x: "torch.Tensor", mode: str, generator: "torch.Generator") -> "torch.Tensor":
    """Seeded augmentation of a batch (B, 3, S, S): horizontal flips (p = 0.5) and, for ``flip-crop``,
    a random S x S crop of the batch padded by S // 8 pixels with reflection; draws from ``generator``."""
    import torch
    import torch.nn.functional as F

    if mode == "none":
        return x
    b, _, h, w = x.shape
    flip = (torch.rand(b, generator=generator) < 0.5).to(x.device).view(b, 1, 1, 1)
    x = torch.where(flip, x.flip(-1), x)
    if mode == "flip-crop":
        pad = max(1, min(h, w) // 8)
        offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator).to(x.device)
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        rows = offsets[:, :1] + torch.arange(h, device=x.device)  # (B, H)
        cols = offsets[:, 1:] + torch.arange(w, device=x.device)  # (B, W)
        batch = torch.arange(b, device=x.device).view(b, 1, 1)
        x = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C): the indexed dims come first
        x = x.permute(0, 3, 1, 2).contiguous()
    return x
