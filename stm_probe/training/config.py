"""The settings of one `stm-probe train` run (`TrainConfig`: CLI options, API keywords, manifest and
checkpoint entry), and which of them a resumed run may change (`RESUME_FREE`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..options import SEED_MAX, non_negative_int, option, positive_int, settings_dict

AUGMENTATIONS = ("none", "flip", "flip-crop")
# settings a resumed run may change: they do not change the numbers (device: on the CPU, at least)
RESUME_FREE = ("out", "resume", "quiet", "workers", "device", "debug")


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise ValueError(f"give a fraction strictly between 0 and 1, got {text}")
    return value


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (CLI options, API keywords, manifest and checkpoint entry)."""

    model: str | None = option(None, "model to train: a unified name or alias, or any timm architecture (built "
                               "with a new head of the dataset's class count)", metavar="NAME")
    data: str | None = option(None, "training images: an ImageFolder tree (class subfolders = labels), a labelled "
                              "list file, or synthetic[:train][?classes=K&size=S&seed=N&n=N] (bare synthetic is "
                              "the train split here)", metavar="PATH")
    val_data: str | None = option(None, "validation images (default for synthetic:train: synthetic:val with the "
                                  "same classes, size and seed; otherwise give this or --val-fraction)",
                                  metavar="PATH")
    val_fraction: float | None = option(None, "hold out this seeded fraction of each class of --data for "
                                        "validation instead of --val-data", parse=_fraction, metavar="F")
    num_images: int | None = option(None, "train on the first N images, interleaved by class (default all)",
                                    parse=positive_int, metavar="N")
    num_val_images: int | None = option(None, "validate on the first N images, interleaved by class (default "
                                        "all)", parse=positive_int, metavar="N")
    epochs: int = option(10, "passes over the training images (default 10)", parse=positive_int, metavar="E")
    batch_size: int = option(64, "images per optimiser step (default 64)", parse=positive_int, metavar="B")
    lr: float = option(1e-3, "peak learning rate of AdamW (default 0.001)", parse=float, metavar="LR")
    weight_decay: float = option(0.05, "AdamW weight decay, not applied to biases and norms (default 0.05)",
                                 parse=float, metavar="WD")
    warmup_epochs: float = option(1.0, "linear warm-up, in epochs (may be fractional), then cosine decay to 0 "
                                  "(default 1)", parse=float, metavar="E")
    label_smoothing: float = option(0.1, "label smoothing of the training loss (default 0.1)", parse=float,
                                    metavar="S")
    clip_grad: float = option(1.0, "clip the gradient's global L2 norm to this (default 1; 0 = off)", parse=float,
                              metavar="NORM")
    augment: str = option("none", "train-time augmentation: none (default), flip (horizontal), flip-crop (flip and "
                          "a random crop of the image padded by input-size/8 px)", choices=AUGMENTATIONS)
    input_size: int = option(64, "square input side in pixels; a multiple of 32 for unified models (default 64)",
                             parse=positive_int, metavar="PX")
    seed: int = option(0, "seed of the initial weights, the hold-out split, shuffling and augmentation (default 0)",
                       parse=int)
    device: str = option("auto", "auto | cpu | cuda | cuda:i (default auto: cuda if available)")
    amp: bool | None = option(None, "mixed precision (bfloat16, else float16 with loss scaling); CUDA only "
                              "(default: on with CUDA)")
    precision: str | None = option(None, "fp32 | tf32 | bf16 | fp16 (autocast; fp16 with loss scaling, CUDA only); "
                                   "default: --amp's rule", choices=("fp32", "tf32", "bf16", "fp16"))
    channels_last: bool = option(False, "train in channels_last memory format")
    compile: bool = option(False, "torch.compile the training forward pass")
    out: str | None = option(None, "output folder (default runs/train-<timestamp>)", metavar="DIR")
    resume: bool = option(False, "continue the interrupted run in --out from its last epoch checkpoint")
    workers: int = option(0, "data-loading worker processes while decoding (default 0)", parse=non_negative_int,
                          metavar="N")
    quiet: bool = option(False, "no progress bars or per-epoch lines")
    debug: bool = option(False, "show tracebacks")

    def __post_init__(self) -> None:
        if not self.model:
            raise UsageError("no model given: pass --model NAME (e.g. --model unified_convnext_micro)")
        if any(ch in self.model for ch in "*?["):
            raise UsageError(f"--model {self.model}: train one model at a time; give a name, not a pattern")
        if not self.data:
            raise UsageError("no training images given: pass --data PATH (an ImageFolder tree) or "
                             "--data synthetic:train")
        if self.val_data is not None and self.val_fraction is not None:
            raise UsageError("--val-data and --val-fraction both given: validate on one of them, drop the other")
        if self.val_fraction is not None and not 0 < self.val_fraction < 1:
            raise UsageError(f"--val-fraction {self.val_fraction}: give a fraction strictly between 0 and 1")
        for name in ("epochs", "batch_size", "input_size", "num_images", "num_val_images"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} {value}: give a positive integer")
        checks = (("lr", self.lr > 0), ("weight_decay", self.weight_decay >= 0),
                  ("warmup_epochs", 0 <= self.warmup_epochs <= self.epochs),
                  ("label_smoothing", 0 <= self.label_smoothing < 1), ("clip_grad", self.clip_grad >= 0))
        for name, ok in checks:
            value = getattr(self, name)
            if not (math.isfinite(value) and ok):
                wanted = {"lr": "a positive number", "warmup_epochs": f"a number in [0, --epochs {self.epochs}]",
                          "label_smoothing": "a number in [0, 1)"}.get(name, "0 or a positive number")
                raise UsageError(f"--{name.replace('_', '-')} {value}: give {wanted}")
        if self.input_size > 4096:
            raise UsageError(f"--input-size {self.input_size}: at most 4096 px")
        if not 0 <= self.seed <= SEED_MAX:
            raise UsageError(f"--seed {self.seed}: give an integer in [0, 2^63 - 1]")
        if self.out is not None and not str(self.out).strip():
            raise UsageError("--out '' names no folder: give a folder path, or leave --out out for runs/train-<time>")
        if self.resume and self.out is None:
            raise UsageError("--resume needs --out: give the folder of the interrupted run")
        if self.amp is not None and self.precision is not None:
            raise UsageError(f"--amp and --precision {self.precision} both given: drop --amp (--precision chooses the "
                             "autocast type)")


def numeric_settings(config: TrainConfig) -> dict[str, Any]:
    """The settings that change a run's numbers (all but `RESUME_FREE`): equal for a resumed run."""
    return {k: v for k, v in settings_dict(config).items() if k not in RESUME_FREE}
