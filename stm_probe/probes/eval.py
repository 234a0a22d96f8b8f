"""`eval`: classification accuracy and calibration of each model on labelled images, with its size,
cost and speed, beside the authors' published top-1.

Metrics (rows of ``eval.csv``; per-image values in ``per_image.csv``):

* ``top1``, ``top5``: percent of labelled images whose label is the top-1 / among the top-5 classes
  (per image 100 or 0), Wilson 95% interval; no ``top5`` row for a model with 5 classes or fewer.
* ``nll``: mean negative log-likelihood of the label (nats), seeded bootstrap interval.
* ``ece``: expected calibration error in percent, 15 equal-width confidence bins
  (`stm_probe.core.classification`), bootstrap interval over images recomputing the ECE.
* ``confidence``: mean top-1 softmax probability (a fraction in [0, 1]); beside top-1 it shows over-
  or under-confidence.
* ``params_m`` (millions of parameters), ``gmacs`` (multiply-accumulates of conv / linear / matmul for
  one image at ``--input-size``, torch's flop counter, as `stm_probe.models.complexity`): no interval.
* ``published_top1``: the authors' ImageNet-1k top-1 at 224 (``resources/published_numbers.csv``,
  from the paper's tables; unified models only), and ``top1_gap`` = measured - published (with the
  top-1 interval shifted), written only where the two are comparable: weights from a checkpoint, a
  1000-class head, ImageNet-1k labels (synset folders, a labelled list, or ``--labels`` on the flat
  validation folder; not the shift sets) and 224 px inputs. Otherwise the gap is left out and the
  summary says why. The gap assumes the images are the clean validation set.

Throughput (images/s, forward, eval mode, no gradients) is measured on the session's device at the
run's batch size and input size with a short protocol (`SPEED_WARMUP` + `SPEED_ITERATIONS`
iterations; `stm_probe.speed` has the paper's full protocol). Timing varies from run to run, so it is
kept out of ``eval.csv`` (whose numbers are reproducible) and written to ``models.csv``, one row per
model: model, stm, size, weights, checkpoint, params_m, gmacs, throughput_img_s, top1 with its
interval, top5, nll, ece, published_top1, top1_gap, n_images and the measuring conditions.

Eval needs labels. Without ``--data`` it runs on the synthetic validation split
(``synthetic:val``: 8 shape classes, labelled), a smoke test for a model trained on it (an ImageNet-1k
model is refused those labels unless ``--labels-as-index``); unlabelled data is refused.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..models.facts import PUBLISHED_CSV, published_top1
from .base import Extra, Key, Probe, Unit, UnitResult, _key_seed, clean_forward

DEFAULT_DATA = "synthetic:val"
SPEED_WARMUP = 2  # short throughput measurement inside eval (the paper's protocol: 10 + 100 at batch 128)
SPEED_ITERATIONS = 5
PUBLISHED_SIZE = 224  # the input size of the published numbers
VAL_NAME = re.compile(r"ILSVRC2012_val_\d{8}")  # the validation files' names (the published top-1's images)
#: label spaces of ImageNet-1k validation as users have it: synset folders or the devkit / Kaggle label files
#: ("imagenet-1k"), a list or filename,label CSV ("list"). Shift sets (imagenet-v2, -r, -a, -sketch) and
#: integer class folders are other test sets: no gap to the published ImageNet-1k top-1.
IMAGENET_LABEL_SPACES = ("imagenet-1k", "list")
#: per-model constants carried through the unit's values as (N,) arrays under `Extra` keys (not metrics)
FACTS = ("params_m", "gmacs", "throughput_img_s", "published_top1", "gap_comparable")
MODELS_COLUMNS = ("model", "stm", "size", "weights", "checkpoint", "params_m", "gmacs", "throughput_img_s", "top1",
                  "top1_ci_low", "top1_ci_high", "top5", "nll", "ece", "published_top1", "top1_gap", "n_images",
                  "input_size", "throughput_batch_size", "device")


@dataclass(frozen=True)
class EvalConfig:
    """eval has no settings of its own: the shared options (data, models, input size) define it."""


def count_gmacs_at(net: Any, input_size: int, device: Any) -> float:
    """GMACs of conv / linear / matmul of ``net`` for one (1, 3, S, S) image (torch's flop counter counts
    2 FLOPs per multiply-accumulate; grid_sample, softmax and norms are not counted), by one forward on
    ``device``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, input_size, input_size, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops() / 2e9


class EvalProbe(Probe):
    name = "eval"
    help = "top-1/top-5, NLL and ECE (15 bins) with CIs, params, GMACs and throughput, beside the published top-1"
    figure_captions = {"eval": "top-1 accuracy (95% Wilson intervals) per model; hollow "
                                  "diamonds: the paper's ImageNet-1k top-1 where known"}
    Config = EvalConfig
    setting_columns = ()
    statistics = {"top1": "rate", "top5": "rate", "nll": "mean", "confidence": "mean"}
    randomised = False
    plot = "stm_probe.plots.eval:plot_eval"
    skip_reason = "no image has a label to score"

    def __init__(self, config: EvalConfig, session: Any) -> None:
        super().__init__(config, session)
        self._facts: dict[str, dict[str, float]] = {}
        self._published = published_top1()

    @classmethod
    def default_data(cls, config: EvalConfig) -> str:
        return DEFAULT_DATA

    @staticmethod
    def compare_columns(name: str, frame: Any) -> list[Any]:
        """compare's headline columns (`stm_probe.probes.columns.HeadlineSpec`) from this analysis's tidy
        CSV ``frame``; ``name``: the analysis's name in the comparison."""
        from .columns import HeadlineSpec

        if not (frame["metric"] == "top1").any():
            return []
        return [HeadlineSpec(name, f"{name}:top1", "top-1 accuracy (%)", "top1", test="mcnemar",
                             describe="share of images whose top-1 prediction is the label", 
                             claim="{a} is more accurate than {b} (top-1)")]

    def check(self) -> list[str]:
        opts = self.session.options
        if opts.repeats > 1:
            return [f"eval draws nothing at random: --repeats {opts.repeats} has no effect"]
        return []

    def manifest(self) -> dict[str, Any]:
        opts = self.session.options
        return dict(eval={
            "metrics": "top1/top5 (Wilson), nll in nats (bootstrap), ece in percent over 15 equal-width confidence "
                       "bins (bootstrap over images), params_m, gmacs at input_size",
            "throughput": f"forward, eval mode, no gradients, batch {opts.batch_size} at {opts.input_size} px on "
                          f"{self.session.device}: {SPEED_WARMUP} warm-up + {SPEED_ITERATIONS} timed iterations "
                          "(models.csv)",
            "published": f"resources/{PUBLISHED_CSV} (ImageNet-1k top-1 at {PUBLISHED_SIZE} px, the paper's tables)"})

    def check_model(self, model: Any) -> list[str]:
        """Notes on a model whose published top-1 is not comparable, or whose classes are not the synthetic set's."""
        notes = []
        published = self._published.get(model.name, float("nan"))
        reason = self._gap_obstacle(model) if np.isfinite(published) else None
        if reason:
            notes.append(f"{model.name}: no gap to the published top-1 ({published:g}): {reason}")
        source = self.session.source
        if source.kind == "synthetic" and model.num_classes != len(source.class_names):
            notes.append(f"{model.name} has {model.num_classes} classes, the synthetic set {len(source.class_names)}: "
                         "its accuracy there is a smoke test; pass --data with the images it was trained for")
        return notes

    def constants(self) -> dict[str, Any]:
        from ..core.classification import ECE_BINS

        return {"ece_bins": ECE_BINS}

    # --- measuring -----------------------------------------------------------------------------------
    def measure(self, model: Any, unit: Unit, batch: Any) -> dict[Key, np.ndarray]:
        from ..core.classification import classification_values

        if not self.session.source.has_labels:
            raise UsageError(f"eval needs labelled images, but {self.session.source.location} has none: pass an "
                             "ImageFolder tree, a list file with labels, --labels FILE, or --data synthetic:val")
        facts = self._model_facts(model)
        _, labels, logits = clean_forward(model, batch, self.session.device)
        values = classification_values(logits, labels)
        out: dict[Key, np.ndarray] = {(name,): value for name, value in values.items()}
        out.update({(Extra(name),): np.full(len(labels), value, dtype=np.float64) for name, value in facts.items()})
        return out

    def _model_facts(self, model: Any) -> dict[str, float]:
        """params (M), GMACs, throughput, published top-1 and whether the gap is meaningful; once per model."""
        if model.name not in self._facts:
            from ..speed import measure_throughput

            opts = self.session.options
            device = self.session.device
            published = self._published.get(model.name, float("nan"))
            reason = self._gap_obstacle(model) if np.isfinite(published) else None
            self._facts[model.name] = {
                "params_m": sum(p.numel() for p in model.net.parameters()) / 1e6,
                "gmacs": count_gmacs_at(model.net, opts.input_size, device),
                "throughput_img_s": measure_throughput(model.net, opts.batch_size, opts.input_size, device,
                                                       SPEED_WARMUP, SPEED_ITERATIONS, backward=False),
                "published_top1": published,
                "gap_comparable": float(np.isfinite(published) and reason is None),
            }
        return self._facts[model.name]

    def _gap_obstacle(self, model: Any) -> str | None:
        """Why this model's top-1 here cannot be set against the published one (None: it can)."""
        source, opts = self.session.source, self.session.options
        if not model.weights.startswith("checkpoint"):
            return "the model is at random init"
        if source.label_space not in IMAGENET_LABEL_SPACES:
            return f"the images are not labelled as ImageNet-1k validation ({source.label_space} labels)"
        if model.num_classes != 1000:
            return f"its head has {model.num_classes} classes, not ImageNet-1k's 1000"
        not_val = next((p for p in source.paths if not VAL_NAME.fullmatch(Path(p).stem)), None)
        if not_val is not None:  # e.g. the train split, ImageNet-Sketch, a corrupted variant, a renamed copy
            return (f"the images are not the ILSVRC2012 validation files ({Path(not_val).name} is not named "
                    "ILSVRC2012_val_NNNNNNNN)")
        from ..core.corruption_metrics import benchmark_corruptions, extra_corruptions

        location = Path(str(source.location))
        if location.name in {"1", "2", "3", "4", "5"} and location.parent.name in (*benchmark_corruptions(),
                                                                                    *extra_corruptions()):
            return f"{location} is an ImageNet-C variant (<corruption>/<severity>), not the clean validation images"
        if opts.input_size != PUBLISHED_SIZE:
            return f"--input-size {opts.input_size}, the published number is at {PUBLISHED_SIZE}"
        return None

    # --- summaries -------------------------------------------------------------------------------------
    def summarise(self, values: dict[Key, np.ndarray], seed: int) -> dict[Key, tuple]:
        """Rates and means as the base class; ECE with its own bootstrap; the model facts without interval."""
        from ..core.classification import ece_summary

        metrics = {k: v for k, v in values.items() if k[-1] in self.statistics}
        base = super().summarise(metrics, seed)
        top1 = values[("top1",)]
        unlabelled = int(np.isnan(top1).sum())
        out: dict[Key, tuple] = {}
        for name in ("top1", "top5", "nll"):
            if (name,) in base:
                out[(name,)] = (*base[(name,)][:4], unlabelled)
        ece = ece_summary(values[("confidence",)], top1, self.session.options.bootstrap, _key_seed(seed, ("ece",)))
        out[("ece",)] = (*ece, unlabelled)
        out[("confidence",)] = (*base[("confidence",)][:4], unlabelled)
        n = int(out[("top1",)][3])
        facts = {name: _constant(values.get((Extra(name),))) for name in FACTS}
        for name in ("params_m", "gmacs"):
            out[(name,)] = (facts[name], float("nan"), float("nan"), n if np.isfinite(facts[name]) else 0, unlabelled)
        if facts["gap_comparable"] == 1.0:  # the published number only where it measures the same thing
            value, low, high = out[("top1",)][:3]
            published = facts["published_top1"]
            out[("published_top1",)] = (published, float("nan"), float("nan"), n, unlabelled)
            out[("top1_gap",)] = (value - published, low - published, high - published, n, unlabelled)
        return out

    def per_image(self, values: dict[Key, np.ndarray]) -> dict[Key, np.ndarray]:
        """top1, top5 (100 / 0), nll and confidence per labelled image (a metric that applies to none is left out)."""
        return {k: v for k, v in super().per_image(values).items() if np.isfinite(v).any()}

    # --- outputs ---------------------------------------------------------------------------------------
    def artefacts(self, out_dir: Path, results: list[UnitResult]) -> list[Path]:
        """``models.csv``: one row per model (see module docstring), from ``eval.csv`` and the throughput."""
        import pandas as pd

        from ..runtime.results import write_frame

        frame = pd.read_csv(out_dir / f"{self.name}.csv")
        opts = self.session.options
        rows = []
        for result in results:
            model, weights = result.columns["model"], result.columns["weights"]
            mine = frame[(frame["model"] == model) & (frame["weights"] == weights)].set_index("metric")

            def metric(name: str, column: str = "value") -> float:
                return float(mine.loc[name, column]) if name in mine.index else float("nan")

            checkpoint = self.session.checkpoints.get(model)
            rows.append({**result.columns, "checkpoint": Path(checkpoint).name if checkpoint else "",
                         "params_m": metric("params_m"), "gmacs": metric("gmacs"),
                         "throughput_img_s": _constant(result.values.get((Extra("throughput_img_s"),))),
                         "top1": metric("top1"), "top1_ci_low": metric("top1", "ci_low"),
                         "top1_ci_high": metric("top1", "ci_high"), "top5": metric("top5"), "nll": metric("nll"),
                         "ece": metric("ece"), "published_top1": self._published.get(model, float("nan")),
                         "top1_gap": metric("top1_gap"), "n_images": metric("top1", "n_images"),
                         "input_size": opts.input_size, "throughput_batch_size": opts.batch_size,
                         "device": str(self.session.device)})
        path = out_dir / "models.csv"
        write_frame(path, pd.DataFrame(rows, columns=list(MODELS_COLUMNS)))
        return [path]

    def headline(self, frame: Any) -> list[str]:
        lines = []
        for (model, weights), rows in frame.groupby(["model", "weights"], sort=False):
            m = rows.set_index("metric")

            def cell(name: str, fmt: str, unit: str = "", ci: bool = True) -> str:
                if name not in m.index:
                    return ""
                r = m.loc[name]
                interval = f" [{r.ci_low:{fmt}}, {r.ci_high:{fmt}}]" if ci and np.isfinite(r.ci_low) else ""
                return f"{r.value:{fmt}}{unit}{interval}"

            parts = [f"top-1 {cell('top1', '.1f', '%')}"]
            parts += [f"top-5 {cell('top5', '.1f', '%')}"] if "top5" in m.index else []
            parts += [f"NLL {cell('nll', '.3f')}", f"ECE {cell('ece', '.1f', '%')}",
                      f"{m.loc['params_m', 'value']:.2f} M params", f"{m.loc['gmacs', 'value']:.3g} GMACs"]
            speed = self._facts.get(model, {}).get("throughput_img_s")
            parts += [f"{speed:.0f} img/s"] if speed is not None else []
            if "published_top1" in m.index:
                gap = f", gap {m.loc['top1_gap', 'value']:+.1f}" if "top1_gap" in m.index else ""
                parts.append(f"published {m.loc['published_top1', 'value']:.1f}{gap}")
            lines.append(f"  {model} ({weights}): " + ", ".join(parts))
        return lines


def _constant(values: np.ndarray | None) -> float:
    """The value a per-model constant carried as an (N,) array holds (NaN if absent)."""
    if values is None:
        return float("nan")
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return float(finite[0]) if finite.size else float("nan")
