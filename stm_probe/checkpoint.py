"""Safe checkpoint loading: weights only, never code.

Files are recognised by their content, whatever their suffix: a torch.save zip or legacy pickle
is read with ``torch.load(weights_only=True)`` (a pickle that would build arbitrary Python
objects is refused before anything runs), a safetensors file with safetensors; anything else is
refused with a one-line reason. Layouts: ``{'model': sd}``, ``{'state_dict': sd}``,
``{'model_ema': sd}``, a raw state dict, and ``module.`` / ``_orig_mod.`` prefixes.
Size-dependent tables are resized as the original loader does, and buffers the model computes
itself are taken from the model, not the file.

This module knows nothing of the model registry: `load_checkpoint` takes an optional ``guess``
callable (state dict -> model name) for its error messages; `stm_probe.models.registry` passes one.
"""
from __future__ import annotations

import math
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .errors import UsageError
from .files import file_sha256
from .options import check_checkpoint_file
from .models import resize

# keys looked for, in order, when the user names none
DEFAULT_KEYS = ("model", "state_dict", "model_ema")
# buffers the model computes from sizes; values in a checkpoint are ignored (docs/protocols.md §2)
COMPUTED_BUFFERS = ("relative_position_index", "attn_mask")
_PREFIXES = ("module.", "_orig_mod.")

# a state dict -> the name of the model it most likely belongs to (or None)
GuessFn = Callable[[Mapping[str, torch.Tensor]], str | None]


# --- reading ------------------------------------------------------------------------------------
def checkpoint_format(path: str | Path) -> str:
    """What a checkpoint file is, from its first bytes: 'pytorch' (torch.save zip),
    'pytorch-legacy' (torch.save pickle, the format before PyTorch 1.6) or 'safetensors'.

    UsageError (one line) for a missing path, a directory, an empty file or any other content.
    """
    path = Path(path)
    check_checkpoint_file(path)
    size = path.stat().st_size
    if size == 0:
        raise UsageError(f"checkpoint '{path}' is empty (0 bytes): re-download it or check the path")
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError as exc:
        raise UsageError(f"checkpoint '{path}' cannot be read ({exc.strerror or type(exc).__name__}): check its "
                         "permissions") from None
    if head.startswith(b"PK"):
        return "pytorch"
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle protocol 2-5 opcode
        return "pytorch-legacy"
    if len(head) > 8 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size:
        return "safetensors"  # u64 little-endian header length, then the JSON header
    raise UsageError(f"checkpoint '{path}' is not a PyTorch or safetensors file ({_describe(head)}): "
                     "check the path given to --checkpoint")


def _describe(head: bytes) -> str:
    """A few words on what a file that is not a checkpoint looks like, from its first bytes."""
    if head.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer: fetch the weights with `git lfs pull`"
    if head.startswith(b"\x1f\x8b"):
        return "it is gzip-compressed: decompress it first"
    if head.startswith(b"\x89HDF"):
        return "it is an HDF5 file, e.g. Keras/TensorFlow weights"
    if head.startswith(b"\x93NUMPY"):
        return "it is a NumPy array file"
    if head.lstrip()[:1] == b"<":
        return "it is an HTML/XML page, e.g. a failed download"
    if all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return "it is a text file"
    return f"it starts with bytes {head[:8].hex(' ')}"


def read_checkpoint(path: str | Path) -> Mapping[str, Any]:
    """Read a checkpoint file without running code, by its content (see `checkpoint_format`).

    UsageError with one line on any failure: a pickle holding objects that safe loading refuses
    ("could run code"), a truncated or damaged file, a zip archive that is not a checkpoint, a
    safetensors file that does not parse.
    """
    path = Path(path)
    kind = checkpoint_format(path)
    if kind == "safetensors":
        return _read_safetensors(path)
    try:
        with open(path, "rb") as handle, warnings.catch_warnings():  # a handle: torch.load picks a reader by suffix
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # the refusal below says it all
            return torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = re.search(r"GLOBAL (\S+)", str(exc))
        if unsafe:
            raise UsageError(
                f"checkpoint '{path}' holds Python objects that safe loading refuses ({unsafe.group(1)}): it could "
                "run code; re-save only the state dict (torch.save(model.state_dict(), ...)) or use safetensors"
            ) from None
        reason = _weights_only_reason(exc)
        raise UsageError(f"checkpoint '{path}' is a pickle that torch.load cannot read safely ({reason}): "
                         "re-save it with torch.save(model.state_dict(), ...) or as safetensors") from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError) as exc:
        raise UsageError(f"checkpoint '{path}' {_damage(path, kind, exc)}") from None


def peek_trained(path: str | Path) -> dict[str, Any] | None:
    """How a `stm-probe train` checkpoint was trained (`stm_probe.label_spaces.trained_summary`), read
    without loading its tensors (memory-mapped); None for any other file or one that cannot be read
    (loading it later gives the one-line error)."""
    from .label_spaces import trained_summary

    try:
        if checkpoint_format(path) != "pytorch":
            return None
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except (UsageError, OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError):
        return None
    return trained_summary(obj)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise UsageError(f"checkpoint '{path}' is not a readable safetensors file ({_first_line(exc)}): "
                         "re-download or re-export it") from None


def _damage(path: Path, kind: str, exc: BaseException) -> str:
    """Why torch.load failed on a file that looked like a PyTorch checkpoint, and the fix."""
    if kind == "pytorch" and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if not any(n.endswith("data.pkl") for n in names):
            listing = ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
            return f"is a zip archive, not a PyTorch checkpoint (it holds {listing}): unpack it and give the weights file"
        what = "a damaged PyTorch file"
    else:
        what = f"a truncated or damaged PyTorch file ({'zip' if kind == 'pytorch' else 'legacy pickle'} format)"
    return f"is {what} ({_first_line(exc)}): re-download it or check the path"


def _weights_only_reason(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = next((line for line in lines if line.startswith("Unsupported")), None)
    return detail or _first_line(exc)


def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception's first line (at most 160 characters), for one-line messages."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    sentence = lines[0].split(". ", 1)[0].rstrip(".")
    return sentence[:160]


def select_state_dict(obj: Mapping[str, Any], path: str | Path, key: str | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """Pick the state dict inside a checkpoint; returns it (prefixes stripped) and the key used.

    ``key`` overrides the search. A file named ``*-ema.pth`` by the original trainer holds the
    plain weights under 'model' and the EMA weights under 'model_ema': with both present and no
    key given, the user must choose (UsageError naming both options).
    """
    if not isinstance(obj, Mapping):
        raise UsageError(f"checkpoint '{path}' holds a {type(obj).__name__}, not a state dict: re-save model.state_dict()")
    if key is not None:
        if key not in obj:
            raise UsageError(f"checkpoint '{path}' has no key '{key}' (it has: {', '.join(map(str, list(obj)[:8]))}): "
                             "fix --checkpoint-key")
        chosen, used = obj[key], key
    else:
        stem = Path(path).stem
        if stem.endswith("-ema") and "model" in obj and "model_ema" in obj:
            raise UsageError(f"checkpoint '{path}' is an original '-ema' file: 'model' holds the non-EMA weights and "
                             "'model_ema' the EMA weights; choose with --checkpoint-key model_ema or --checkpoint-key model")
        used = next((k for k in DEFAULT_KEYS if isinstance(obj.get(k), Mapping)), "")
        chosen = obj[used] if used else obj
    if not isinstance(chosen, Mapping) or not all(isinstance(v, torch.Tensor) for v in chosen.values()):
        raise UsageError(f"checkpoint '{path}' entry '{used or '<root>'}' is not a state dict of tensors: "
                         "name the right entry with --checkpoint-key")
    return {_strip_prefixes(k): v for k, v in chosen.items()}, used or "<root>"


def checkpoint_num_classes(obj: Mapping[str, Any], path: str | Path, key: str | None = None,
                           classifiers: tuple[str, ...] = ()) -> int | None:
    """The class count a checkpoint was trained for, or None when it does not say.

    Its top-level ``'num_classes'`` entry (written by `stm-probe train`) if it is a positive
    integer; else the rows of the first ``<classifier>.weight`` (2-D: (classes, features)) found
    in the chosen state dict, ``classifiers`` being the model's classifier module names (e.g.
    ``('head',)``, ``('fc',)``, ``('head.fc',)``). A file `select_state_dict` would refuse gives
    None here; loading it then raises the one-line error.
    """
    entry = obj.get("num_classes") if isinstance(obj, Mapping) else None
    if isinstance(entry, int) and not isinstance(entry, bool) and entry > 0:
        return entry
    try:
        state_dict, _ = select_state_dict(obj, path, key)
    except UsageError:
        return None
    for name in classifiers:
        weight = state_dict.get(f"{name}.weight")
        if isinstance(weight, torch.Tensor) and weight.dim() == 2 and weight.shape[0] > 0:
            return int(weight.shape[0])
    return None


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


# --- fitting a state dict to a model ----------------------------------------------------------------
def is_computed_buffer(key: str) -> bool:
    """True for buffers the model computes from sizes (Swin relative_position_index, attn_mask)."""
    return key.rsplit(".", 1)[-1] in COMPUTED_BUFFERS


def adapt_state_dict(state_dict: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                     model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Fit a checkpoint made at another input size, as the original loader does.

    Drops computed buffers (relative_position_index, attn_mask: the model's own are kept) and
    resizes the size-dependent tables whose shapes differ from the model's: a tensor owned by a
    block whose class has ``resize_checkpoint_tensor(key, value, shape)`` is resized by it (Swin
    bias tables bicubic, halo relative tables linear, PVT position embeddings bilinear; see
    `stm_probe.models.resize`); other models' tables by the same rules, matched by key ending.
    ``target``: the model's own state dict; ``model``: the model (for its blocks' resizers).
    """
    resizers = _block_resizers(model)
    adapted: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if is_computed_buffer(key):
            continue
        want = target.get(key)
        if want is not None and want.shape != value.shape and value.dim() == want.dim():
            owner = max((p for p in resizers if key.startswith(p)), key=len, default=None)
            if owner is None:
                value = _resize_table(key, value, want.shape)
            else:
                resized = resizers[owner](key[len(owner):], value, want.shape)
                value = value if resized is None else resized
        adapted[key] = value
    for key, value in target.items():
        if is_computed_buffer(key):
            adapted[key] = value
    return adapted


def _resize_table(key: str, value: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Resize one size-dependent table of a model without block resizers (a timm Swin, say) by its
    key's ending, with the unified blocks' rules; other tensors are returned unchanged."""
    for rule in (resize.swin_bias_table, resize.halo_relative_table, resize.pvt_pos_embed):
        resized = rule(key, value, shape)
        if resized is not None:
            return resized
    return value


def _block_resizers(model: nn.Module | None) -> dict[str, Callable[..., Any]]:
    """{module name + '.': its class's ``resize_checkpoint_tensor``} for the blocks of ``model`` that have one."""
    if model is None:
        return {}
    return {f"{name}.": type(module).resize_checkpoint_tensor for name, module in model.named_modules()
            if name and hasattr(type(module), "resize_checkpoint_tensor")}


def check_fit(state_dict: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> list[str]:
    """Problems (missing, unexpected, shape) between a state dict and the model's (``target``)."""
    missing = [k for k in target if k not in state_dict]
    unexpected = [k for k in state_dict if k not in target]
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
              for k, v in target.items() if k in state_dict and state_dict[k].shape != v.shape]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{label}: {', '.join(items[:3])}{more}")
    return problems


def loaded_fraction(fitting: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> float:
    """Share of the model's weights, by element count, that ``fitting`` provides (0..1).

    Counted over the floating-point entries of the model's state dict (parameters and running
    statistics), leaving out the buffers the model computes itself. 1.0 for a model without any.
    """
    counted = {k: v.numel() for k, v in target.items() if v.is_floating_point() and not is_computed_buffer(k)}
    total = sum(counted.values())
    return sum(n for k, n in counted.items() if k in fitting) / total if total else 1.0


def check_finite(state_dict: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """UsageError naming the first floating tensor holding NaN/Inf, with counts; nothing if all finite."""
    bad = [(k, int((~torch.isfinite(v)).sum())) for k, v in state_dict.items()
           if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        key, count = bad[0]
        others = f" and {len(bad) - 1} more tensor(s)" if len(bad) > 1 else ""
        raise UsageError(f"checkpoint '{path}' holds non-finite weights: '{key}' has {count} NaN/Inf value(s) of "
                         f"{state_dict[key].numel()}{others}: the file is corrupt or from a diverged run; "
                         "use another checkpoint")


def _percent(fraction: float) -> str:
    """A fraction as a whole percentage, rounded down (so below 100% never shows as 100%)."""
    if 0 < fraction < 0.01:
        return "<1%"
    return f"{math.floor(fraction * 100 + 1e-9)}%"


def load_checkpoint(
    model: nn.Module,
    path: str | Path,
    key: str | None = None,
    strict: bool = True,
    min_loaded: float = 0.5,
    guess: GuessFn | None = None,
    contents: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Load weights from ``path`` into ``model`` safely; returns the record for the run manifest.

    Args:
        model: the model to fill (its ``stm_probe_spec.name``, if any, names it in messages).
        path: a torch.save zip / legacy pickle or a safetensors file (recognised by content).
        key: entry holding the state dict (default: model, state_dict, model_ema, the root).
        strict: refuse (UsageError, one line: the first missing / unexpected / mis-shaped keys
            and the model the file most likely belongs to) when keys or shapes do not fit.
            With ``strict=False`` what fits is loaded.
        min_loaded: with ``strict=False``, refuse when the file provides less than this share of
            the model's weights (by element count, see `loaded_fraction`); 0 loads anything.
        guess: state dict -> the name of the model it most likely belongs to, for the messages.
        contents: the file as `read_checkpoint` returned it, when the caller has read it already
            (it is not read twice).

    Any NaN/Inf in a tensor that would be loaded is refused (`check_finite`). The record holds
    ``weights`` ('checkpoint', or 'checkpoint (non-strict, 37% loaded)' below 100%), the path,
    sha256, key used, file format, ``strict``, ``loaded_fraction`` and the skipped problems.
    """
    state_dict, used = select_state_dict(read_checkpoint(path) if contents is None else contents, path, key)
    name = getattr(getattr(model, "stm_probe_spec", None), "name", type(model).__name__)
    target = model.state_dict()
    adapted = adapt_state_dict(state_dict, target, model)
    problems = check_fit(adapted, target)
    if problems and strict:
        owner = guess(state_dict) if guess is not None else None
        hint = f"it looks like a checkpoint of {owner} (use --model {owner})" if owner and owner != name else \
            "pass --non-strict to load what fits"
        raise UsageError(f"checkpoint '{path}' does not fit {name}: {'; '.join(problems)}; {hint}")
    fitting = {k: v for k, v in adapted.items() if k in target and v.shape == target[k].shape}
    check_finite({k: v for k, v in fitting.items() if not is_computed_buffer(k)}, path)
    fraction = loaded_fraction(fitting, target)
    if fraction < min_loaded:
        owner = guess(state_dict) if guess is not None else None
        what = (f"it is not this model's checkpoint; use --model {owner}" if owner and owner != name else
                "it is not a checkpoint of this model; check the file")
        raise UsageError(f"only {_percent(fraction)} of {name}'s parameters are in '{path}': {what}, "
                         "or --min-loaded 0 to run anyway")
    model.load_state_dict(fitting, strict=False)
    label = "checkpoint" if fraction >= 1.0 else f"checkpoint (non-strict, {_percent(fraction)} loaded)"
    return {
        "weights": label, "checkpoint": str(path), "sha256": file_sha256(path), "checkpoint_key": used,
        "checkpoint_format": checkpoint_format(path), "strict": strict, "loaded_fraction": round(fraction, 6),
        "skipped_problems": problems,
    }
