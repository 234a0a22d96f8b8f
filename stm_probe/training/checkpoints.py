"""A training run's files: ``checkpoint.pth`` (`save_checkpoint`, `restore`, `read_resume_checkpoint`)
and ``train_log.csv`` (`write_log`)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..options import settings_dict
from .config import TrainConfig, numeric_settings

if TYPE_CHECKING:
    from .trainer import Trainer

CHECKPOINT_NAME = "checkpoint.pth"
LOG_NAME = "train_log.csv"
LOG_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s", "seconds")


def save_checkpoint(path: Path, trainer: Trainer, state: dict[str, Any]) -> None:
    """Write ``checkpoint.pth`` atomically: {'model': state_dict (CPU), 'num_classes', 'arch', 'config',
    'class_names', 'input_size', 'metrics' (the epoch's row), 'epoch', 'history' (every row so far),
    'trained' (how it was trained: data, label space, class names, input size, epochs, val accuracy %;
    `stm_probe.label_spaces.trained_summary`),
    'optimizer', 'scheduler', 'scaler', 'rng' (torch CPU and CUDA states)}; readable with
    ``torch.load(weights_only=True)``."""
    import torch

    from ..files import atomic_path

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



def write_log(path: Path, history: list[dict[str, float]]) -> None:
    """``train_log.csv``: one row per epoch, columns `LOG_COLUMNS` (accuracies in percent)."""
    import io

    from ..files import write_text

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(LOG_COLUMNS)
    for row in history:
        writer.writerow([int(row["epoch"])] + [f"{row[c]:.9g}" for c in LOG_COLUMNS[1:]])
    write_text(path, text.getvalue())
