"""`stm-probe train`: train a registered model with a new head of the dataset's class count.

The recipe: AdamW (no weight decay on biases, norms and 1-D parameters), a per-step schedule
of linear warm-up then cosine decay to 0, cross-entropy with label smoothing, gradient-norm
clipping, and mixed precision on CUDA (bfloat16 where the GPU has it, else float16 with loss
scaling). Images pass the evaluation transform of the analyses (short side to
``input_size / 0.875``, centre crop), so a trained model sees what the probes will show it;
they are decoded (or rendered, for a synthetic split) once and held in memory (uint8 for 8-bit
sources), on the GPU when training there. Optional light augmentation (``--augment``): ``flip`` (horizontal flip, p = 0.5) or
``flip-crop`` (flip, then a random crop of the image padded by input_size / 8 pixels with
reflection). It is off by default: a flip changes the orientation of oriented textures.

Precision: without ``--precision`` the ``--amp`` rule holds (autocast on CUDA, float32 on the CPU);
``--precision fp32|tf32|bf16|fp16`` chooses explicitly (fp16 with loss scaling, CUDA only; bf16
runs on the CPU too), ``--channels-last`` and ``--compile`` as for the probes
(`stm_probe.runtime.precision`).

Under ``torchrun --nproc_per_node N -m stm_probe train ...`` the model is wrapped in
DistributedDataParallel: every rank draws the same shuffled order and augmentation, takes its
contiguous slice of each ``--batch-size`` step (so ``--batch-size`` stays the images per
optimiser step), and the loss is the sum over the rank's images divided by the step's image
count (times N, which DDP's gradient averaging divides out), so the gradient is the one of
the whole step. Loss, accuracy and validation sums are added over ranks; rank 0 alone writes
the run folder. With one process nothing changes.

Seeding: the model is initialised after seeding torch with ``seed`` (as the probes build a
random-init model); epoch e's shuffling and augmentation draw from a ``torch.Generator`` seeded
from (seed, 'train', e), so a run resumed at an epoch boundary makes the same draws as an
uninterrupted one. Every epoch ends with ``checkpoint.pth`` (written atomically; see
`save_checkpoint`), ``train_log.csv`` rewritten from the checkpoint's history, and the
per-epoch line; the learning-curve figure and ``manifest.json`` come at the end.
"""
from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import UsageError
from ..options import SEED_MAX, coerce, non_negative_int, option, positive_int, settings_dict

if TYPE_CHECKING:
    import torch
    from torch import nn

AUGMENTATIONS = ("none", "flip", "flip-crop")
CHECKPOINT_NAME = "checkpoint.pth"
LOG_NAME = "train_log.csv"
LOG_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s", "seconds")
CACHE_LIMIT_GIB = 8  # decoded images (both splits) held in memory at most
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


def run_training(values: dict[str, Any], call: dict[str, Any] | None = None,
                 on_epoch_end: Callable[[int, dict[str, float], "nn.Module"], None] | None = None) -> dict[str, Any]:
    """The command line's entry: ``values`` (option name -> value or text; None = not given) into a
    `TrainConfig` (one-line UsageError on a bad value or unknown name), then `train`."""
    config = coerce(TrainConfig, {k: v for k, v in values.items() if v is not None}, where="train: ")
    return train(config, call=call, on_epoch_end=on_epoch_end)


# --- data ------------------------------------------------------------------------------------------
def training_data(data: str) -> str:
    """``--data`` as training reads it: a bare ``synthetic[?options]`` is the train split
    (``synthetic:train[?options]``; the analyses read it as val); anything else unchanged."""
    from ..data.synthetic import PREFIX, is_synthetic

    if is_synthetic(data) and not data.startswith(PREFIX + ":"):
        return f"{PREFIX}:train{data[len(PREFIX):]}"
    return data


def default_val_data(data: str) -> str | None:
    """The validation split matching a synthetic training split: ``synthetic:train?classes=K&size=S&seed=N``
    -> ``synthetic:val`` with the same classes, size and seed (and its own default number of images);
    None for any other data (an ImageFolder needs --val-data or --val-fraction)."""
    from ..data.synthetic import is_synthetic, parse_spec

    if not is_synthetic(data):
        return None
    spec = parse_spec(training_data(data))
    return spec.with_split("val").location if spec.split == "train" else None


def hold_out(source: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    """Split an ImageSource into (train, val): a seeded ``round(fraction * n)`` of each class's n images
    (at least 1 where n >= 2) go to val; both keep the source's order."""
    import numpy as np

    from ..core.seeds import stream_seed

    rng = np.random.default_rng(stream_seed(seed, "train", "hold-out"))
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(source.labels):
        by_label.setdefault(label, []).append(i)
    held: set[int] = set()
    for label in sorted(by_label):
        members = by_label[label]
        count = min(len(members) - 1, max(1, round(fraction * len(members)))) if len(members) >= 2 else 0
        held.update(members[j] for j in rng.permutation(len(members))[:count])

    def part(keep: list[int], what: str) -> Any:
        note = f"{what}: {len(keep)} of {len(source)} images (seeded hold-out of {fraction:g} per class)"
        return replace(source, paths=tuple(source.paths[i] for i in keep),
                       labels=tuple(source.labels[i] for i in keep), notes=source.notes + (note,))

    order = range(len(source))
    return part([i for i in order if i not in held], "train"), part([i for i in order if i in held], "val")


def resolve_splits(config: TrainConfig) -> tuple[Any, Any, list[str]]:
    """The (train, val) ImageSources of a config, before decoding, and notes for the summary (fewer
    images than asked); one-line errors for unlabelled data or no validation images."""
    from ..data import resolve_source

    source = resolve_source(training_data(config.data))
    val_data = config.val_data or (None if config.val_fraction else default_val_data(config.data))
    if val_data is not None:
        train_src, val_src = source, resolve_source(val_data)
    elif config.val_fraction is not None:
        train_src, val_src = hold_out(source, config.val_fraction, config.seed)
    else:
        raise UsageError(f"--data {config.data}: give validation images with --val-data PATH, or hold out a seeded "
                         "fraction of the training images with --val-fraction F (e.g. 0.1)")
    val_flag = ("--val-data" if config.val_data is not None else
                f"--val-fraction {config.val_fraction:g} of --data" if config.val_fraction is not None else
                "the default validation split")
    for flag, src, where in (("--data", train_src, config.data), (val_flag, val_src, val_data or config.data)):
        if getattr(src, "variants", None):
            raise UsageError(f"{flag} {where}: an ImageNet-C tree is a test set of corrupted copies, not training "
                             "data; train on clean class folders (or a synthetic split)")
        if getattr(src, "class_subset", None):
            raise UsageError(f"{flag} {where}: {src.label_space} is a 200-class test set scored on ImageNet-1k logits, "
                             "not training data; train on ImageNet-style class folders (or a synthetic split)")
        unlabelled = sum(1 for label in src.labels if label < 0)
        if unlabelled:
            raise UsageError(f"{flag} {where}: {unlabelled} of {len(src)} images have no label; training needs "
                             "labelled images: an ImageFolder tree (class subfolders) or a list of 'path label' lines")
        if not len(src):
            raise UsageError(f"{flag} {where}: no images left to {'train' if flag == '--data' else 'validate'} on; "
                             "give more images or a smaller --val-fraction")
    from ..label_spaces import data_space, spaces_match

    trained_space, val_space = data_space(train_src), data_space(val_src)
    if trained_space is not None and val_space is not None and not spaces_match(trained_space, val_space):
        raise UsageError(f"{val_flag} {val_data or config.data}: its labels are {val_space.phrase}, but the model is "
                         f"trained on {trained_space.phrase} from --data, so validation would score other classes; "
                         "give validation images with the same classes (the same class folders)")
    notes = [f"{flag} {where} holds {len(src)} image(s), fewer than {option_flag} {wanted}: using all {len(src)}"
             + (" (set how many with n= in the synthetic --data)" if src.kind == "synthetic" else "")
             for flag, src, where, option_flag, wanted in (
                 ("--data", train_src, config.data, "--num-images", config.num_images),
                 (val_flag, val_src, val_data or config.data, "--num-val-images", config.num_val_images))
             if wanted is not None and wanted > len(src)]
    train_src = train_src.take(config.num_images, spread_classes=True)
    val_src = val_src.take(config.num_val_images, spread_classes=True)
    if len(train_src) < 2:
        raise UsageError(f"--data {config.data}: {len(train_src)} training image; give at least 2")
    return train_src, val_src, notes


def class_count(train_src: Any) -> int:
    """Classes of the new head: 1000 for ImageNet synset folders, else max(class folders, largest label + 1)."""
    if train_src.label_space == "imagenet-1k":
        return 1000
    count = max(len(train_src.class_names), max(train_src.labels) + 1)
    if count < 2:
        raise UsageError(f"--data {train_src.location}: one class only; training a classifier needs at least 2")
    return count


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


# --- optimisation ----------------------------------------------------------------------------------
class WarmupCosine:
    """Learning-rate factor of optimiser step k (0-based): (k + 1) / W during the W warm-up steps,
    then 0.5 (1 + cos(pi (k - W) / (T - W))) over the remaining steps of T (reaching 0 after the last)."""

    def __init__(self, warmup_steps: int, total_steps: int) -> None:
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def param_groups(model: "nn.Module", weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on weight matrices and kernels only, not on biases, norms, 1-D
    parameters or what the model lists in ``no_weight_decay()`` (position embeddings, ...)."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, plain = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (plain if param.ndim <= 1 or name.endswith(".bias") or name in skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def steps_per_epoch(num_images: int, batch_size: int) -> int:
    """Full batches per epoch (the last partial batch is dropped; one batch of all when fewer than B)."""
    return max(1, num_images // batch_size)


@dataclass
class Trainer:
    """The model (wrapped to take [0, 1] pixels), optimiser, schedule and precision of one run."""

    net: Any  # stm_probe.models.features.Normalized
    optimizer: Any
    scheduler: Any
    scaler: Any  # torch.amp.GradScaler for float16, else None
    autocast: Callable[[], Any]
    config: TrainConfig
    forward: Any = None  # what a training step calls: net, its DDP wrapper or compiled form (default: net)
    rank: int = 0
    world_size: int = 1
    channels_last: bool = False
    notes: list[str] = field(default_factory=list)  # said in the summary and the manifest

    def _inputs(self, x: "torch.Tensor") -> "torch.Tensor":
        import torch

        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _all_sum(self, values: list[float], device: Any) -> list[float]:
        """``values`` added over ranks (as they are in one process)."""
        if self.world_size == 1:
            return values
        import torch
        import torch.distributed as dist

        total = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(total)
        return total.tolist()

    def train_epoch(self, data: DecodedImages, epoch: int, bar: Any) -> dict[str, float]:
        """One pass in seeded order; returns train_loss (mean over images), train_acc (%), lr, images/s."""
        import torch
        import torch.nn.functional as F

        from ..core.seeds import stream_seed

        cfg = self.config
        generator = torch.Generator().manual_seed(stream_seed(cfg.seed, "train", epoch))
        order = torch.randperm(len(data), generator=generator)
        steps = steps_per_epoch(len(data), cfg.batch_size)
        self.net.train()
        loss_sum, correct, seen, lr = 0.0, 0, 0, 0.0
        started = time.perf_counter()
        forward = self.forward or self.net
        for step in range(steps):
            x, y = data.batch(order[step * cfg.batch_size:(step + 1) * cfg.batch_size])
            x = augment(x, cfg.augment, generator)  # the whole step's images, the same draws on every rank
            count = len(y)
            if self.world_size > 1:  # this rank's contiguous slice of the step
                part = torch.tensor_split(torch.arange(count), self.world_size)[self.rank].to(y.device)
                x, y = x[part], y[part]
            with self.autocast():
                logits = forward(self._inputs(x))
            if self.world_size == 1:
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            else:  # DDP averages gradients over ranks: scale so the result is the whole step's mean
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing,
                                       reduction="sum") * (self.world_size / count)
            hits = (logits.argmax(1) == y).sum()
            value, hit_count = torch.stack([loss.detach().float(), hits.float()]).tolist()
            if self.world_size > 1:
                value, hit_count = self._all_sum([value / self.world_size, hit_count], y.device)
            if not math.isfinite(value):
                raise NonFiniteLoss(f"non-finite training loss ({value}) at epoch {epoch}, step {step + 1} of {steps}")
            lr = self.optimizer.param_groups[0]["lr"]
            self._step(loss)
            loss_sum += value * count
            correct += int(hit_count)
            seen += count
            bar.update(count)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}%", refresh=False)
        seconds = time.perf_counter() - started
        return {"train_loss": loss_sum / seen, "train_acc": 100.0 * correct / seen, "lr": lr,
                "images_per_s": seen / max(seconds, 1e-9)}

    def _step(self, loss: "torch.Tensor") -> None:
        import torch

        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if self.config.clip_grad > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.config.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if self.config.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.config.clip_grad)
            self.optimizer.step()
        self.scheduler.step()

    def evaluate(self, data: DecodedImages) -> dict[str, float]:
        """val_loss (plain cross-entropy, nats, mean over images) and val_acc (%) in eval mode."""
        import torch
        import torch.nn.functional as F

        self.net.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=data.labels.device)
        correct = torch.zeros((), dtype=torch.int64, device=data.labels.device)
        starts = range(0, len(data), self.config.batch_size)
        with torch.no_grad():
            for start in starts[self.rank::self.world_size]:  # ranks share the batches; sums added below
                x, y = data.batch(torch.arange(start, min(start + self.config.batch_size, len(data))))
                with self.autocast():
                    logits = self.net(self._inputs(x)).float()
                loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
                correct += (logits.argmax(1) == y).sum()
        total_loss, total_correct = (float(loss_sum), int(correct)) if self.world_size == 1 else \
            self._all_sum([float(loss_sum), float(correct)], data.labels.device)
        return {"val_loss": total_loss / len(data), "val_acc": 100.0 * int(round(total_correct)) / len(data)}

    def weights_finite(self) -> bool:
        import torch

        return bool(torch.stack([torch.isfinite(p).all() for p in self.net.parameters()]).all())


class NonFiniteLoss(UsageError):
    """The training loss (or the weights) became NaN or Inf; `train` adds which checkpoint is kept."""


def autocast_choice(config: TrainConfig, device: "torch.device") -> "torch.dtype | None":
    """The autocast type of a run: ``--precision`` when given (checked against the device), else
    the ``--amp`` rule (CUDA: bfloat16 where supported, else float16; CPU: none)."""
    import torch

    if config.precision is not None:
        from ..runtime.precision import resolve_precision, set_matmul_precision

        precision, _ = resolve_precision(config.precision, config.channels_last, config.compile, device)
        set_matmul_precision(precision)
        return precision.autocast_dtype
    use_amp = device.type == "cuda" and config.amp is not False
    if not use_amp:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def build_trainer(config: TrainConfig, name: str, num_classes: int, device: "torch.device", total_steps: int,
                  warmup_steps: int) -> Trainer:
    """Build the model with a ``num_classes`` head, and its optimiser, schedule and precision; under
    torchrun (several processes) the training forward goes through DistributedDataParallel. Call it
    inside `stm_probe.core.seeds.seeded`: the initialisation draws from the global generators."""
    import contextlib

    import torch

    from ..models import create_model
    from ..models.features import Normalized
    from ..runtime import distributed

    model = create_model(name, num_classes=num_classes, input_size=config.input_size)
    net = Normalized(model).to(device)
    if config.channels_last:
        net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps))
    dtype = autocast_choice(config, device)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    rank, world_size = distributed.world() if distributed.active() else (0, 1)
    forward: Any = net
    notes = []
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        has_batch_norm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
        if has_batch_norm and device.type == "cuda":  # batch statistics over the whole step, as in one process
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        elif has_batch_norm:
            notes.append(f"{name} has BatchNorm layers: on the CPU each process normalises its own slice of a step "
                         "(SyncBatchNorm needs GPUs), so training differs slightly from one process")
        forward = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        forward = torch.compile(forward)
    return Trainer(net, optimizer, scheduler, scaler, autocast, config, forward=forward, rank=rank,
                   world_size=world_size, channels_last=config.channels_last, notes=notes)


# --- checkpoint and log ----------------------------------------------------------------------------
def save_checkpoint(path: Path, trainer: Trainer, state: dict[str, Any]) -> None:
    """Write ``checkpoint.pth`` atomically: {'model': state_dict (CPU), 'num_classes', 'arch', 'config',
    'class_names', 'input_size', 'metrics' (the epoch's row), 'epoch', 'history' (every row so far),
    'trained' (how it was trained: data, label space, class names, input size, epochs, val accuracy %;
    `stm_probe.label_spaces.trained_summary`),
    'optimizer', 'scheduler', 'scaler', 'rng' (torch CPU and CUDA states)}; readable with
    ``torch.load(weights_only=True)``."""
    import torch

    from ..runtime.manifest import atomic_path

    model = trainer.net.model
    payload = dict(state)
    payload.update(
        model={k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
        optimizer=trainer.optimizer.state_dict(), scheduler=trainer.scheduler.state_dict(),
        scaler=trainer.scaler.state_dict() if trainer.scaler is not None else None,
        rng={"torch": torch.get_rng_state(),
             "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
    )
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def restore(trainer: Trainer, checkpoint: dict[str, Any]) -> None:
    """Put a saved epoch's weights, optimiser, schedule, loss scale and RNG state back."""
    import torch

    trainer.net.model.load_state_dict(checkpoint["model"])
    trainer.optimizer.load_state_dict(checkpoint["optimizer"])
    trainer.scheduler.load_state_dict(checkpoint["scheduler"])
    if trainer.scaler is not None and checkpoint.get("scaler"):
        trainer.scaler.load_state_dict(checkpoint["scaler"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    if checkpoint["rng"].get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])


def read_resume_checkpoint(path: Path, config: TrainConfig) -> dict[str, Any] | None:
    """The interrupted run's last checkpoint (None when it stopped before its first epoch ended);
    UsageError naming the first setting that differs from this call's."""
    from ..checkpoint import read_checkpoint

    if not path.is_file():
        return None
    checkpoint = read_checkpoint(path)
    saved = checkpoint.get("config") if isinstance(checkpoint, dict) else None
    if not isinstance(saved, dict) or "optimizer" not in checkpoint:
        raise UsageError(f"--resume: {path} is not a `stm-probe train` checkpoint; choose another --out")
    defaults = settings_dict(TrainConfig(model="x", data="x"))
    for name, value in numeric_settings(config).items():
        if saved.get(name, defaults.get(name)) != value:
            flag = f"--{name.replace('_', '-')}"
            raise UsageError(f"--resume: {flag} {value} differs from the interrupted run's {saved.get(name)} "
                             f"({path}); rerun with its settings or choose a new --out")
    return checkpoint


def numeric_settings(config: TrainConfig) -> dict[str, Any]:
    """The settings that change a run's numbers (all but `RESUME_FREE`): equal for a resumed run."""
    return {k: v for k, v in settings_dict(config).items() if k not in RESUME_FREE}


def write_log(path: Path, history: list[dict[str, float]]) -> None:
    """``train_log.csv``: one row per epoch, columns `LOG_COLUMNS` (accuracies in percent)."""
    import io

    from ..runtime.manifest import write_text

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(LOG_COLUMNS)
    for row in history:
        writer.writerow([int(row["epoch"])] + [f"{row[c]:.9g}" for c in LOG_COLUMNS[1:]])
    write_text(path, text.getvalue())


# --- the run ---------------------------------------------------------------------------------------
def train(config: TrainConfig, call: dict[str, Any] | None = None,
          on_epoch_end: Callable[[int, dict[str, float], "nn.Module"], None] | None = None) -> dict[str, Any]:
    """Train ``config.model`` on ``config.data``; writes the run folder and returns a summary.

    ``on_epoch_end(epoch, row, model)`` is called after each epoch's checkpoint is saved (a
    progress hook; raising in it stops the run as an interruption would). Returns ``out``,
    ``checkpoint`` (paths), ``model`` (the trained model, eval mode, on the device; its inputs
    are ImageNet-normalised as in ``create_model``), ``arch``, ``num_classes``, ``class_names``,
    ``metrics`` (the last epoch's row), ``history`` (every row), ``resumed_from`` (epoch or
    None), ``num_train_images``, ``num_val_images``, ``skipped_files``.
    """
    from ..models import resolve_name
    from ..runtime.manifest import RunRecord, default_out_dir
    from ..runtime.precision import numeric_flags
    from ..core.seeds import seeded
    from ..runtime.session import check_out_dir, resolve_device
    from ..runtime.store import RunFolder

    spec = resolve_name(config.model)
    if spec.is_unified and config.input_size % 32:
        raise UsageError(f"--input-size {config.input_size} is not a multiple of 32, which the unified models need: "
                         f"use {max(32, round(config.input_size / 32) * 32)}")
    device = resolve_device(config.device)
    from ..runtime import distributed

    distributed.init(device.type)  # under torchrun: join the group (rank 0 alone writes the folder)
    main = distributed.is_main()
    if not main:
        config = replace(config, quiet=True)
    train_src, val_src, notes = resolve_splits(config)
    num_classes = class_count(train_src)
    val_src.check_labels(num_classes, spec.name)
    check_memory(len(train_src) + len(val_src), config.input_size)
    out = Path(config.out) if config.out is not None else default_out_dir("train")
    for src in (train_src, val_src):
        check_out_dir(out, Path(src.location) if src.kind in ("imagefolder", "folder") else None)
    saved = read_resume_checkpoint(out / CHECKPOINT_NAME, config) if config.resume else None
    folder = RunFolder(out, "train", config.resume)
    record = RunRecord("train", out, call=call)
    started = time.perf_counter()
    try:
        # every rank learns at once when rank 0 cannot open the folder (one line, no rank left waiting)
        distributed.collective(lambda: folder.open({"settings": numeric_settings(config), "models": [spec.name]})
                               if main else None, name_rank=False)
        with seeded(config.seed, device), numeric_flags(None):  # the caller's RNGs and TF32 flags come back
            result = _run(config, spec.name, num_classes, device, train_src, val_src, folder, saved, on_epoch_end)
        result["notes"] = notes + result.pop("trainer_notes")
        if main:
            _finish(out, record, config, spec, device, train_src, val_src, result, started)
    except BaseException as exc:
        if main:
            folder.close(failed_before_saving=isinstance(exc, UsageError))
        raise
    if main:
        folder.complete()
        folder.close()
        _print_summary(config, spec.name, result, out)
    distributed.barrier()  # the checkpoint is complete before any rank returns
    return {"out": out, "checkpoint": out / CHECKPOINT_NAME, **result}


def _run(config: TrainConfig, name: str, num_classes: int, device: Any, train_src: Any, val_src: Any, folder: Any,
         saved: dict[str, Any] | None, on_epoch_end: Any) -> dict[str, Any]:
    """Decode, build, restore ``saved`` (the checkpoint to resume from), and train epoch by epoch;
    returns the summary fields of `train`."""
    import torch
    from tqdm.auto import tqdm

    checkpoint_path = folder.path / CHECKPOINT_NAME
    train_set = decode(train_src, config.input_size, config.workers, device, config.quiet, "training")
    val_set = decode(val_src, config.input_size, config.workers, device, config.quiet, "validation")
    if len(train_set) < 2:
        raise UsageError(f"--data {config.data}: only {len(train_set)} training image could be read; give at least 2")
    steps = steps_per_epoch(len(train_set), config.batch_size)
    trainer = build_trainer(config, name, num_classes, device, total_steps=steps * config.epochs,
                            warmup_steps=round(config.warmup_epochs * steps))
    if min(config.batch_size, len(train_set)) < trainer.world_size:
        raise UsageError(f"--batch-size {config.batch_size} gives fewer images per step than the {trainer.world_size} "
                         f"processes: use --batch-size {trainer.world_size} or more (or fewer processes)")
    history: list[dict[str, float]] = []
    if saved is not None:
        restore(trainer, saved)
        history = [dict(row) for row in saved["history"]]
    first = len(history) + 1
    from ..label_spaces import data_space

    state = {"num_classes": num_classes, "arch": name, "config": settings_dict(config),
             "class_names": list(train_src.class_names), "input_size": config.input_size}
    trained = {"data": training_data(config.data), "label_space": data_space(train_src).to_dict(),
               "class_names": list(train_src.class_names), "num_classes": num_classes,
               "input_size": config.input_size}
    try:
        for epoch in range(first, config.epochs + 1):
            epoch_started = time.perf_counter()
            with tqdm(total=steps * min(config.batch_size, len(train_set)), desc=f"epoch {epoch}/{config.epochs}",
                      unit="img", disable=config.quiet, leave=False, dynamic_ncols=True) as bar:
                row = trainer.train_epoch(train_set, epoch, bar)
            if not trainer.weights_finite():
                raise NonFiniteLoss(f"non-finite weights after epoch {epoch}, step {steps} of {steps}")
            row.update(trainer.evaluate(val_set))
            row = {"epoch": epoch, **{c: row[c] for c in LOG_COLUMNS[1:-1]},
                   "seconds": time.perf_counter() - epoch_started}
            history.append(row)
            if trainer.rank == 0:
                save_checkpoint(checkpoint_path, trainer, {**state, "metrics": dict(row), "epoch": epoch,
                                                           "history": history,
                                                           "trained": {**trained, "epochs": epoch,
                                                                       "val_acc": float(row["val_acc"])}})
                folder.saved_units += 1
                write_log(folder.path / LOG_NAME, history)
            if not config.quiet:
                tqdm.write(f"epoch {epoch}/{config.epochs}: train loss {row['train_loss']:.4f}, acc "
                           f"{row['train_acc']:.1f}% | val loss {row['val_loss']:.4f}, acc {row['val_acc']:.1f}% | "
                           f"lr {row['lr']:.3g}, {row['images_per_s']:.0f} img/s")
            if on_epoch_end is not None:
                on_epoch_end(epoch, dict(row), trainer.net.model)
    except NonFiniteLoss as exc:
        kept = (f"the last good checkpoint (epoch {history[-1]['epoch']}) is kept in {checkpoint_path}" if history
                else "no epoch finished, so no checkpoint was saved")
        raise UsageError(f"{exc}: training diverged; lower --lr (now {config.lr:g}) or lengthen --warmup-epochs; "
                         f"{kept}") from None
    except torch.OutOfMemoryError:
        raise UsageError(f"out of memory on {device} at --batch-size {config.batch_size} and --input-size "
                         f"{config.input_size}: lower --batch-size (or --input-size); finished epochs are kept for "
                         "--resume") from None
    model = trainer.net.model.eval()
    return {"model": model, "arch": name, "num_classes": num_classes, "class_names": list(train_src.class_names),
            "metrics": dict(history[-1]), "history": history,
            "resumed_from": (first - 1) if saved is not None else None, "trainer_notes": trainer.notes,
            "num_train_images": len(train_set), "num_val_images": len(val_set),
            "skipped_files": train_set.skipped + val_set.skipped}


def _finish(out: Path, record: Any, config: TrainConfig, spec: Any, device: Any, train_src: Any, val_src: Any,
            result: dict[str, Any], started: float) -> list[Path]:
    """The learning-curve figure and manifest.json (last)."""
    from ..checkpoint import file_sha256
    from ..plots.train import plot_train
    from ..runtime.manifest import device_description

    outputs = [out / LOG_NAME, out / CHECKPOINT_NAME] + plot_train(out)
    record.update(
        device=device_description(device), seed=config.seed, input_size=config.input_size,
        settings=settings_dict(config), num_classes=result["num_classes"], class_names=result["class_names"],
        data={"train": train_src.describe(), "val": val_src.describe(), "num_train_images": result["num_train_images"],
              "num_val_images": result["num_val_images"], "transform": f"eval_transform({config.input_size})"},
        skipped_files=result["skipped_files"], notes=result["notes"], metrics=result["metrics"], epochs_resumed=result["resumed_from"] or 0,
        checkpoint_sha256=file_sha256(out / CHECKPOINT_NAME),
        recipe="AdamW (no decay on biases/norms), linear warm-up then cosine per step, label smoothing, grad-norm "
               "clipping; seeded shuffling from (seed, 'train', epoch)",
        compute_seconds=round(time.perf_counter() - started, 3),
    )
    record.add_model({"name": spec.name, "stm": spec.stm, "size": spec.size, "weights": "trained here",
                      "num_classes": result["num_classes"]})
    for path in outputs:
        record.add_output(path)
    record.write()
    return outputs


def _print_summary(config: TrainConfig, name: str, result: dict[str, Any], out: Path) -> None:
    import sys

    m = result["metrics"]
    resumed = f", resumed after epoch {result['resumed_from']}" if result["resumed_from"] is not None else ""
    print(f"train: {name}, {result['num_classes']} classes, {result['num_train_images']} training / "
          f"{result['num_val_images']} validation images, {config.epochs} epoch(s){resumed}")
    print(f"  epoch {int(m['epoch'])}: val acc {m['val_acc']:.1f}%, val loss {m['val_loss']:.4f}, train acc "
          f"{m['train_acc']:.1f}%")
    for note in result["notes"]:
        print(f"note: {note}")
    if result["skipped_files"]:
        skipped = result["skipped_files"]
        print(f"stm-probe: skipped {len(skipped)} file(s) that could not be read: {', '.join(skipped[:3])}"
              + (f", and {len(skipped) - 3} more" if len(skipped) > 3 else ""), file=sys.stderr)
    print(f"checkpoint {out / CHECKPOINT_NAME} (load it with --model {name} --checkpoint {out / CHECKPOINT_NAME})")
    print(f"results in {out}")
