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

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import UsageError
from ..options import check_unified_input_size, coerce, settings_dict
from .checkpoints import (
    CHECKPOINT_NAME,
    LOG_COLUMNS,
    LOG_NAME,
    read_resume_checkpoint,
    restore,
    save_checkpoint,
    write_log,
)
from .config import TrainConfig, numeric_settings
from .images import check_memory, decode
from .schedule import steps_per_epoch
from .splits import class_count, resolve_splits, training_data
from .trainer import NonFiniteLoss, build_trainer

if TYPE_CHECKING:
    from torch import nn

#: the learning-curve figure drawn at the end of a run ("module:function(out_dir, 'train')", resolved when
#: it is drawn: the figures are a layer above training)
TRAIN_PLOT = "stm_probe.plots.train:plot_train"


def run_training(values: dict[str, Any], call: dict[str, Any] | None = None,
                 on_epoch_end: Callable[[int, dict[str, float], "nn.Module"], None] | None = None,
                 plot: str | None = TRAIN_PLOT) -> dict[str, Any]:
    """The command line's entry: ``values`` (option name -> value or text; None = not given) into a
    `TrainConfig` (one-line UsageError on a bad value or unknown name), then `train`."""
    config = coerce(TrainConfig, {k: v for k, v in values.items() if v is not None}, where="train: ")
    return train(config, call=call, on_epoch_end=on_epoch_end, plot=plot)


# --- the run ---------------------------------------------------------------------------------------
def train(config: TrainConfig, call: dict[str, Any] | None = None,
          on_epoch_end: Callable[[int, dict[str, float], "nn.Module"], None] | None = None,
          plot: str | None = TRAIN_PLOT) -> dict[str, Any]:
    """Train ``config.model`` on ``config.data``; writes the run folder and returns a summary.

    ``on_epoch_end(epoch, row, model)`` is called after each epoch's checkpoint is saved (a
    progress hook; raising in it stops the run as an interruption would). ``plot`` ("module:function",
    called with the run folder and 'train'; None: no figure) draws the learning curve. Returns ``out``,
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
    if spec.is_unified:
        check_unified_input_size(config.input_size)
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
            _finish(out, record, config, spec, device, train_src, val_src, result, started, plot)
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
            result: dict[str, Any], started: float, plot: str | None) -> list[Path]:
    """The learning-curve figure (``plot``) and manifest.json (last)."""
    from ..checkpoint import file_sha256
    from ..runtime.manifest import device_description
    from ..runtime.outputs import plot_run

    outputs = [out / LOG_NAME, out / CHECKPOINT_NAME] + (plot_run(plot, out, "train") if plot else [])
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
