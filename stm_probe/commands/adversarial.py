"""`stm-probe adversarial`: robust accuracy (or flip rate) under FGSM, PGD, AutoAttack, ... per eps."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ..adversarial import (
    DEFAULT_EPS,
    NORMS,
    AttackSpec,
    Outcomes,
    attack_seed,
    check_perturbation,
    image_outcomes,
    make_specs,
    parse_magnitude,
    run_attack,
    summarise,
    targets_for,
)
from ..cli import add_common_options, make_context, positive_int
from ..errors import UsageError
from ..plots.adversarial import examples_path, plot_adversarial
from ..report import write_csv
from ..runs import atomic_path
from .common import finish, open_images, progress, record_images

COLUMNS = ("model", "stm", "size", "weights", "attack", "norm", "eps", "steps", "metric", "value", "ci_low",
           "ci_high", "n_images", "alpha", "random_start", "restarts", "input_size")
HELP = "adversarial robustness: robust accuracy (or flip rate) under FGSM, PGD, AutoAttack, ... per eps"


def name_list(text: str) -> list[str]:
    """'fgsm,pgd' -> ['fgsm', 'pgd'] (validated later, with close matches)."""
    names = list(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    if not names:
        raise argparse.ArgumentTypeError("give at least one attack name")
    return names


def magnitude_list(text: str) -> list[str]:
    """'1,2,4/255' -> ['1', '2', '4/255'], each checked to be a number or fraction (never eval'd)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    for item in items:
        try:
            parse_magnitude(item)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    if not items:
        raise argparse.ArgumentTypeError("give at least one value")
    return items


def magnitude(text: str) -> str:
    items = magnitude_list(text)
    if len(items) != 1:
        raise argparse.ArgumentTypeError(f"'{text}': give one value")
    return items[0]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_options(parser, "adversarial", num_images=1000, batch_size=16)
    g = parser.add_argument_group("adversarial")
    g.add_argument("--attack", type=name_list, default=["fgsm", "pgd"], metavar="NAME[,NAME]",
                   help="fgsm, pgd, autoattack or any eps-bounded torchattacks attack by name (apgd, bim, mifgsm, "
                        "square, ...), comma-separated (default fgsm,pgd)")
    g.add_argument("--eps", type=magnitude_list, default=None, metavar="E[,E]",
                   help="perturbation budgets on pixels in [0, 1]: Linf in 1/255 units (4 = 4/255), L2 absolute; "
                        "'k/255' items are absolute fractions (default Linf 1,2,4,8; L2 0.25,0.5,1,2)")
    g.add_argument("--norm", choices=NORMS, default="Linf", help="threat model (default Linf; pgd becomes PGDL2)")
    g.add_argument("--steps", type=positive_int, default=None, metavar="K",
                   help="iterations of iterative attacks (default 10; autoattack 100, as the original)")
    g.add_argument("--alpha", type=magnitude, default=None, metavar="A",
                   help="step size, same units as --eps (default eps/4)")
    g.add_argument("--random-start", action=argparse.BooleanOptionalAction, default=None,
                   help="start from a uniform random point in the eps ball (default: the attack's own; PGD on)")
    g.add_argument("--restarts", type=positive_int, default=1, metavar="R",
                   help="random restarts; each image keeps its worst case (default 1)")
    g.add_argument("--autoattack-version", choices=("standard", "plus", "rand"), default="standard",
                   help="AutoAttack version (default standard: APGD-CE, APGD-T, FAB-T, Square)")
    g.add_argument("--target-classes", type=positive_int, default=9, metavar="N",
                   help="classes the targeted parts of autoattack/apgdt/fab attack, capped by the model's class "
                        "count (default 9, the original AutoAttack's)")
    g.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="bootstrap replicates for the 95%% CIs over images (default 1000; 0 = none)")
    g.add_argument("--save-examples", type=int, default=0, metavar="K",
                   help="save and draw K clean / perturbation / adversarial examples per model (last attack, "
                        "largest eps; default 0)")


def _specs(args: argparse.Namespace) -> list[AttackSpec]:
    if args.bootstrap < 0:
        raise UsageError(f"--bootstrap {args.bootstrap}: give 0 or a positive number of replicates")
    if args.save_examples < 0:
        raise UsageError(f"--save-examples {args.save_examples}: give 0 or a positive number of images")
    eps = args.eps if args.eps is not None else list(DEFAULT_EPS[args.norm])
    return make_specs(args.attack, args.norm, eps, args.alpha, args.steps, args.random_start, args.restarts,
                      args.autoattack_version, args.target_classes)


def class_names(num_classes: int) -> list[str]:
    """Short class names: ImageNet-1k descriptions for 1000 classes, else 'class i'."""
    if num_classes == 1000:
        from timm.data import ImageNetInfo

        info = ImageNetInfo("imagenet-1k")
        return [info.index_to_description(i).split(",")[0] for i in range(num_classes)]
    return [f"class {i}" for i in range(num_classes)]


class Examples:
    """The first K images of one model under one setting, saved to an .npz for the figure."""

    def __init__(self, k: int, spec: AttackSpec) -> None:
        self.k, self.spec = k, spec
        self.parts: dict[str, list] = {}

    @property
    def count(self) -> int:
        return sum(len(p) for p in self.parts.get("label", []))

    def add(self, batch, clean_logits: torch.Tensor, adv: torch.Tensor, adv_logits: torch.Tensor) -> None:
        take = min(self.k - self.count, adv.shape[0])
        if take <= 0:
            return
        clean_prob, adv_prob = clean_logits.softmax(1), adv_logits.softmax(1)
        fields = {"clean": batch.images[:take], "adversarial": adv[:take], "label": batch.labels[:take],
                  "clean_pred": clean_logits[:take].argmax(1), "adv_pred": adv_logits[:take].argmax(1),
                  "clean_prob": clean_prob[:take].amax(1), "adv_prob": adv_prob[:take].amax(1)}
        for key, value in fields.items():
            self.parts.setdefault(key, []).append(value.detach().cpu().numpy())
        self.parts.setdefault("path", []).append(np.array(batch.paths[:take]))

    def save(self, path: Path, num_classes: int) -> None:
        data = {k: np.concatenate(v) for k, v in self.parts.items()}
        names = np.array(class_names(num_classes))
        data.update(clean_name=names[data["clean_pred"]], adv_name=names[data["adv_pred"]],
                    attack=np.array(self.spec.name), norm=np.array(self.spec.norm), eps=np.array(self.spec.eps),
                    eps_abs=np.array(self.spec.eps_abs))
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, **data)


def example_spec(specs: list[AttackSpec]) -> AttackSpec:
    """The setting the examples show: the last attack at its largest eps."""
    return max((s for s in specs if s.name == specs[-1].name), key=lambda s: s.eps)


def analyse(ctx, loaded, loader, specs: list[AttackSpec]) -> tuple[list[dict], list[str]]:
    """CSV rows of one model; also saves its examples. Returns (rows, image paths used)."""
    args, net = ctx.args, loaded.net
    outcomes = [Outcomes() for _ in specs]
    shown = example_spec(specs)
    examples = Examples(args.save_examples, shown) if args.save_examples else None
    paths: list[str] = []
    num_classes = 0
    with progress(ctx, loader.num_images * len(specs), f"adversarial {loaded.name}") as bar:
        for batch in loader:
            images, labels = batch.images.to(ctx.device), batch.labels.to(ctx.device)
            with torch.no_grad():
                clean_logits = net(images)
            num_classes = clean_logits.shape[1]
            if (labels >= num_classes).any():
                raise UsageError(f"label {int(labels.max())} is out of range for {loaded.name} ({num_classes} "
                                 "classes): check --data (ImageNet synset folders map to the 1000 ImageNet classes)")
            targets = targets_for(labels, clean_logits)
            first = int(batch.indices[0])
            for spec, acc in zip(specs, outcomes):
                seed = attack_seed(args.seed, loaded.name, spec.name, spec.norm, spec.eps, first)
                adv, adv_logits = run_attack(net, spec, images, targets, seed, num_classes)
                norms = check_perturbation(images, adv, spec)
                acc.add(image_outcomes(clean_logits, adv_logits, labels, targets, norms))
                if examples is not None and spec is shown:
                    examples.add(batch, clean_logits, adv, adv_logits)
                bar.update(images.shape[0])
            paths.extend(batch.paths)
    if examples is not None and examples.count:
        examples.save(examples_path(ctx.out_dir, loaded.name), num_classes)
    rows = []
    for spec, acc in zip(specs, outcomes):
        for m in summarise(acc.stacked(), args.bootstrap, args.seed):
            rows.append({**loaded.columns(), "attack": spec.name, "norm": spec.norm, "eps": spec.eps,
                         "steps": spec.steps, "metric": m.metric, "value": m.value, "ci_low": m.ci_low,
                         "ci_high": m.ci_high, "n_images": m.n_images, "alpha": spec.alpha,
                         "random_start": spec.random_start, "restarts": spec.restarts,
                         "input_size": args.input_size})
    return rows, paths


def _summary(rows: list[dict], num_models: int, num_images: int) -> str:
    """Header line plus one line per model x attack: the headline metric at every eps."""
    labelled = any(r["metric"] == "robust_acc" for r in rows)
    metric = "robust_acc" if labelled else "flip_rate"
    what = "robust accuracy %" if labelled else "flip rate % (no labels: target = clean top-1)"
    lines = [f"adversarial: {num_models} model(s), {num_images} images; {what} at each eps"]
    keys = dict.fromkeys((r["model"], r["attack"], r["norm"]) for r in rows)
    for model, attack, norm in keys:
        sel = [r for r in rows if (r["model"], r["attack"], r["norm"], r["metric"]) == (model, attack, norm, metric)]
        unit = "/255" if norm == "Linf" else ""
        cells = "  ".join(f"{r['eps']:g}{unit}: {r['value']:.1f}" for r in sel)
        clean = [r["value"] for r in rows if (r["model"], r["attack"], r["metric"]) == (model, attack, "clean_acc")]
        lines.append(f"  {model} {attack} ({norm}): " + (f"clean {clean[0]:.1f}  " if clean else "") + cells)
    if all(r["weights"] == "random-init" for r in rows):
        lines.append("  (random-init weights: no checkpoint)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    specs = _specs(args)
    args.eps = args.eps if args.eps is not None else list(DEFAULT_EPS[args.norm])
    ctx = make_context("adversarial", args)
    loader = open_images(ctx, mode="center")
    import torchattacks

    ctx.record.update(adversarial={
        "settings": [s.settings() for s in specs], "eps_given": args.eps, "norm": args.norm,
        "eps_units": "1/255 of the [0, 1] pixel range" if args.norm == "Linf" else "absolute L2 in [0, 1] pixels",
        "target": "label where known, else the clean top-1 prediction",
        "seed": {"base": args.seed, "per_call": "sha256(seed|model|attack|norm|eps|first image index of the batch)"
                                                "[:4] -> torch.manual_seed before each attack call"},
        "autoattack": {"version": args.autoattack_version, "apgd_fab_steps": next(
            (s.steps for s in specs if s.cls_name == "AutoAttack"), None), "target_classes": "min(9, classes - 1)",
            "square_queries": 5000, "square_rescale_schedule": False} if any(
            s.cls_name == "AutoAttack" for s in specs) else None,
        "bootstrap": args.bootstrap, "ci_level": 0.95, "parameters_frozen_during_attack": True,
        "torchattacks": torchattacks.__version__})
    rows: list[dict] = []
    paths: list[str] = []
    for loaded in ctx.load_models():
        model_rows, paths = analyse(ctx, loaded, loader, specs)
        rows += model_rows
        record_images(ctx, loader)
    ctx.record.update(images=paths)
    write_csv(ctx.out_dir / "adversarial.csv", rows, COLUMNS)
    for path in plot_adversarial(ctx.out_dir):
        ctx.record.add_output(path)
    return finish(ctx, _summary(rows, len(ctx.models), loader.num_loaded))
