"""Per-image random draws during an attack: `PerImageRandom` fills every random tensor shaped like a batch
of images row by row from each image's own `torch.Generator`, so an image's adversarial example does not
depend on its batch; `batch_seed` and `restart_seeds` derive the other seeds from the images' seeds."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..seeds import stream_id


# --- per-image random draws ----------------------------------------------------------------------
_IN_PLACE = frozenset(getattr(torch.Tensor, n) for n in (
    "uniform_", "normal_", "random_", "bernoulli_", "exponential_", "cauchy_", "log_normal_", "geometric_"))
_SIZED = frozenset((torch.rand, torch.randn, torch.randint))  # size argument -> new tensor
_LIKE = {torch.rand_like: torch.rand, torch.randn_like: torch.randn, torch.randint_like: torch.randint}
_FROM_TENSORS = frozenset((torch.bernoulli, torch.poisson, torch.normal))  # shape from tensor arguments
_SUBSETS = frozenset((torch.Tensor.__getitem__, torch.Tensor.index_select, torch.index_select))


def _split_size(args: tuple, kwargs: dict) -> tuple[tuple, tuple[int, ...]]:
    """(leading arguments, size) of a sized factory: rand(2, 3), rand((2, 3)), randint(0, 5, (2, 3)),
    normal(0., 1., size=(2, 3))."""
    if "size" in kwargs:
        return args, tuple(kwargs.pop("size"))
    if args and isinstance(args[-1], (tuple, list, torch.Size)):
        return args[:-1], tuple(args[-1])
    return (), tuple(args)


def _leading_index(index: Any) -> np.ndarray | slice | None:
    """The dim-0 part of a ``__getitem__`` index that keeps every other dim (x[idx], x[mask],
    x[idx, :], x[2:5]) as numpy ints/bools or a slice; None for anything else."""
    if isinstance(index, tuple):
        if not index or not all(i is Ellipsis or isinstance(i, slice) for i in index[1:]):
            return None
        index = index[0]
    if isinstance(index, slice):
        return index
    if isinstance(index, torch.Tensor) and index.dim() == 1 and not index.is_floating_point():
        index = index.bool() if index.dtype == torch.uint8 else index  # a uint8 index is a mask, as in torch
        return index.detach().cpu().numpy()
    if isinstance(index, list) and all(isinstance(i, (bool, int)) for i in index):
        return np.asarray(index)
    return None


class PerImageRandom(torch.overrides.TorchFunctionMode):
    """Torch function mode that draws random tensors shaped like a batch of images per image.

    ``image_seeds``: one int per image of the batch (B,); ``ndim``: the images' number of dims (4).
    A random draw (``uniform_``, ``normal_``, ``rand``, ``randn_like``, ``randint``, ``bernoulli``,
    ...) whose result has ``ndim`` dims and a leading size N that names a known set of images is
    filled row by row: row j from the CPU `torch.Generator` of image ``rows[j]`` (seeded once from
    its seed), then copied to the requested device. Row sets: the whole batch (N = B), and every
    image-shaped sub-batch cut from a known one by indexing along dim 0 (``x[idx]``, ``x[mask]``,
    ``index_select``); the latest set of each size is used, which is exact for torchattacks, whose
    draws follow the cut they belong to. Each image's generator advances only with its own draws,
    so they do not depend on the other images of the batch. Other draws (wrong number of dims, an
    unknown size, an explicit generator, ``out=``) fall through to torch's global RNG.

    `unobserved` wraps the model so its forward runs without the mode (no overhead there, and
    no sub-batches are inferred from the model's own indexing).
    """

    def __init__(self, image_seeds: Sequence[int], ndim: int) -> None:
        super().__init__()
        self.generators = [torch.Generator().manual_seed(int(s)) for s in image_seeds]
        self.ndim = ndim
        self.rows: dict[int, np.ndarray] = {len(self.generators): np.arange(len(self.generators))}
        self.paused = 0

    def unobserved(self, net: nn.Module) -> nn.Module:
        """``net`` with this mode paused during its forward."""
        return _Unobserved(net, self)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if self.paused or "out" in kwargs or kwargs.get("generator") is not None:
            return func(*args, **kwargs)
        kwargs.pop("generator", None)
        if func in _IN_PLACE:  # handlers get a copy of kwargs: NotImplemented falls through with the original
            out = self._in_place(func, args, dict(kwargs))
        elif func in _SIZED or (func is torch.normal and not any(isinstance(a, torch.Tensor) for a in args)):
            out = self._sized(func, args, dict(kwargs))
        elif func in _LIKE:
            out = self._like(_LIKE[func], args, dict(kwargs))
        elif func in _FROM_TENSORS:
            out = self._from_tensors(func, args, dict(kwargs))
        else:
            out = func(*args, **kwargs)
            if func in _SUBSETS:
                self._note_subset(func, args, kwargs, out)
        return func(*args, **kwargs) if out is NotImplemented else out

    # which images a draw belongs to
    def _rows_for(self, shape: Sequence[int]) -> np.ndarray | None:
        return self.rows.get(int(shape[0])) if len(shape) == self.ndim else None

    def _note_subset(self, func, args: tuple, kwargs: dict, out: Any) -> None:
        source = args[0]
        if not (isinstance(source, torch.Tensor) and isinstance(out, torch.Tensor)
                and source.dim() == self.ndim == out.dim()):
            return
        rows = self._rows_for(source.shape)
        if func is torch.Tensor.__getitem__:
            index = _leading_index(args[1])
        else:  # index_select(input, dim, index)
            bound = {**dict(zip(("dim", "index"), args[1:])), **kwargs}
            index = _leading_index(bound.get("index")) if bound.get("dim") == 0 else None
        if rows is None or index is None:
            return
        try:
            picked = rows[index]
        except IndexError:
            return
        if picked.shape == (out.shape[0],):
            self.rows[out.shape[0]] = picked

    # the draws
    def _stack(self, rows: np.ndarray, draw) -> torch.Tensor:
        """Stack of ``draw(j, generator of image rows[j])`` over rows j (on CPU)."""
        return torch.stack([draw(j, self.generators[r]) for j, r in enumerate(rows)])

    def _in_place(self, func, args: tuple, kwargs: dict):
        target = args[0]
        rows = self._rows_for(target.shape)
        if rows is None:
            return NotImplemented

        def draw(j: int, generator: torch.Generator) -> torch.Tensor:
            row = torch.empty(target.shape[1:], dtype=target.dtype)
            params = [a.expand_as(target)[j].cpu() if isinstance(a, torch.Tensor) else a for a in args[1:]]
            return func(row, *params, generator=generator, **kwargs)

        return target.copy_(self._stack(rows, draw))

    def _sized(self, func, args: tuple, kwargs: dict):
        lead, size = _split_size(args, kwargs)
        rows = self._rows_for(size)
        if rows is None:
            return NotImplemented
        device, grad = kwargs.pop("device", None), kwargs.pop("requires_grad", False)
        kwargs.pop("pin_memory", None)
        out = self._stack(rows, lambda j, g: func(*lead, size[1:], generator=g, **kwargs))
        return out.to(torch.get_default_device() if device is None else device).requires_grad_(grad)

    def _like(self, factory, args: tuple, kwargs: dict):
        source = args[0]
        rows = self._rows_for(source.shape)
        if rows is None:
            return NotImplemented
        bounds = tuple(args[1:]) + tuple(kwargs.pop(k) for k in ("low", "high") if k in kwargs)
        dtype = kwargs.get("dtype") or source.dtype
        device = kwargs.get("device") or source.device
        out = self._stack(rows, lambda j, g: factory(*bounds, tuple(source.shape[1:]), generator=g, dtype=dtype))
        return out.to(device).requires_grad_(bool(kwargs.get("requires_grad", False)))

    def _from_tensors(self, func, args: tuple, kwargs: dict):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        shape = torch.broadcast_shapes(*(t.shape for t in tensors))
        rows = self._rows_for(shape)
        if rows is None:
            return NotImplemented

        def draw(j: int, generator: torch.Generator) -> torch.Tensor:
            params = [a.expand(shape)[j].cpu() if isinstance(a, torch.Tensor) else a for a in args]
            return func(*params, generator=generator, **kwargs)

        return self._stack(rows, draw).to(tensors[0].device)


class _Unobserved(nn.Module):
    """A model whose forward runs with a `PerImageRandom` mode paused."""

    def __init__(self, net: nn.Module, mode: PerImageRandom) -> None:
        super().__init__()
        self.net = net
        self.mode = mode
        self.train(net.training)  # torchattacks restores the wrapper's mode, hence the net's, afterwards

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.mode.paused += 1
        try:
            return self.net(x)
        finally:
            self.mode.paused -= 1


def batch_seed(image_seeds: Sequence[int]) -> int:
    """63-bit seed of a whole batch (for draws not made per image): a hash of all its image seeds."""
    return stream_id(0, "adversarial-batch", *(int(s) for s in image_seeds)) >> 1


def restart_seeds(image_seeds: Sequence[int], restart: int) -> list[int]:
    """Per-image seeds of rerun restart ``restart`` >= 1, derived from each image's own seed."""
    return [stream_id(int(s), "restart", restart) >> 1 for s in image_seeds]
