"""Per-image metrics of the invariance sweep: predictions of a view against a reference
(`prediction_metrics`) and the per-stage shift equivariance errors over the whole map and its interior
(`equivariance_errors`, `interior_mask`, `stage_strides`)."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..views import roll
from .kinds import DEFAULT_INTERIOR_MARGIN


def prediction_metrics(reference: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image metrics of variant ``logits`` (B, K) against ``reference`` logits (B, K).

    top1/top5: 100 if the label is in the top 1/5 (NaN where the label is -1); consistency: 100
    if the top-1 equals the reference's; soft_ce: -sum softmax(ref) log_softmax(var) (nats);
    kl: KL(softmax(ref) || softmax(var)) (nats). Values (B,) float64 on the CPU.
    """
    reference, logits = reference.double(), logits.double()
    ref_logp, logp = reference.log_softmax(-1), logits.log_softmax(-1)
    ref_p = ref_logp.exp()
    soft_ce = -(ref_p * logp).sum(-1)
    kl = (ref_p * (ref_logp - logp)).sum(-1)
    consistency = (logits.argmax(-1) == reference.argmax(-1)).double() * 100
    topk = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
    hits = topk == labels[:, None]
    known = labels >= 0
    nan = torch.full_like(soft_ce, float("nan"))
    top1 = torch.where(known, hits[:, 0].double() * 100, nan)
    top5 = torch.where(known, hits.any(-1).double() * 100, nan)
    values = {"top1": top1, "top5": top5, "consistency": consistency, "soft_ce": soft_ce, "kl": kl}
    return {k: v.cpu() for k, v in values.items()}


def margin_cells(stride: int, margin: int = DEFAULT_INTERIOR_MARGIN) -> int:
    """Interior margin of a stage in map cells: ``ceil(margin / stride)`` for a margin in input px."""
    return int(math.ceil(margin / stride))


def interior_mask(size: tuple[int, int], seams: torch.Tensor, margin: int) -> torch.Tensor:
    """Cells of an (h, w) map at least ``margin`` cells from every map border and from the wrap
    seam of a circular shift by ``seams`` (B, 2) cells: (B, h, w) bool.

    After ``roll(x, s)`` the rows [0, s) come from the bottom of x, so f(roll(x)) and roll(f(x))
    differ, for a network whose cells see ``margin`` cells either side, only within ``margin`` of
    the map borders (zero padding of f(roll(x))) and of row s (the seam, where roll(f(x)) has
    f(x)'s borders); the same along columns.
    """
    keep = []
    for axis, length in enumerate(size):
        i = torch.arange(length, device=seams.device)
        border = (i >= margin) & (i < length - margin)  # (L,)
        dist = (i[None, :] - seams[:, axis:axis + 1]) % length  # (B, L) cells after the seam
        keep.append(border[None, :] & (dist >= margin) & (dist < length - margin))
    return keep[0][:, :, None] & keep[1][:, None, :]


def _relative_error(out: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """||out - target|| / ||target|| per image over all channels and the ``mask`` (B, h, w) cells."""
    diff, ref = (out - target).double(), target.double()
    if mask is not None:
        diff, ref = diff * mask[:, None], ref * mask[:, None]
    return (diff.flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1).clamp(min=1e-12)).cpu()


def equivariance_errors(shifted: Sequence[torch.Tensor], reference: Sequence[torch.Tensor], shifts: torch.Tensor,
                        strides: Sequence[int], margin: int = DEFAULT_INTERIOR_MARGIN
                        ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Relative errors ||f(roll(x, s)) - roll(f(x), s / r)|| / ||f(x)|| per image, for each stage.

    shifted / reference: stage maps (B, C, h, w) of the rolled and the plain input; shifts (B, 2)
    in input px, multiples of every stage's stride r (input px per map cell). Returns per stage
    (whole map, interior) as (B,) float64 CPU tensors, 0 = perfectly equivariant; the interior
    (`interior_mask` with ``margin_cells(r, margin)``) is None where a map has at most 4 margins
    of cells along an axis, so that some seam position could leave no interior cell.
    """
    errors = []
    for out, ref, stride in zip(shifted, reference, strides):
        if bool((shifts % stride).any()):
            raise ValueError(f"shifts {shifts.tolist()} are not multiples of the stage stride {stride}")
        cells = shifts // stride
        target = roll(ref, cells)
        whole = _relative_error(out, target)
        m = margin_cells(stride, margin)
        interior = None
        if min(out.shape[-2:]) > 4 * m:
            interior = _relative_error(out, target, interior_mask(tuple(out.shape[-2:]), cells, m))
        errors.append((whole, interior))
    return errors


def stage_strides(stage_maps: Sequence[torch.Tensor], input_size: int, nominal: Sequence[int] = ()) -> list[int]:
    """Input px per map cell of each stage map (B, C, h, w) of an ``input_size`` square input; 0
    (not measured) where the map does not tile the input evenly or, given the model's ``nominal``
    strides (feature_info reductions), where the tiling is not one of them (e.g. a padded map)."""
    strides = []
    for feat in stage_maps:
        h, w = feat.shape[-2:]
        stride = input_size // h
        even = h * stride == input_size and w * stride == input_size
        strides.append(stride if even and (not nominal or stride in nominal) else 0)
    return strides
