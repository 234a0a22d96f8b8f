"""`adversarial`: white-box robustness under torchattacks attacks per eps (docs/protocols.md,
"Adversarial robustness"). Attacks see pixels in [0, 1]; the target is the label where known,
else the clean top-1 prediction (label-free: the headline is then the flip rate). Each image's
random start comes from (seed, attack setting, repeat, image index), so results do not depend
on the batch size or on model order.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..options import name_list, non_negative_int, option, positive_int
from .base import Extra, Key, Probe, Unit, UnitResult, clean_forward, require_finite

EXAMPLE = "example_"  # Extra(EXAMPLE + field): the shown setting's first images for adversarial_examples/<model>.npz

NORMS = ("Linf", "L2")


def magnitude_list(text: str) -> tuple[str, ...]:
    """'1,2,4/255' -> ('1', '2', '4/255'), each checked to be a number or fraction (never eval'd)."""
    from ..core.adversarial import parse_magnitude

    items = tuple(item.strip() for item in str(text).split(",") if item.strip())
    for item in items:
        parse_magnitude(item)
    if not items:
        raise ValueError("give at least one value")
    return items


def magnitude(text: str) -> str:
    items = magnitude_list(text)
    if len(items) != 1:
        raise ValueError(f"'{text}': give one value")
    return items[0]


@dataclass(frozen=True)
class AdversarialConfig:
    attack: tuple[str, ...] = option(("fgsm", "pgd"), "fgsm, pgd, autoattack or any eps-bounded torchattacks attack "
                                     "by name (apgd, bim, mifgsm, square, ...), comma-separated (default fgsm,pgd)",
                                     parse=name_list, metavar="NAME[,NAME]")
    eps: tuple[str, ...] | None = option(None, "perturbation budgets on pixels in [0, 1]: Linf in 1/255 units (4 = "
                                         "4/255), L2 absolute; 'k/255' items are absolute fractions (default Linf "
                                         "1,2,4,8; L2 0.25,0.5,1,2)", parse=magnitude_list, metavar="E[,E]")
    norm: str = option("Linf", "threat model (default Linf; pgd becomes PGDL2)", choices=NORMS)
    steps: int | None = option(None, "iterations of iterative attacks (default 10; autoattack 100, as the original)",
                               parse=positive_int, metavar="K")
    alpha: str | None = option(None, "step size, same units as --eps (default eps/4)", parse=magnitude, metavar="A")
    random_start: bool | None = option(None, "start from a uniform random point in the eps ball (default: the "
                                       "attack's own; PGD on)")
    restarts: int = option(1, "random restarts; each image keeps its worst case (default 1)", parse=positive_int,
                           metavar="R")
    autoattack_version: str = option("standard", "AutoAttack version (default standard: APGD-CE, APGD-T, FAB-T, "
                                     "Square)", choices=("standard", "plus", "rand"))
    target_classes: int = option(9, "classes the targeted parts of autoattack/apgdt/fab attack, capped by the "
                                 "model's class count (default 9, the original AutoAttack's)", parse=positive_int,
                                 metavar="N")
    save_examples: int = option(0, "save and draw K clean / perturbation / adversarial examples per model (last "
                                "attack, largest eps; default 0)", parse=non_negative_int, metavar="K")

    def specs(self) -> list[Any]:
        """Validated settings of every attack x eps (UsageError on a bad combination)."""
        from ..core.adversarial import DEFAULT_EPS, make_specs

        eps = list(self.eps) if self.eps is not None else list(DEFAULT_EPS[self.norm])
        return make_specs(list(self.attack), self.norm, eps, self.alpha, self.steps, self.random_start,
                          self.restarts, self.autoattack_version, self.target_classes)


class AdversarialProbe(Probe):
    name = "adversarial"
    help = "adversarial robustness: robust accuracy (or flip rate) under FGSM, PGD, AutoAttack, ... per eps"
    figure_captions = {  # figure file stem (or its start) -> what it shows
        "adversarial_heatmap": "robust accuracy (or flip rate without labels) of every model at every eps, one "
                               "colour scale 0-100%",
        "adversarial_examples": "clean images beside their adversarial versions and the perturbation",
        "adversarial": "robust accuracy (or flip rate without labels) against the attack's eps, clean point first "
                       "(95% Wilson intervals)"}
    Config = AdversarialConfig
    setting_columns = ("attack", "norm", "eps", "steps", "alpha", "random_start", "restarts")
    plot = "stm_probe.plots.adversarial:plot_adversarial"

    def __init__(self, config: AdversarialConfig, session: Any) -> None:
        super().__init__(config, session)
        self.specs = {}

    def check(self) -> list[str]:
        specs = self.config.specs()
        self.specs = {spec.key(): spec for spec in specs}
        shown = max((s for s in specs if s.name == specs[-1].name), key=lambda s: s.eps)
        self.shown_key = shown.key()
        return []

    def manifest(self) -> dict[str, Any]:
        import torchattacks

        return dict(adversarial={
            "settings": [s.settings() for s in self.specs.values()],
            "eps_units": "1/255 of the [0, 1] pixel range" if self.config.norm == "Linf" else "absolute L2",
            "target": "label where known, else the clean top-1 prediction",
            "random_starts": "per image: seeds.image_seeds(stream (seed, 'adversarial', setting, repeat), image index)",
            "parameters_frozen_during_attack": True, "torchattacks": torchattacks.__version__})

    @property
    def statistics(self) -> dict[str, str]:  # type: ignore[override]
        from ..core.adversarial import METRIC_STATISTICS

        return METRIC_STATISTICS

    @staticmethod
    def compare_columns(name: str, frame: Any) -> list[Any]:
        """compare's headline columns (`stm_probe.probes.columns.HeadlineSpec`) from this analysis's tidy
        CSV ``frame``; ``name``: the analysis's name in the comparison."""
        from .columns import HeadlineSpec, matches

        specs = []
        settings = frame[["attack", "norm", "eps"]].drop_duplicates()
        for attack, norm, eps in settings.itertuples(index=False):
            where = {"attack": attack, "norm": norm, "eps": float(eps)}
            eps_text = f"{eps:g}/255" if norm == "Linf" else f"{eps:g}"
            rows = frame[matches(frame["attack"], attack) & matches(frame["norm"], norm) & matches(frame["eps"], eps)]
            if (rows["metric"] == "robust_acc").any():
                specs.append(HeadlineSpec(
                    name, f"{name}:{attack}:{norm}:{eps:g}", f"{attack} robust acc. @{eps_text} (%)", "robust_acc", where,
                    test="mcnemar", describe=f"share of images classified correctly both clean and under {attack} "
                                             f"({norm}, eps {eps_text}); higher = more robust",
                    claim=f"{{a}} is more robust than {{b}} to {attack} at eps {eps_text}"))
            elif (rows["metric"] == "flip_rate").any():
                specs.append(HeadlineSpec(
                    name, f"{name}:{attack}:{norm}:{eps:g}", f"{attack} flip rate @{eps_text} (%)", "flip_rate", where,
                    better="lower", test="mcnemar",
                    describe=f"share of images whose top-1 prediction {attack} ({norm}, eps {eps_text}) changes "
                             "(no labels: robustness of the prediction); lower = more robust",
                    claim=f"{{a}} is more robust than {{b}} to {attack} at eps {eps_text}"))
        return specs

    def units(self) -> list[Unit]:
        return [Unit(f"{s.name} {s.norm} eps={s.eps:g}", (key,)) for key, s in self.specs.items()]

    def _columns(self, spec: Any) -> tuple:
        return (spec.name, spec.norm, spec.eps, spec.steps, spec.alpha, spec.random_start, spec.restarts)

    def measure(self, model: Any, unit: Unit, batch: Any) -> dict[Key, np.ndarray]:
        import torch

        from ..core.adversarial import check_perturbation, image_outcomes, per_image_metrics, run_attack, targets_for
        from ..core.seeds import image_seeds, stream_id

        spec = self.specs[unit.parts[0]]
        images, labels, clean_logits = clean_forward(model, batch, self.session.device)
        targets = targets_for(labels, clean_logits)
        seeds = image_seeds(stream_id(self.session.seed, self.name, spec.key(), unit.repeat), batch.indices)
        adv, adv_logits = run_attack(model.net, spec, images, targets, seeds, clean_logits.shape[1])
        require_finite(adv_logits, model.name, "logits on adversarial images")
        norms = check_perturbation(images, adv, spec)
        metrics = per_image_metrics(image_outcomes(clean_logits, adv_logits, labels, targets, norms))
        columns = self._columns(spec)
        out = {(*columns, metric): values for metric, values in metrics.items()}
        if self.config.save_examples and unit.repeat == 0 and unit.parts[0] == self.shown_key:
            keep = (batch.indices < self.config.save_examples).cpu()
            fields = {"clean": images, "adversarial": adv, "label": labels, "clean_pred": clean_logits.argmax(1),
                      "adv_pred": adv_logits.argmax(1), "clean_prob": clean_logits.softmax(1).amax(1),
                      "adv_prob": adv_logits.softmax(1).amax(1),
                      "num_classes": torch.full_like(labels, clean_logits.shape[1])}
            for name, value in fields.items():
                out[(*columns, Extra(f"{EXAMPLE}{name}"))] = value.detach().cpu()[keep].numpy()
        return out

    def constants(self) -> dict[str, Any]:
        return {"autoattack_version": self.config.autoattack_version, "target_classes": self.config.target_classes}

    def artefacts(self, out_dir: Path, results: list[UnitResult]) -> list[Path]:
        """``adversarial_examples/<model>.npz``: the first K clean / adversarial images of the shown setting."""
        from ..files import atomic_path

        written = []
        for result in results:
            example = {k[-1].name.removeprefix(EXAMPLE): v for k, v in result.values.extras().items()
                       if k[-1].name.startswith(EXAMPLE)}
            if not example or not len(example["clean"]):
                continue
            spec = self.specs[result.unit.parts[0]]
            names = np.array(class_names(int(example.pop("num_classes")[0])))
            data = {**example, "clean_name": names[example["clean_pred"]], "adv_name": names[example["adv_pred"]],
                    "attack": np.array(spec.name), "norm": np.array(spec.norm), "eps": np.array(spec.eps),
                    "eps_abs": np.array(spec.eps_abs)}
            path = examples_path(out_dir, result.columns["model"])
            with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                np.savez_compressed(handle, **data)
            written.append(path)
        return written

    def headline(self, frame: Any) -> list[str]:
        labelled = (frame["metric"] == "robust_acc").any()
        metric = "robust_acc" if labelled else "flip_rate"
        lines = [f"  {'robust accuracy' if labelled else 'flip rate (no labels: target = clean top-1)'} % at each eps"]
        sel = frame[frame["metric"] == metric]
        for (model, attack, norm), rows in sel.groupby(["model", "attack", "norm"], sort=False):
            unit = "/255" if norm == "Linf" else ""
            cells = "  ".join(f"{r.eps:g}{unit}: {r.value:.1f}" for r in rows.itertuples())
            lines.append(f"  {model} {attack} ({norm}): {cells}")
        return lines


def examples_path(out_dir: Path, model: str) -> Path:
    """Where the example tensors of a model are saved."""
    return Path(out_dir) / "adversarial_examples" / f"{model}.npz"


def class_names(num_classes: int) -> list[str]:
    """Short class names: ImageNet-1k descriptions for 1000 classes, else 'class i'."""
    if num_classes == 1000:
        from timm.data import ImageNetInfo

        info = ImageNetInfo("imagenet-1k")
        return [info.index_to_description(i).split(",")[0] for i in range(num_classes)]
    return [f"class {i}" for i in range(num_classes)]
