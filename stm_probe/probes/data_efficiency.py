"""`data-efficiency`: accuracy and shape bias of models trained on fractions of the synthetic set.

Do convolutions need less data than attention? For each model, each fraction ``f`` of the
synthetic training split (``--fractions``, default 1/16, 1/8, 1/4, 1/2, 1 of ``--train-images``)
and each training seed (``--seeds``, default 3), a fresh model with a ``K``-class head is trained
in memory (the `stm-probe train` recipe: AdamW, warm-up then cosine, label smoothing, gradient
clipping) on the first ``round(f * train_images)`` images of ``synthetic:train`` (class-balanced:
label = index mod K) for exactly ``--steps`` optimiser steps, the same budget at every fraction.
Nothing is written but the probe's own run folder; the session's model weights are not used.

Per unit (model x fraction x seed):

* ``val_acc``: per-image correctness (0 / 100) on the probe's images (default
  ``synthetic:val?classes=K``), a percentage with a Wilson interval;
* ``shape_bias``: on ``--cue-conflict-images`` images of the synthetic ``cue-conflict`` split
  (shape ``i`` filled with texture ``j != i``), shape hits / (shape hits + texture hits), a
  fraction in [0, 1] with a percentile bootstrap interval over those images; the decision is
  the argmax over the K classes. ``n_images`` is the number of cue-conflict images.

The seeds are the repeats: ``repeat_mean`` / ``repeat_low`` / ``repeat_high`` give the mean and
the Student-t 95% interval over seeds. Seed ``r`` of fraction ``f`` trains from
``stream_seed(seed, 'data-efficiency', f, r)`` (initial weights and shuffling), the same for
every model, so models are compared on the same draws.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import numpy as np

from ..errors import UsageError
from ..options import option, positive_int
from .base import Extra, Key, Probe, Unit

CUE = Extra("cue")  # per-unit cue-conflict decisions (not a metric): 1 shape hit, 2 texture hit, 0 neither
SHAPE_HIT, TEXTURE_HIT = 1.0, 2.0
DEFAULT_FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)


def fraction_list(text: str) -> tuple[float, ...]:
    """'1/16,0.25,1' -> (0.0625, 0.25, 1.0): fractions as p/q or decimals, each in (0, 1], sorted, unique."""
    values = []
    for item in (i.strip() for i in str(text).split(",") if i.strip()):
        try:
            value = float(Fraction(item))
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"'{item}' is not a fraction (give e.g. 1/16,1/4,1)") from None
        if not 0 < value <= 1:
            raise ValueError(f"'{item}' is not in (0, 1]")
        values.append(value)
    if not values:
        raise ValueError("give at least one fraction")
    return tuple(sorted(set(values)))


@dataclass(frozen=True)
class DataEfficiencyConfig:
    fractions: tuple[float, ...] = option(DEFAULT_FRACTIONS, "fractions of the training split to train on (default "
                                          "1/16,1/8,1/4,1/2,1)", parse=fraction_list, metavar="F,...")
    steps: int = option(300, "optimiser steps of every training run, the same at every fraction (default 300)",
                        parse=positive_int, metavar="N")
    seeds: int = option(3, "training seeds per model and fraction (the repeats; default 3)", parse=positive_int,
                        metavar="S")
    classes: int = option(8, "classes of the default data synthetic:val?classes=K (default 8)", parse=positive_int,
                          metavar="K")
    train_images: int = option(2048, "images of the full training split, fraction 1 (default 2048)",
                               parse=positive_int, metavar="N")
    train_batch: int = option(64, "images per optimiser step (default 64)", parse=positive_int, metavar="B")
    lr: float = option(1e-3, "peak learning rate of AdamW (default 0.001)", parse=float, metavar="LR")
    warmup: float = option(0.1, "linear warm-up as a fraction of --steps, then cosine decay to 0 (default 0.1)",
                           parse=float, metavar="F")
    cue_conflict_images: int = option(256, "cue-conflict images for the shape bias (default 256)",
                                      parse=positive_int, metavar="N")

    def __post_init__(self) -> None:
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise UsageError(f"--fractions {','.join(f'{f:g}' for f in self.fractions)}: give fractions in (0, 1]")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UsageError(f"--lr {self.lr}: give a positive number")
        if not 0 <= self.warmup < 1:
            raise UsageError(f"--warmup {self.warmup}: give a fraction of --steps in [0, 1)")
        smallest = train_count(min(self.fractions), self.train_images)
        if smallest < self.classes:
            raise UsageError(f"--fractions {min(self.fractions):g} of --train-images {self.train_images} is "
                             f"{smallest} image(s), fewer than the {self.classes} classes: raise --train-images")


def train_count(fraction: float, train_images: int) -> int:
    """Training images at ``fraction``: ``round(fraction * train_images)`` (the first ones of the split)."""
    return int(round(fraction * train_images))


def epochs_for(steps: int, num_images: int, batch: int) -> int:
    """Passes needed for ``steps`` optimiser steps of full batches (`steps_per_epoch`) over ``num_images``:
    ``ceil(steps / max(1, num_images // batch))``, i.e. ceil(steps * batch / n) when batch divides n."""
    from ..training.schedule import steps_per_epoch

    return math.ceil(steps / steps_per_epoch(num_images, batch))


def cue_codes(decision: np.ndarray, shape: np.ndarray, texture: np.ndarray) -> np.ndarray:
    """Per cue-conflict image (N,): 1 where ``decision`` is the shape class, 2 the texture class, 0 neither."""
    return np.where(decision == shape, SHAPE_HIT, np.where(decision == texture, TEXTURE_HIT, 0.0))


class DataEfficiencyProbe(Probe):
    name = "data-efficiency"
    help = "train on fractions of the synthetic set with a fixed step budget: val accuracy and shape bias per seed"
    Config = DataEfficiencyConfig
    setting_columns = ("fraction",)
    statistics = {"val_acc": "rate"}
    randomised = True
    plot = "stm_probe.plots.data_efficiency:plot_data_efficiency"
    skip_reason = "no image has a label to score"

    def __init__(self, config: DataEfficiencyConfig, session: Any) -> None:
        super().__init__(config, session)
        self._trained: dict[tuple[str, Unit], Any] = {}  # one trained model at a time
        self._cue: Any = None  # (images, shape labels, texture labels) of the cue-conflict split

    @classmethod
    def default_data(cls, config: DataEfficiencyConfig) -> str:
        return f"synthetic:val?classes={config.classes}"

    def check(self) -> list[str]:
        opts = self.session.options
        if opts.repeats > 1:
            raise UsageError(f"--repeats {opts.repeats}: data-efficiency repeats over training seeds; pass "
                             f"--seeds {opts.repeats} instead")
        if self.session.checkpoints:
            raise UsageError("--checkpoint: data-efficiency trains every model from scratch; drop --checkpoint")
        spec = self.session.source.synthetic
        if spec is not None and opts.input_size != spec.size:
            return [f"--input-size {opts.input_size} resizes the {spec.size} px synthetic images; pass --input-size "
                    f"{spec.size} (or size={opts.input_size} in --data) to train at the rendered size"]
        return []

    def model_label_space(self, model: Any) -> Any:
        """The models scored are trained here on the data's own K classes (the session's weights are
        not used), so they speak the data's label space."""
        from ..label_spaces import data_space

        self._spec()  # the synthetic set, or the one-line refusal
        return data_space(self.session.source)

    def repeated(self, units: list[Unit]) -> list[Unit]:
        """Each fraction for every training seed (``--seeds``)."""
        return [Unit(u.label if r == 0 else f"{u.label} (seed {r})", u.parts, r) for u in units
                for r in range(self.config.seeds)]

    def units(self) -> list[Unit]:
        return [Unit(f"fraction {f:g}", (f,)) for f in self.config.fractions]

    def unit_columns(self, model: Any, unit: Unit) -> dict[str, str]:
        columns = model.columns()
        columns["weights"] = f"trained here ({self.config.steps} steps)"
        return columns

    def constants(self) -> dict[str, Any]:
        c = self.config
        return {"steps": c.steps, "train_images": c.train_images, "train_batch": c.train_batch, "lr": c.lr}

    # --- training and the cue-conflict split ---------------------------------------------------
    def _spec(self) -> Any:
        spec = self.session.source.synthetic
        if spec is None:
            raise UsageError(f"--data {self.session.source.location}: data-efficiency measures on the synthetic set; "
                             f"pass --data synthetic:val?classes={self.config.classes} (or leave --data out)")
        return spec

    def train_seed(self, unit: Unit) -> int:
        from ..core.seeds import stream_seed

        return stream_seed(self.session.seed, self.name, unit.parts[0], unit.repeat)

    def train_model(self, name: str, unit: Unit) -> Any:
        """A fresh ``name`` with a K-class head trained on fraction ``unit.parts[0]`` for ``--steps``
        steps; returns the wrapped net (takes [0, 1] pixels, eval mode)."""
        spec = self._spec()
        source = train_source(spec, train_count(unit.parts[0], self.config.train_images))
        return train_steps(name, source, spec.classes, self.config, self.session.options.input_size,
                           self.train_seed(unit), self.session.device)

    def _cue_conflict(self) -> Any:
        if self._cue is None:
            from ..data.synthetic import synthetic_source
            from ..training.images import decode

            spec = replace(self._spec(), split="cue-conflict", num_images=self.config.cue_conflict_images)
            images = decode(synthetic_source(spec), self.session.options.input_size, 0, self.session.device, True,
                            "cue-conflict")
            indices = range(spec.num_images)
            shape = np.array([spec.shape_label(i) for i in indices], dtype=np.float64)
            texture = np.array([spec.texture_label(i) for i in indices], dtype=np.float64)
            self._cue = (images, shape, texture)
        return self._cue

    def cue_conflict_codes(self, net: Any) -> np.ndarray:
        """`cue_codes` of ``net``'s K-way decisions on the cue-conflict images (N,)."""
        images, shape, texture = self._cue_conflict()
        return cue_codes(predict(net, images, self.config.train_batch), shape, texture)

    # --- the loop's hooks ----------------------------------------------------------------------
    def measure(self, model: Any, unit: Unit, batch: Any) -> dict[Key, np.ndarray]:
        import torch

        from .base import require_finite

        key = (model.name, unit)
        if key not in self._trained:
            self._trained = {}  # free the previous unit's model first
            net = self.train_model(model.name, unit)
            self._trained[key] = (net, self.cue_conflict_codes(net))
            first = True
        else:
            first = False
        net, codes = self._trained[key]
        with torch.no_grad():
            logits = net(batch.images.to(self.session.device)).float()
        require_finite(logits, model.name)
        labels = np.asarray(batch.labels.cpu(), dtype=np.int64)
        correct = 100.0 * (logits.argmax(1).cpu().numpy() == labels)
        fraction = unit.parts[0]
        # the unit's cue-conflict decisions ride on the first image of its first batch (NaN elsewhere)
        cue = np.full((len(labels), codes.size), np.nan, dtype=np.float32)
        if first:
            cue[0] = codes
        return {(fraction, "val_acc"): np.where(labels >= 0, correct, np.nan), (fraction, CUE): cue}

    def summarise(self, values: dict[Key, np.ndarray], seed: int) -> dict[Key, tuple]:
        """val_acc as a rate; shape_bias from the cue-conflict decisions with a Wilson interval over them."""
        from ..core.shape_bias import shape_bias, shape_bias_interval

        out = super().summarise(values, seed)
        for key, cue in values.items():
            if key[-1] != CUE:
                continue
            rows = cue[np.isfinite(cue).all(axis=1)]
            if not len(rows):
                continue
            codes = rows[0].astype(np.float64)
            shape_hit, texture_hit = (codes == SHAPE_HIT) * 1.0, (codes == TEXTURE_HIT) * 1.0
            bias = shape_bias(shape_hit, texture_hit)
            if np.isnan(bias):
                continue  # no decision was the shape or the texture class: undefined
            low, high = shape_bias_interval(shape_hit, texture_hit)
            out[(*key[:-1], "shape_bias")] = (bias, low, high, int(codes.size), 0)
        return out

    def headline(self, frame: Any) -> list[str]:
        rows = frame[frame["metric"] == "val_acc"]
        if not len(rows):
            return []
        ends = rows[rows["fraction"].astype(float).isin([rows["fraction"].astype(float).min(),
                                                         rows["fraction"].astype(float).max()])]
        parts = [f"{r.model} @{float(r.fraction):g}: {r.repeat_mean:.1f}%" for r in ends.itertuples()]
        return [f"  val accuracy (mean over seeds): {', '.join(parts)}"]


# --- training, in memory -------------------------------------------------------------------------
def train_source(spec: Any, num_images: int) -> Any:
    """The first ``num_images`` images of the ``train`` split of ``spec``'s set (same classes, size, seed)."""
    from ..data.synthetic import SyntheticSpec, synthetic_source

    return synthetic_source(SyntheticSpec(split="train", classes=spec.classes, size=spec.size, seed=spec.seed,
                                          num_images=num_images))


def train_steps(name: str, source: Any, num_classes: int, config: DataEfficiencyConfig, input_size: int, seed: int,
                device: Any) -> Any:
    """Train a fresh ``name`` (seeded with ``seed``) on ``source`` for exactly ``config.steps`` steps of
    ``config.train_batch`` images; epoch e's order is drawn from (seed, 'train', e) as in `stm-probe train`.
    Returns the wrapped net in eval mode."""
    from ..core.seeds import seeded
    from ..training.config import TrainConfig
    from ..training.images import decode
    from ..training.schedule import steps_per_epoch
    from ..training.trainer import build_trainer

    data = decode(source, input_size, 0, device, True, "training")
    per_epoch = steps_per_epoch(len(data), config.train_batch)
    epochs = epochs_for(config.steps, len(data), config.train_batch)
    recipe = TrainConfig(model=name, data=str(source.location), epochs=epochs, batch_size=config.train_batch,
                         lr=config.lr, warmup_epochs=0.0, input_size=input_size, seed=seed, quiet=True)
    with seeded(seed, device):  # initial weights and the training's own draws; the caller's RNGs come back
        trainer = build_trainer(recipe, name, num_classes, device, total_steps=config.steps,
                                warmup_steps=round(config.warmup * config.steps))
        done = run_steps(trainer, data, config.steps, per_epoch)
    assert done == config.steps
    return trainer.net.eval()


def run_steps(trainer: Any, data: Any, steps: int, per_epoch: int) -> int:
    """``steps`` optimiser steps over ``data`` in seeded epochs of ``per_epoch`` full batches; returns
    the number of steps taken. A non-finite loss raises a one-line UsageError."""
    import torch
    import torch.nn.functional as F

    from ..core.seeds import stream_seed

    cfg = trainer.config
    trainer.net.train()
    done, epoch = 0, 0
    while done < steps:
        epoch += 1
        generator = torch.Generator().manual_seed(stream_seed(cfg.seed, "train", epoch))
        order = torch.randperm(len(data), generator=generator)
        for step in range(min(per_epoch, steps - done)):
            x, y = data.batch(order[step * cfg.batch_size:(step + 1) * cfg.batch_size])
            with trainer.autocast():
                logits = trainer.net(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            if not bool(torch.isfinite(loss)):
                raise UsageError(f"data-efficiency: non-finite training loss at step {done + 1} of {steps}: lower "
                                 f"--lr (now {cfg.lr:g})")
            trainer._step(loss)
            done += 1
    return done


def predict(net: Any, images: Any, batch: int) -> np.ndarray:
    """Argmax class (N,) float64 of ``net`` on decoded ``images`` (`DecodedImages`), in batches."""
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x, _ = images.batch(torch.arange(start, min(start + batch, len(images))))
            out.append(net(x).float().argmax(1).cpu())
    return torch.cat(out).numpy().astype(np.float64)
