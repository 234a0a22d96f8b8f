"""Safe checkpoint loading: weights only, never code.

`.pth/.pt/.bin` files are read with ``torch.load(weights_only=True)`` (a pickle that would build
arbitrary Python objects is refused before anything runs) and `.safetensors` with safetensors.
Layouts: ``{'model': sd}``, ``{'state_dict': sd}``, ``{'model_ema': sd}``, a raw state dict, and
``module.`` / ``_orig_mod.`` prefixes. Size-dependent tables are resized as the original loader
does, and buffers the model computes itself are taken from the model, not the file.
"""
from __future__ import annotations

import hashlib
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UsageError

# keys looked for, in order, when the user names none
DEFAULT_KEYS = ("model", "state_dict", "model_ema")
# buffers the model computes from sizes; values in a checkpoint are ignored (PROTOCOLS.md s. 8)
COMPUTED_BUFFERS = ("relative_position_index", "attn_mask")
_PREFIXES = ("module.", "_orig_mod.")


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_checkpoint(path: str | Path) -> Mapping[str, Any]:
    """Read a checkpoint file without running code; UsageError with one line on any failure."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint '{path}' does not exist: check the path given to --checkpoint")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise UsageError(f"checkpoint '{path}' is not a readable safetensors file ({_first_line(exc)}): "
                             "re-download or re-export it") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UsageError(
            f"checkpoint '{path}' holds Python objects that safe loading refuses ({_first_line(exc)}): "
            "it could run code; re-save only the state dict (torch.save(model.state_dict(), ...)) or use safetensors"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UsageError(f"checkpoint '{path}' is truncated or not a PyTorch file ({_first_line(exc)}): "
                         "re-download it or check the path") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__


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


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def adapt_state_dict(state_dict: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
                     ) -> dict[str, torch.Tensor]:
    """Fit a checkpoint made at another input size, as the original loader does.

    Drops computed buffers (relative_position_index, attn_mask: the model's own are kept),
    resizes Swin relative-position bias tables (bicubic), halo relative tables (linear,
    align_corners=True) and PVT position embeddings (bilinear, align_corners=True) whose shapes
    differ from the model's. ``target``: the model's own state dict.
    """
    adapted: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.rsplit(".", 1)[-1] in COMPUTED_BUFFERS:
            continue
        want = target.get(key)
        if want is not None and want.shape != value.shape and value.dim() == want.dim():
            value = _resize_table(key, value, want.shape)
        adapted[key] = value
    for key, value in target.items():
        if key.rsplit(".", 1)[-1] in COMPUTED_BUFFERS:
            adapted[key] = value
    return adapted


def _resize_table(key: str, value: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Resize one size-dependent table to ``shape``; other tensors are returned unchanged."""
    if key.endswith("relative_position_bias_table") and value.shape[1] == shape[1]:
        side_in, side_out = int(value.shape[0] ** 0.5), int(shape[0] ** 0.5)
        grid = value.permute(1, 0).reshape(1, value.shape[1], side_in, side_in).float()
        grid = F.interpolate(grid, size=(side_out, side_out), mode="bicubic")
        return grid.reshape(shape[1], shape[0]).permute(1, 0).to(value.dtype)
    if key.endswith(("height_rel", "width_rel")) and value.shape[1] == shape[1]:
        table = value.permute(1, 0).unsqueeze(0).float()
        table = F.interpolate(table, size=shape[0], mode="linear", align_corners=True)
        return table.squeeze(0).permute(1, 0).to(value.dtype)
    if key.endswith("pos_embed") and value.dim() == 4 and value.shape[:2] == shape[:2]:
        return F.interpolate(value.float(), size=tuple(shape[-2:]), mode="bilinear", align_corners=True).to(value.dtype)
    return value


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


def guess_model(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """The unified model whose keys and shapes fit ``state_dict`` best (built on the meta device)."""
    from .models.registry import UNIFIED_MODELS, build_unified

    shapes = {k: tuple(v.shape) for k, v in state_dict.items() if k.rsplit(".", 1)[-1] not in COMPUTED_BUFFERS}
    best, best_score = None, 0.0
    for name in UNIFIED_MODELS:
        with torch.device("meta"):
            target = {k: tuple(v.shape) for k, v in build_unified(name).state_dict().items()
                      if k.rsplit(".", 1)[-1] not in COMPUTED_BUFFERS}
        agree = sum(1 for k, s in target.items() if shapes.get(k) == s)
        score = agree / max(len(target), len(shapes))
        if score > best_score:
            best, best_score = name, score
    return best if best_score > 0.5 else None


def load_checkpoint(model: nn.Module, path: str | Path, key: str | None = None, strict: bool = True) -> dict[str, Any]:
    """Load weights from ``path`` into ``model`` safely; returns the record for the run manifest.

    Raises UsageError (one line: the first problems and the model the file most likely belongs
    to) when keys or shapes do not fit and ``strict``; with ``strict=False`` loads what fits.
    """
    state_dict, used = select_state_dict(read_checkpoint(path), path, key)
    name = getattr(getattr(model, "stm_probe_spec", None), "name", type(model).__name__)
    target = model.state_dict()
    adapted = adapt_state_dict(state_dict, target)
    problems = check_fit(adapted, target)
    if problems and strict:
        guess = guess_model(state_dict)
        hint = f"it looks like a checkpoint of {guess} (use --model {guess})" if guess and guess != name else \
            "pass --non-strict to load what fits"
        raise UsageError(f"checkpoint '{path}' does not fit {name}: {'; '.join(problems)}; {hint}")
    fitting = {k: v for k, v in adapted.items() if k in target and v.shape == target[k].shape}
    model.load_state_dict(fitting, strict=False)
    return {
        "weights": "checkpoint", "checkpoint": str(path), "sha256": file_sha256(path), "checkpoint_key": used,
        "strict": strict, "skipped_problems": problems,
    }
