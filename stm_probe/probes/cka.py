"""`cka`: centred kernel alignment between the layers of every model and across models
(docs/protocols.md, "Representation similarity (CKA)"; maths in `stm_probe.core.cka`).

Per model (and, with ``--compare-init``, its freshly initialised copy) the probe keeps only Gram
matrices over images: ``full`` reads all images as one loader batch and returns, per layer, the
centred linear Gram matrix (n, n) (one row per image); ``minibatch`` reads minibatches of
``--minibatch-size`` images (aligned to image positions, so every model and every process sees the
same minibatches) and returns each minibatch's Gram matrix (rows padded with NaN to the minibatch
size). Features never outlive one batch of one model. CKA between every pair of (model, layer) is
computed from the saved Gram matrices once every model has run (`CkaProbe.summarise_results`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UsageError
from ..options import name_list, option, positive_int
from .base import Extra, Key, Probe, Unit, UnitResult

# kept in step with stm_probe.core.cka (which imports torch); checked by a test
LAYERS = ("stages", "blocks")
KERNELS = ("linear", "rbf")
ESTIMATORS = ("auto", "full", "minibatch")
#: --estimator auto takes ``full`` up to this many images (features of one tiny model at 224 px: about 2.3 GB
#: for stages, 2.2 GB for blocks at the lower limit), ``minibatch`` beyond
AUTO_FULL_IMAGES = {"stages": 1000, "blocks": 250}
METRIC = "cka"
GRAM = Extra("gram")  # per-image rows of Gram matrices: artefact data, not a metric


@dataclass(frozen=True)
class CkaConfig:
    layers: str = option("stages", "stages: each stage's output (unified models: after the stage norm; timm: the "
                         "features_only stages; default); blocks: every block's output (unified models only)",
                         choices=LAYERS)
    kernel: tuple[str, ...] = option(("linear",), "linear (default), rbf (median-heuristic bandwidth), or both",
                                     parse=name_list, choices=KERNELS, metavar="KERNEL[,KERNEL]")
    estimator: str = option("auto", "full: centred Gram matrices over all images (Kornblith et al. 2019); minibatch: "
                            "unbiased HSIC summed over minibatches (Nguyen et al. 2021); auto (default): full up to "
                            f"{AUTO_FULL_IMAGES['stages']} images ({AUTO_FULL_IMAGES['blocks']} with --layers blocks), "
                            "else minibatch", choices=ESTIMATORS)
    minibatch_size: int = option(256, "images per minibatch of the minibatch estimator (default 256; at least 4)",
                                 parse=positive_int, metavar="M")
    compare_init: bool = option(False, "also measure a freshly initialised, seeded copy of each checkpointed model, "
                                "so CKA between trained and initial representations is in the table")

    def __post_init__(self) -> None:
        if not self.kernel:
            raise UsageError(f"--kernel: give at least one of {', '.join(KERNELS)}")
        if self.minibatch_size < 4:
            raise UsageError(f"--minibatch-size {self.minibatch_size}: the unbiased HSIC estimator needs at least 4 "
                             "images per minibatch; give 4 or more (e.g. 256)")


class CkaProbe(Probe):
    name = "cka"
    uses_labels = False  # stage features only: no label is read
    help = "representation similarity: linear/RBF CKA between every layer of every model, within and across models"
    Config = CkaConfig
    setting_columns = ("layer", "other_model", "other_weights", "other_layer", "kernel", "estimator")
    randomised = False
    plot = "stm_probe.plots.cka:plot_cka"
    skip_reason = "no Gram matrix could be computed (the model's features are not finite)"

    def __init__(self, config: CkaConfig, session: Any) -> None:
        super().__init__(config, session)
        self.estimator = config.estimator
        self._init_nets: dict[str, Any] = {}

    # --- settings ----------------------------------------------------------------------------------
    def check(self) -> list[str]:
        from ..core import cka

        assert (LAYERS, KERNELS, ESTIMATORS[1:]) == (cka.LAYERS, cka.KERNELS, cka.ESTIMATORS), \
            "probes.cka constants out of step with stm_probe.core.cka"
        if self.session.options.repeats > 1:
            raise UsageError("--repeats: cka draws nothing at random; drop --repeats")
        n, notes = len(self.session.source), []
        if self.estimator == "auto":
            self.estimator = "full" if n <= AUTO_FULL_IMAGES[self.config.layers] else "minibatch"
        if self.estimator == "minibatch" and n < 2 * self.config.minibatch_size:
            notes.append(f"the minibatch estimator has {-(-n // self.config.minibatch_size)} minibatch(es) of "
                         f"{self.config.minibatch_size} images: its bootstrap over minibatches needs at least two (lower "
                         "--minibatch-size), else the intervals are NaN")
        if self.config.compare_init and not self.session.checkpoints:
            notes.append("--compare-init does nothing without --checkpoint: the models are already at random init")
        return notes

    def check_model(self, model: Any) -> list[str]:
        from ..models.unified import UnifiedNet

        net = model.net.model
        if self.config.layers == "blocks" and not isinstance(net, UnifiedNet):
            raise UsageError(f"--layers blocks reads the blocks of unified models; {model.name} is not one: use "
                             "--layers stages")
        if not isinstance(net, UnifiedNet) and not (hasattr(net, "forward_intermediates")
                                                    and getattr(net, "feature_info", None)):
            raise UsageError(f"{model.name} exposes no feature stages, which cka reads: choose a unified model or a "
                             "timm model with features_only support")
        return []

    def loader_batch_size(self) -> int:
        """full: every image in one batch (its Gram matrix needs them all); minibatch: one minibatch."""
        if self.estimator == "full":
            return max(len(self.session.source), 1)
        return self.config.minibatch_size

    def units(self) -> list[Unit]:
        units = [Unit("gram", (self.estimator, self.config.layers))]
        if self.config.compare_init and self.session.checkpoints:
            units.append(Unit("init copy gram", (self.estimator, self.config.layers, "init")))
        return units

    def unit_columns(self, model: Any, unit: Unit) -> dict[str, str]:
        columns = model.columns()
        if "init" in unit.parts:
            columns["weights"] = "random-init (copy)"
        return columns

    # --- measuring -----------------------------------------------------------------------------------
    def _net(self, model: Any, unit: Unit) -> Any:
        if "init" not in unit.parts or model.weights == "random-init":
            return model.net
        if model.name not in self._init_nets:
            self._init_nets = {model.name: self._init_copy(model)}  # one copy in memory at a time
        return self._init_nets[model.name]

    def _init_copy(self, model: Any) -> Any:
        """A newly initialised copy of ``model`` (as built, seeded by the run's seed and the model's name)."""
        from ..models import create_model
        from ..models.features import Normalized
        from ..core.seeds import seeded, stream_seed

        with seeded(stream_seed(self.session.seed, "cka-init-copy", model.name), self.session.device):
            fresh = create_model(model.name, num_classes=model.num_classes or 1000,
                                 input_size=self.session.options.input_size).to(self.session.device)
        if self.session.precision is not None:  # the copy runs at the precision of the run, like the model
            from ..runtime.precision import apply_precision

            apply_precision(fresh, self.session.precision, self.session.device.type)
        return Normalized(fresh).eval()

    def measure(self, model: Any, unit: Unit, batch: Any) -> dict[Key, np.ndarray]:
        """Per layer, the rows (B, width) of the batch's centred linear Gram matrix; width: B (full) or the
        minibatch size (minibatch; padded with NaN)."""
        from ..core.cka import batch_grams, layer_names

        net = self._net(model, unit)
        names = layer_names(net.model, self.config.layers)
        grams = batch_grams(net, batch.images, self.config.layers, self.session.options.batch_size,
                            self.session.device)
        width = batch.images.shape[0] if self.estimator == "full" else self.config.minibatch_size
        out = {}
        for name, gram in zip(names, grams):
            rows = np.full((gram.shape[0], width), np.nan)
            rows[:, :gram.shape[1]] = gram.numpy()
            if not np.isfinite(rows[:, :gram.shape[1]]).all():
                raise UsageError(f"{model.name} produced non-finite features at {name} (NaN/Inf): its weights or "
                                 "inputs are broken; check the checkpoint")
            out[(name, GRAM)] = rows
        return out

    # --- summaries -----------------------------------------------------------------------------------
    def summarise_results(self, results: list[UnitResult], seed: int) -> list[tuple[UnitResult, dict[Key, tuple]]]:
        """CKA between every pair of (model, layer) over all results, both orders, with bootstrap intervals."""
        import torch

        from ..core import cka
        from ..core.seeds import stream_seed

        if not results:
            return []
        first = results[0].indices
        for result in results[1:]:
            if not np.array_equal(result.indices, first):
                raise UsageError(f"cka: {result.columns['model']} measured other images than "
                                 f"{results[0].columns['model']}; CKA pairs the same images: rerun without --resume")
        entries = [(result, key[0]) for result in results for key in result.values if key[-1] == GRAM]
        n_boot = self.session.options.bootstrap
        device = self.session.device
        summaries: list[dict[Key, tuple]] = [{} for _ in results]
        owner = [next(k for k, r in enumerate(results) if r is result) for result, _ in entries]
        for kernel in self.config.kernel:
            boot_seed = stream_seed(seed, "bootstrap", self.name, kernel, self.estimator)
            if self.estimator == "full":
                grams = torch.stack([torch.as_tensor(r.values[(layer, GRAM)]) for r, layer in entries]).to(device)
                grams = cka.kernel_grams(grams, kernel)
                value = cka.cka_full(grams).cpu().numpy()
                low, high = cka.bootstrap_full(grams, n_boot, boot_seed)
                n = int(len(first))
            else:
                blocks = self._blocks(entries, first, kernel, device)
                value = cka.cka_minibatch(blocks).cpu().numpy()
                low, high = cka.bootstrap_minibatch(blocks, n_boot, boot_seed)
                n = int(sum(b.shape[-1] for b in blocks))
            for i, (_, layer) in enumerate(entries):
                for j, (other, other_layer) in enumerate(entries):
                    key = (layer, other.columns["model"], other.columns["weights"], other_layer, kernel,
                           self.estimator, METRIC)
                    summaries[owner[i]][key] = (float(value[i, j]), float(low[i, j]), float(high[i, j]), n, 0)
        return list(zip(results, summaries))

    def _blocks(self, entries: list[tuple[UnitResult, str]], indices: np.ndarray, kernel: str,
                device: Any) -> list[Any]:
        """Per minibatch of at least 4 images, the (P, m, m) kernel Gram matrices of every entry."""
        import torch

        from ..core import cka

        groups = indices // self.config.minibatch_size
        blocks = []
        for group in np.unique(groups):
            rows = np.flatnonzero(groups == group)
            if len(rows) < 4:
                continue  # the unbiased estimator needs 4 images; left out (n_images says so)
            stacked = torch.stack([torch.as_tensor(r.values[(layer, GRAM)][rows][:, :len(rows)])
                                   for r, layer in entries]).to(device)
            blocks.append(cka.kernel_grams(stacked, kernel))
        if not blocks:
            raise UsageError(f"cka: no minibatch holds 4 images (the unbiased HSIC estimator's minimum) with "
                             f"--minibatch-size {self.config.minibatch_size}: use --estimator full or more images")
        return blocks

    def headline(self, frame: Any) -> list[str]:
        """Per kernel: each model's mean CKA with the other models at the same last layer."""
        lines = []
        for kernel in self.config.kernel:
            sel = frame[(frame["kernel"] == kernel) & (frame["layer"] == frame["other_layer"])
                        & ((frame["model"] != frame["other_model"]) | (frame["weights"] != frame["other_weights"]))]
            if not len(sel):
                continue
            last = sel["layer"].iloc[-1]
            sel = sel[sel["layer"] == last]
            means = sel.groupby(["model", "weights"], sort=False)["value"].mean()
            parts = [f"{m}{' (init copy)' if w.startswith('random-init (copy)') else ''} {v:.3f}"
                     for (m, w), v in means.items()]
            lines.append(f"  {kernel} CKA with the other models at {last} (mean): {', '.join(parts)}")
        return lines
