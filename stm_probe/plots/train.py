"""The learning curve of a `stm-probe train` run, drawn from its ``train_log.csv`` only.

Three panels against the epoch: loss (training loss with label smoothing, validation
cross-entropy; nats), accuracy (training, on the fly over the epoch's batches, and validation;
percent) and the learning rate at the epoch's last step.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import UsageError
from ..report import read_table, save_figure, use_headless_backend

LOG_NAME = "train_log.csv"
COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")


def read_log(path: str | Path) -> pd.DataFrame:
    """``train_log.csv`` as numbers, sorted by epoch; one-line UsageError naming the file when it is
    missing, empty, lacks a column or holds something that is not a finite number."""
    path = Path(path)
    frame = read_table(path, COLUMNS, "the training (or --resume it)")
    for column in COLUMNS:
        numbers = pd.to_numeric(frame[column], errors="coerce")
        bad = ~numbers.apply(lambda v: pd.notna(v) and abs(v) != float("inf"))
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise UsageError(f"{path}: column {column!r} holds {frame[column].iloc[row]!r} (row {row + 2}), not a "
                             "finite number: the file is damaged; rerun the training")
        frame[column] = numbers
    return frame.sort_values("epoch")


def plot_train(out_dir: str | Path, probe: str = "train") -> list[Path]:
    """``train_curve.png/.pdf`` in ``out_dir`` from its ``train_log.csv``; returns the paths written."""
    use_headless_backend()
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    log = read_log(out_dir / LOG_NAME)
    epoch = log["epoch"]
    fig, (loss_ax, acc_ax, lr_ax) = plt.subplots(1, 3, figsize=(10.5, 3.0))
    for ax, column, label, colour in ((loss_ax, "train_loss", "train (label-smoothed)", "tab:blue"),
                                      (loss_ax, "val_loss", "val", "tab:orange"),
                                      (acc_ax, "train_acc", "train", "tab:blue"),
                                      (acc_ax, "val_acc", "val", "tab:orange")):
        ax.plot(epoch, log[column], marker="o", markersize=3, color=colour, label=label)
    loss_ax.set_ylabel("loss (nats)")
    acc_ax.set_ylabel("accuracy (%)")
    acc_ax.set_ylim(0, 100)
    lr_ax.plot(epoch, log["lr"], marker="o", markersize=3, color="tab:gray")
    lr_ax.set_ylabel("learning rate (last step)")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    for ax in (loss_ax, acc_ax, lr_ax):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    loss_ax.legend(fontsize=8)
    acc_ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, out_dir / "train_curve")
