"""Numeric precision of a run: ``--precision fp32|tf32|bf16|fp16``, ``--channels-last``, ``--compile``.

* ``fp32`` (default): strict float32; TF32 tensor-core matmuls and convolutions are switched off,
  so results match the references.
* ``tf32``: float32 tensors, TF32 matmuls and convolutions on CUDA (10-bit mantissa products);
  nothing changes on the CPU (the run says so in a note).
* ``bf16`` / ``fp16``: the model's forward runs under ``torch.autocast`` (matmuls and convolutions
  in the low-precision type, reductions and softmax in float32). Inputs stay float32, so
  gradients w.r.t. the inputs (ERF maps, attack steps, attributions) are float32 tensors, and
  the model's outputs (logits, stage maps) are cast back to float32 before any probe sees
  them. fp16 needs CUDA; bf16 works on the CPU too.
* ``channels_last``: weights and inputs in NHWC memory order (faster convolutions on GPUs).
* ``compile``: the model's forward passes go through ``torch.compile``.

`apply_precision` makes a built model honour a `Precision` in place by wrapping the methods
every analysis calls (``forward``, ``forward_stages`` of the unified models and
``forward_intermediates`` of timm models), so ``net(x)``, ``net.stages(x)`` and
``stage_outputs(net.model, ...)`` all follow it while ``isinstance`` checks still see the model's
own class. The default (strict fp32, no layout change, no compile) leaves the model untouched.

The TF32 flags are process-wide: `numeric_flags` sets them for a run and gives the caller's back.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator

from ..errors import UsageError

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
#: model methods that return the tensors analyses read (wrapped when present)
WRAPPED_METHODS = ("forward", "forward_stages", "forward_intermediates")


@dataclass(frozen=True)
class Precision:
    """How a run computes: ``mode`` one of `PRECISIONS`, NHWC layout, torch.compile."""

    mode: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    @property
    def is_default(self) -> bool:
        return self == Precision()

    @property
    def autocast_dtype(self) -> Any:
        """torch.bfloat16 / torch.float16 for the autocast modes, else None."""
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.mode)

    def key(self) -> dict[str, Any]:
        """Cache key / manifest entry: every choice that changes numbers."""
        return asdict(self)

    def autocast(self, device_type: str) -> Any:
        """Context for a forward pass: autocast to the low-precision type, or nothing."""
        import torch

        dtype = self.autocast_dtype
        return torch.autocast(device_type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def resolve_precision(mode: str, channels_last: bool, compile: bool, device: Any) -> tuple[Precision, list[str]]:
    """Check the choice against ``device`` (torch.device): one-line UsageError for what cannot run,
    notes (for the summary and manifest) for what changes nothing there."""
    import torch

    if mode not in PRECISIONS:
        raise UsageError(f"--precision {mode!r} is not one of {', '.join(PRECISIONS)}")
    notes = []
    if mode == "fp16" and device.type != "cuda":
        raise UsageError("--precision fp16 needs a CUDA device (float16 autocast is a GPU format): use --precision "
                         "bf16 on the CPU, or --device cuda")
    if mode == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support; use "
                         "--precision fp16 (or tf32)")
    if mode == "tf32" and device.type != "cuda":
        notes.append("--precision tf32 changes nothing on the CPU (TF32 is a CUDA tensor-core format): the run is "
                     "strict fp32")
    if compile and not hasattr(torch, "compile"):
        raise UsageError("--compile needs torch.compile (torch >= 2.0): upgrade torch or drop --compile")
    return Precision(mode, channels_last, compile), notes


def set_matmul_precision(precision: Precision) -> None:
    """TF32 matmuls and cuDNN convolutions on for ``tf32`` only, off otherwise (strict float32
    everywhere float32 is computed, autocast modes included). Process-wide: use `numeric_flags`
    around a run, which restores the caller's flags."""
    import torch

    allow = precision.mode == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow


def denormals_flushed() -> bool:
    """Whether this thread's CPU flushes subnormal float32 values to zero (`torch.set_flush_denormal`;
    torch has no getter, so it is probed: 1e-39 is subnormal in float32)."""
    import torch

    return float(torch.tensor([1e-39]).mul(1.0).item()) == 0.0


@contextlib.contextmanager
def numeric_flags(precision: Precision | None) -> Iterator[None]:
    """Run a probe inside this: TF32 on or off per ``precision`` (`set_matmul_precision`; None leaves
    them), and a probe may flush denormals (erf); on exit the caller's TF32 flags, float32 matmul
    precision and flush-denormal mode (of the calling thread, the only one `torch.set_flush_denormal`
    changes) are restored, so a notebook is left as it was."""
    import torch

    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    matmul_precision, flushed = torch.get_float32_matmul_precision(), denormals_flushed()
    try:
        if precision is not None:
            set_matmul_precision(precision)
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
        torch.set_float32_matmul_precision(matmul_precision)
        torch.set_flush_denormal(flushed)


def to_float32(value: Any) -> Any:
    """``value`` with every low-precision floating tensor (in lists, tuples, dicts) cast to float32."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() and value.dtype != torch.float32 \
            and value.dtype != torch.float64 else value
    if isinstance(value, (list, tuple)):
        items = [to_float32(v) for v in value]
        return type(value)(items) if not hasattr(value, "_fields") else type(value)(*items)
    if isinstance(value, dict):
        return {k: to_float32(v) for k, v in value.items()}
    return value


def _wrap(method: Callable[..., Any], precision: Precision, device_type: str) -> Callable[..., Any]:
    """``method`` running under the precision's autocast, NHWC inputs when asked, float32 outputs;
    compiled when asked."""
    import torch

    def run(x: Any, *args: Any, **kwargs: Any) -> Any:
        if precision.channels_last and isinstance(x, torch.Tensor) and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with precision.autocast(device_type):
            return method(x, *args, **kwargs)

    inner = torch.compile(run) if precision.compile else run

    @functools.wraps(method)
    def wrapped(x: Any, *args: Any, **kwargs: Any) -> Any:
        return to_float32(inner(x, *args, **kwargs))

    return wrapped


def apply_precision(model: Any, precision: Precision, device_type: str) -> Any:
    """Make ``model`` (an nn.Module, already on its device) follow ``precision`` in place and
    return it: NHWC weights, and its `WRAPPED_METHODS` wrapped (see module docstring). The
    default precision returns the model untouched."""
    import torch

    if precision.is_default or getattr(model, "_stm_probe_precision", None) == precision:
        return model
    if precision.channels_last:
        model.to(memory_format=torch.channels_last)
    if precision.autocast_dtype is not None or precision.channels_last or precision.compile:
        for name in WRAPPED_METHODS:
            method = getattr(model, name, None)
            if callable(method):
                object.__setattr__(model, name, _wrap(method, precision, device_type))
    object.__setattr__(model, "_stm_probe_precision", precision)
    return model
