"""`Trainer`: the model, optimiser, schedule and precision of one training run, and an epoch of
training and of validation with them (one process or several under torchrun); `build_trainer` makes
one."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ..errors import UsageError
from .config import TrainConfig
from .images import DecodedImages, augment
from .schedule import WarmupCosine, param_groups, steps_per_epoch

if TYPE_CHECKING:
    import torch


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
