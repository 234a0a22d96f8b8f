"""Settings as frozen dataclasses: one declaration gives the CLI option, the API keyword, the
manifest entry and the cache key.

A setting is a dataclass field made with `option`: its default, help text, a parser from text
(CLI) and a check of the value (CLI and API alike). This module imports no torch, so building
the command line stays fast.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import UsageError

Parser = Callable[[str], Any]


def option(default: Any, help: str, parse: Parser | None = None, metavar: str | None = None,
           choices: Sequence[str] | None = None, flag: str | None = None, cli: bool = True,
           repeatable: bool = False) -> Any:
    """A settings field: ``default`` plus what the CLI needs (help, parser, metavar, choices).

    ``parse`` turns the option's text into the value (lists: comma-separated); ``choices``
    restricts it (with a did-you-mean on a typo); ``repeatable`` makes a list option that may
    be given several times (``--model a --model b``); ``cli=False`` keeps it out of the CLI.
    """
    meta = dict(help=help, parse=parse, metavar=metavar, choices=tuple(choices) if choices else None, flag=flag,
                cli=cli, repeatable=repeatable)
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for a list default (settings are frozen)")
    return field(default=default, metadata=meta)


def flag_name(f: dataclasses.Field) -> str:
    """``--num-images`` for field ``num_images``."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def settings_dict(settings: Any) -> dict[str, Any]:
    """Plain dict of a settings dataclass (tuples as lists): the manifest entry."""
    out = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else (str(value) if isinstance(value, Path) else value)
    return out


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """' (did you mean X?)' for the closest choice, else ''."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean {close[0]}?)" if close else ""


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    """UsageError naming the valid choices (and the closest one) when ``value`` is not among them."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    for item in items:
        if item not in choices:
            raise UsageError(f"{name} {item!r} is not one of {', '.join(map(str, choices))}{did_you_mean(item, choices)}")


def coerce(cls: type, values: dict[str, Any], where: str = "") -> Any:
    """Build settings ``cls`` from keyword ``values`` (API or parsed CLI), checking names, types and choices.

    Unknown names get a did-you-mean. A value goes through the field's parser whatever its Python
    type (``eps=[1, 8]``, ``stages=2`` and ``num_images="4"`` all work; ``num_images=2.7`` is a
    one-line error); repeatable fields take one string or a sequence; then ``cls.__post_init__``
    validates ranges.
    """
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for name, value in values.items():
        if name not in known:
            raise UsageError(f"{where}unknown setting {name!r}{did_you_mean(name, list(known))}")
        f = known[name]
        try:
            value = _from_python(f, value)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{flag_name(f)} {value!r}: {exc}") from None
        choices = f.metadata.get("choices")
        if choices and value is not None:
            check_choice(flag_name(f), value, choices)
        kwargs[name] = value
    return cls(**kwargs)


def _from_python(f: dataclasses.Field, value: Any) -> Any:
    """One field's value from text or Python objects (see `coerce`)."""
    if value is None:
        return None
    kind = str(f.type)
    if kind.startswith("bool"):
        if not isinstance(value, bool):
            raise TypeError("give True or False")
        return value
    if f.metadata.get("repeatable"):
        items = [value] if isinstance(value, (str, Path)) else list(value)
        return tuple(str(item) for item in items)
    if isinstance(value, bool):
        raise TypeError("is a number or text setting, not True/False")
    parse = f.metadata.get("parse")
    if isinstance(value, (list, tuple)):
        if parse is None and not kind.startswith("tuple"):
            raise TypeError("give one value, not a list")
        text = ",".join(str(item) for item in value)
    else:
        text = str(value)
    if parse is not None:
        return parse(text)
    return tuple(name_list(text)) if kind.startswith("tuple") else text


# --- parsers (text -> value) ----------------------------------------------------------------------
# --- checks shared by the commands (one wording each) -----------------------------------------------------
def check_out_folder(out: str | Path | None) -> None:
    """Refuse an --out that exists as a file (UsageError naming it and the fix)."""
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise UsageError(f"--out {out} is an existing file, not a folder: choose a folder path")


def check_checkpoint_file(path: str | Path, model: str | None = None) -> None:
    """Refuse a --checkpoint path that is a folder or does not exist (UsageError naming it, and the model it is for)."""
    path = Path(path)
    named = f"checkpoint '{path}'" + (f" for {model}" if model else "")
    if path.is_dir():
        raise UsageError(f"{named} is a directory, not a file: give the weights file inside it (.pth, .pt, .bin or "
                         ".safetensors) to --checkpoint")
    if not path.is_file():
        raise UsageError(f"{named} does not exist: check the path given to --checkpoint")


def check_unified_input_size(size: int | None) -> None:
    """Refuse an --input-size the unified models cannot take (not a multiple of 32), naming the nearest that works."""
    if size is not None and size % 32:
        raise UsageError(f"--input-size {size} is not a multiple of 32, which the unified models need: "
                         f"use {max(32, round(size / 32) * 32)}")


def whole_number(text: str) -> int:
    """'12' -> 12; anything else (2.7, 'x') -> ValueError naming it."""
    try:
        return int(str(text).strip())
    except ValueError:
        raise ValueError(f"give a whole number, not {text!r}") from None


def positive_int(text: str) -> int:
    value = whole_number(text)
    if value <= 0:
        raise ValueError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = whole_number(text)
    if value < 0:
        raise ValueError(f"must be 0 or a positive integer, got {text}")
    return value


def float_list(text: str) -> tuple[float, ...]:
    """'0.2,0.3' -> (0.2, 0.3); plain finite numbers only."""
    values = []
    for item in (i.strip() for i in str(text).split(",") if i.strip()):
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"'{item}' is not a number (give comma-separated numbers)") from None
        if not math.isfinite(value):
            raise ValueError(f"'{item}' is not a finite number")
        values.append(value)
    if not values:
        raise ValueError("give at least one number")
    return tuple(values)


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(item) for item in str(text).split(",") if item.strip())
    except ValueError:
        raise ValueError(f"'{text}' is not a comma-separated list of whole numbers") from None
    if not values:
        raise ValueError("give at least one integer")
    return values


def name_list(text: str) -> tuple[str, ...]:
    """'a,b' -> ('a', 'b'), order kept, repeats dropped."""
    names = tuple(dict.fromkeys(n.strip() for n in str(text).split(",") if n.strip()))
    if not names:
        raise ValueError("give at least one name")
    return names


SEED_MAX = 2**63 - 1
#: figure file formats (`stm_probe.plots.style`): PNG by default, PDF with --style paper
FIGURE_FORMATS = ("png", "pdf", "svg")


# --- the settings every probe shares ----------------------------------------------------------------
@dataclass(frozen=True)
class RunOptions:
    """Models, data and run settings shared by every probe (CLI group "models and data" / "run")."""

    model: tuple[str, ...] = option((), "model name, alias or glob over registered names (repeatable), e.g. "
                                    "unified_tiny_attn, 'unified_*_micro', convnext_tiny", metavar="NAME",
                                    repeatable=True)
    checkpoint: tuple[str, ...] = option((), "weights (.pth/.pt/.bin/.safetensors); repeatable, in --model order, "
                                         "or NAME=PATH", metavar="[NAME=]PATH", repeatable=True)
    checkpoint_key: str | None = option(None, "entry of the checkpoint holding the state dict (default: model, "
                                        "state_dict, model_ema, root)", metavar="KEY")
    non_strict: bool = option(False, "load what fits when checkpoint keys or shapes differ")
    min_loaded: float = option(0.5, "with --non-strict: refuse a checkpoint that fills less than this fraction of "
                               "the model's parameters (default 0.5)", parse=float, metavar="F")
    data: str | None = option(None, "image folder (class subfolders = labels), flat folder (with --labels), text "
                              "file list, an ImageNet-C tree, a shift set imagenet-v2:|imagenet-sketch:|imagenet-r:|"
                              "imagenet-a:PATH, or synthetic[:split]; default: the embedded sample images in "
                              "data/images/", metavar="PATH")
    image_list: str | None = option(None, "keep only the images named in this file (paths relative to --data, one "
                                    "per line; e.g. RobustBench's ImageNet ids), in its order", metavar="FILE")
    labels: str | None = option(None, "labels of a flat image folder: the devkit's ILSVRC2012_validation_ground_truth.txt, "
                                "Kaggle's LOC_val_solution.csv, or a filename,label CSV", metavar="FILE")
    label_map: str | None = option(None, "class folder name -> class index of the model (lines 'folder,index'; an "
                                   "index may be a synset): labels a folder tree in the model's label space",
                                   metavar="FILE")
    labels_as_index: bool = option(False, "score labels of another label space as the model's class indices anyway "
                                   "(recorded in the manifest and the weights column)")
    ignore_labels: bool = option(False, "drop the data's labels: label-free metrics only (flip rates, consistency, "
                                 "ERF)")
    num_images: int = option(50, "use the first N images (default 50)", parse=positive_int, metavar="N")
    subset_seed: int | None = option(None, "with --num-images: a seeded class-balanced subset (the same for every "
                                     "model) instead of the first N", parse=whole_number, metavar="S")
    checkpoint_dir: str | None = option(None, "folder of released checkpoints: each model finds its own file "
                                        "(unified_<stm>_<size>[-ema].pth/.safetensors); in compare, files with a "
                                        "seed suffix (_s0, -seed1, ...) are replicates", metavar="DIR")
    pretrained: bool = option(False, "load each unified model's released checkpoint, downloaded once into the cache "
                              "($STM_PROBE_CACHE, default ~/.cache/stm-probe; see `stm-probe weights`)")
    batch_size: int = option(16, "images per batch (default 16)", parse=positive_int, metavar="B")
    input_size: int | None = option(None, "square input side in pixels; a multiple of 32 for unified models "
                                    "(default: the size a `stm-probe train` checkpoint was trained at, else 224)",
                                    parse=positive_int, metavar="PX")
    workers: int = option(0, "data-loading worker processes (default 0)", parse=non_negative_int, metavar="N")
    device: str = option("auto", "auto | cpu | cuda | cuda:i (default auto: cuda if available)")
    out: str | None = option(None, "output folder (default runs/<probe>-<timestamp>)", metavar="DIR")
    resume: bool = option(False, "continue the interrupted run in --out: completed units are kept, the rest computed")
    seed: int = option(0, "random seed of every draw (default 0)", parse=whole_number)
    bootstrap: int = option(1000, "bootstrap replicates for the 95%% CIs of means over images (default 1000; 0 = "
                            "none)", parse=non_negative_int, metavar="N")
    repeats: int = option(1, "re-draw every random choice (directions, shifts, attack starts) R times and report "
                          "the spread over repeats (default 1)", parse=positive_int, metavar="R")
    precision: str = option("fp32", "fp32 (strict, default) | tf32 | bf16 | fp16 (autocast; input gradients stay fp32)",
                            choices=("fp32", "tf32", "bf16", "fp16"))
    channels_last: bool = option(False, "run models in channels_last memory format")
    compile: bool = option(False, "torch.compile the models")
    style: str = option("default", "figure style: default | paper (3.5/7 inch widths, Type 42 fonts)",
                        choices=("default", "paper"))
    formats: tuple[str, ...] | None = option(None, "figure files: png, pdf, svg, comma-separated (default png; with "
                                             "--style paper png,pdf)", parse=name_list, choices=FIGURE_FORMATS,
                                             metavar="FMT[,FMT]")
    cmap: str | None = option(None, "colour map of ERF heat maps (any matplotlib name, or RdYlGn for RepLKNet's)",
                              metavar="NAME")
    replicate: int | None = option(None, "label every row with this replicate index (one of several checkpoints of "
                                   "the same architectures, e.g. training seeds; compare sets it)",
                                   parse=non_negative_int, metavar="R")
    quiet: bool = option(False, "no progress bars")
    debug: bool = option(False, "show tracebacks")

    def __post_init__(self) -> None:
        if not self.model:
            raise UsageError("no model given: pass --model NAME (e.g. --model unified_tiny_attn)")
        if not 0 <= self.seed <= SEED_MAX:
            raise UsageError(f"--seed {self.seed}: give an integer in [0, 2^63 - 1]")
        if self.subset_seed is not None and not 0 <= self.subset_seed <= SEED_MAX:
            raise UsageError(f"--subset-seed {self.subset_seed}: give an integer in [0, 2^63 - 1]")
        if not 0.0 <= self.min_loaded <= 1.0:
            raise UsageError(f"--min-loaded {self.min_loaded}: give a fraction in [0, 1]")
        if self.bootstrap > 100_000:
            raise UsageError(f"--bootstrap {self.bootstrap}: at most 100000 replicates (1000 is plenty for 95% CIs)")
        if self.input_size is not None and self.input_size > 4096:
            raise UsageError(f"--input-size {self.input_size}: at most 4096 px")
        if self.out is not None and not str(self.out).strip():
            raise UsageError("--out '' names no folder: give a folder path, or leave --out out for runs/<probe>-<time>")
        if self.labels_as_index and (self.ignore_labels or self.label_map is not None):
            raise UsageError("--labels-as-index with " + ("--ignore-labels" if self.ignore_labels else "--label-map") +
                             ": choose one way to treat the labels")
        if self.ignore_labels and self.label_map is not None:
            raise UsageError("--ignore-labels with --label-map: choose one way to treat the labels")
        for name in ("batch_size", "num_images", "repeats"):
            if getattr(self, name) < 1:
                raise UsageError(f"{flag_name(_FIELDS[name])} {getattr(self, name)}: give a positive integer")


_FIELDS = {f.name: f for f in fields(RunOptions)}
