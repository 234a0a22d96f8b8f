"""The learning curve of a `stm-probe train` run, drawn from its ``train_log.csv`` only.

Three panels against the epoch: loss (training loss with label smoothing, validation
cross-entropy; nats), accuracy (training, on the fly over the epoch's batches, and validation;
percent) and the learning rate at the epoch's last step.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from ..errors import UsageError
from ..runtime.results import read_table
from .figures import save_figure
from .style import FigureStyle, resolve_style

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


#: Okabe-Ito blue and orange
TRAIN_COLOUR, VAL_COLOUR = "#0072B2", "#E69F00"


def plot_train(out_dir: str | Path, probe: str = "train", *, sources: Sequence[Path] | None = None,
               style: FigureStyle | None = None) -> list[Path]:
    """``train_curve.png/.pdf`` in ``out_dir`` from the ``train_log.csv`` of ``sources[0]`` (default
    ``out_dir``); returns the paths written."""
    out_dir = Path(out_dir)
    folder = Path((sources or [out_dir])[0])
    style = style or resolve_style(folder)
    log = read_log(folder / LOG_NAME)
    epoch = log["epoch"]
    with style.context():
        fig, axes = style.subplots(1, 3)
        loss_ax, acc_ax, lr_ax = axes[0]
        for ax, column, label, colour, marker in ((loss_ax, "train_loss", "train (label-smoothed)", TRAIN_COLOUR, "o"),
                                                  (loss_ax, "val_loss", "val", VAL_COLOUR, "s"),
                                                  (acc_ax, "train_acc", "train", TRAIN_COLOUR, "o"),
                                                  (acc_ax, "val_acc", "val", VAL_COLOUR, "s")):
            ax.plot(epoch, log[column], marker=marker, color=colour, label=label)
        loss_ax.set_ylabel("loss (nats)")
        acc_ax.set_ylabel("accuracy (%)")
        acc_ax.set_ylim(0, 100)
        lr_ax.plot(epoch, log["lr"], marker="o", color="0.4")
        lr_ax.set_ylabel("learning rate (last step)")
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        for ax in (loss_ax, acc_ax, lr_ax):
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        loss_ax.legend()
        acc_ax.legend(loc="lower right")
        return save_figure(fig, out_dir / "train_curve")
